"""Per-type least-squares reference energies as a host data statistic."""

import numpy as np
import pytest
import torch
from ase import Atoms

from nequip.data import AtomicDataDict, CommonDataStatisticsManager, compute_neighborlist_, from_ase

from nequip_flash_ace.data.statistics import LEAST_SQUARES_NAME, FlashACEDataStatisticsManager

TYPES = ["H", "C", "O"]


def _frames(compositions, energies, rng, types=TYPES):
    frames = []
    for comp, e in zip(compositions, energies):
        symbols = [t for t, n in zip(types, comp) for _ in range(n)]
        pos = rng.uniform(0, 6, size=(len(symbols), 3))
        atoms = Atoms(symbols, positions=pos)
        data = from_ase(atoms)
        data[AtomicDataDict.ATOM_TYPE_KEY] = torch.tensor([types.index(s) for s in symbols])
        data[AtomicDataDict.TOTAL_ENERGY_KEY] = torch.tensor([[e]], dtype=torch.float64)
        data[AtomicDataDict.FORCE_KEY] = torch.as_tensor(rng.normal(size=(len(symbols), 3)))
        frames.append(compute_neighborlist_(data, r_max=3.0))
    return frames


def _statistics(frames, batch_size, types=TYPES):
    manager = FlashACEDataStatisticsManager(type_names=types)
    batches = [
        AtomicDataDict.batched_from_list(frames[i : i + batch_size]) for i in range(0, len(frames), batch_size)
    ]
    return manager.get_statistics(batches)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_least_squares_shifts_match_numpy_lstsq(batch_size):
    rng = np.random.default_rng(0)
    compositions = rng.integers(1, 9, size=(13, 3))
    reference = np.array([-13.6, -1030.0, -2040.0])
    energies = compositions @ reference + rng.normal(scale=0.5, size=13)  # not exactly explainable
    stats = _statistics(_frames(compositions, energies, rng), batch_size)
    expected = np.linalg.lstsq(compositions.astype(float), energies, rcond=None)[0]
    got = np.array([stats[LEAST_SQUARES_NAME][t] for t in TYPES])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_single_type_is_the_mean_energy_per_atom():
    """One type (e.g. the silicon set): the fit is Σ n_f E_f / Σ n_f², a one-entry dict."""
    rng = np.random.default_rng(2)
    compositions = rng.integers(8, 17, size=(7, 1))
    energies = compositions[:, 0] * -49.0 + rng.normal(scale=2.0, size=7)
    stats = _statistics(_frames(compositions, energies, rng, ["Si"]), 3, ["Si"])
    expected = np.linalg.lstsq(compositions.astype(float), energies, rcond=None)[0]
    assert list(stats[LEAST_SQUARES_NAME]) == ["Si"]
    assert stats[LEAST_SQUARES_NAME]["Si"] == pytest.approx(expected[0], rel=1e-12)


def test_rank_deficient_fit_is_the_minimum_norm_solution():
    """O never occurs and C always comes with two H: lstsq's minimum-norm answer."""
    rng = np.random.default_rng(1)
    compositions = np.array([[2 * k, k, 0] for k in (1, 2, 3, 5)])
    energies = compositions @ np.array([-1.0, -5.0, 0.0]) + rng.normal(scale=0.1, size=4)
    stats = _statistics(_frames(compositions, energies, rng), 2)
    expected = np.linalg.lstsq(compositions.astype(float), energies, rcond=None)[0]
    got = np.array([stats[LEAST_SQUARES_NAME][t] for t in TYPES])
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-8)
    assert got[2] == pytest.approx(0.0, abs=1e-12)


def test_host_common_statistics_are_unchanged():
    rng = np.random.default_rng(2)
    compositions = rng.integers(1, 5, size=(6, 3))
    frames = _frames(compositions, rng.normal(size=6), rng)
    ours = _statistics(frames, 3)
    host = CommonDataStatisticsManager(type_names=TYPES).get_statistics(
        [AtomicDataDict.batched_from_list(frames[:3]), AtomicDataDict.batched_from_list(frames[3:])]
    )
    for name, value in host.items():
        if isinstance(value, dict):
            for t, v in value.items():
                assert ours[name][t] == pytest.approx(float(v), rel=1e-12, abs=1e-12), (name, t)
        else:
            assert float(ours[name]) == pytest.approx(float(value), rel=1e-12, abs=1e-12), name
