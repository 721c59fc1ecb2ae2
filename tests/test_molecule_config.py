"""The molecule's shipped config (``configs/flash_ace_paracetamol.yaml``) trains and tests
as a user runs it: ``nequip-train -cp configs -cn flash_ace_paracetamol``, here on every
k-th frame of the bundled split files (all trajectories) for a few epochs.

What it checks beyond "the command exits 0": the model built is the config's own
(two layers, no attention, ``l_max`` 2), the per-type energy shifts are the least-squares
fit over the training frames (H, C, N, O differ), no stress is asked of a molecule in
vacuum, and the validation force error falls.
"""

import numpy as np
import pytest
import torch
from ase.io import read

from workflow_utils import REPO, nequip_train, validation_force_mae, write_data_subset

pytestmark = pytest.mark.slow

SOURCE = REPO / "data" / "paracetamol_gfn2"
SYMBOLS = ["H", "C", "N", "O"]


def checkpoint_model_config(run_dir):
    """The model block of the config a run's best checkpoint was trained with."""
    ckpt = torch.load(run_dir / "best.ckpt", map_location="cpu", weights_only=False)
    return ckpt["hyper_parameters"]["info_dict"]["training_module"]["model"]


@pytest.fixture(scope="module")
def molecule_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paracetamol")
    data = write_data_subset(tmp / "data", n_train=64, n_val=16, n_test=8, source=SOURCE)
    run_dir = tmp / "run"
    proc = nequip_train(run_dir, data, "max_epochs=4", "max_time=00:00:20:00", config_name="flash_ace_paracetamol")
    return run_dir, data, proc


def test_molecule_config_trains_and_tests(molecule_run):
    run_dir, _, proc = molecule_run
    out = proc.stdout + proc.stderr
    assert "test0_epoch/forces_mae" in out and "test0_epoch/per_atom_energy_mae" in out
    assert "stress" not in out.lower(), "a molecule in vacuum has no stress to fit or test"
    curve = validation_force_mae(run_dir)
    assert len(curve) >= 4 and np.all(np.isfinite(curve)), curve
    assert curve[-1] < 0.9 * curve[0], curve


def test_molecule_checkpoint_is_the_configs_model_with_least_squares_shifts(molecule_run):
    run_dir, data, _ = molecule_run
    model_cfg = checkpoint_model_config(run_dir)
    assert model_cfg["l_max"] == 2 and model_cfg["num_layers"] == 2 and model_cfg["num_heads"] == 0
    assert list(model_cfg["type_names"]) == SYMBOLS

    # the shifts the run used are the least-squares per-type energies of its training frames
    frames = read(data / "train.xyz", index=":")
    counts = np.array([[f.get_chemical_symbols().count(t) for t in SYMBOLS] for f in frames], float)
    energies = np.array([f.get_potential_energy() for f in frames])
    # paracetamol's composition never changes, so the counts have rank 1: lstsq returns the
    # minimum-norm solution, the one the statistic is specified to give
    expected = np.linalg.lstsq(counts, energies, rcond=None)[0]
    got = np.array([model_cfg["per_type_energy_shifts"][t] for t in SYMBOLS])
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_deep_preset_trains_on_the_molecule(tmp_path):
    """``-cn flash_ace_deep`` is the molecule's two-layer config with ``l_max`` 3: it
    trains and tests as shipped, and its checkpoint holds that model on the molecule's types."""
    data = write_data_subset(tmp_path / "data", n_train=32, n_val=8, n_test=4, source=SOURCE)
    run_dir = tmp_path / "run"
    proc = nequip_train(run_dir, data, "max_epochs=2", config_name="flash_ace_deep")
    out = proc.stdout + proc.stderr
    assert "test0_epoch/forces_mae" in out and "stress" not in out.lower()
    assert np.all(np.isfinite(validation_force_mae(run_dir)))
    model_cfg = checkpoint_model_config(run_dir)
    assert (model_cfg["num_layers"], model_cfg["num_heads"]) == (2, 0)
    assert (model_cfg["l_max"], list(model_cfg["type_names"])) == (3, SYMBOLS)
