"""The acetylacetone benchmark config (``configs/flash_ace_acac.yaml``) builds, trains and
evaluates both MD test sets as a user runs it, here on a slice of the bundled files
(``data/acac``) for one epoch.

Beyond "the command exits 0": the split is the host's seeded ``split_dataset`` of
``train_300K.xyz``; the per-type energy shifts are the isolated-atom energies of
``isolated_atoms.xyz`` (so an isolated atom gets exactly its DFT energy); the 300 K and
600 K sets are tested as ``test0`` and ``test1``; the benchmark's paper metric (RMSE per
molecule) reads both prediction files.
"""

import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read, write

from workflow_utils import REPO, nequip_train

pytestmark = pytest.mark.slow

SOURCE = REPO / "data" / "acac"
SYMBOLS = ["H", "C", "O"]


@pytest.fixture(scope="module")
def acac_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("acac")
    data = tmp / "data"
    data.mkdir()
    # a slice of every file the config reads, under the names it reads
    for name, count in (("train_300K.xyz", 40), ("test_MD_300K.xyz", 12), ("test_MD_600K.xyz", 12)):
        write(data / name, read(SOURCE / name, index=f":{count}"))
    run_dir = tmp / "run"
    proc = nequip_train(run_dir, data, "max_epochs=1", "data.split_dataset.train=32", "data.split_dataset.val=8",
                        config_name="flash_ace_acac")
    return run_dir, proc


def test_acac_config_trains_and_tests_both_md_sets(acac_run):
    run_dir, proc = acac_run
    out = proc.stdout + proc.stderr
    for test_set in ("test0", "test1"):
        assert f"{test_set}_epoch/forces_rmse" in out and f"{test_set}_epoch/total_energy_rmse" in out, test_set
    assert "stress" not in out.lower(), "a molecule in vacuum has no stress to fit or test"

    sys.path.insert(0, str(REPO / "benchmarks"))
    from acac_benchmark import md_set_errors

    for index, frames in ((0, 12), (1, 12)):
        errors = md_set_errors(run_dir / f"test_dataset{index}.xyz")
        assert errors["frames"] == frames
        assert np.isfinite([errors["energy_rmse_mev"], errors["force_rmse_mev"]]).all(), errors


def test_acac_model_uses_the_isolated_atom_energies(acac_run):
    run_dir, _ = acac_run
    ckpt = torch.load(run_dir / "best.ckpt", map_location="cpu", weights_only=False)
    model_cfg = ckpt["hyper_parameters"]["info_dict"]["training_module"]["model"]
    assert list(model_cfg["type_names"]) == SYMBOLS
    isolated = {a.get_chemical_symbols()[0]: a.get_potential_energy() for a in read(SOURCE / "isolated_atoms.xyz", index=":")}
    for symbol in SYMBOLS:
        assert model_cfg["per_type_energy_shifts"][symbol] == pytest.approx(isolated[symbol], abs=1e-9)

    # the trained model gives an isolated atom exactly its DFT energy (float64 shift)
    from nequip_flash_ace.integrations.ase import FlashACECalculator

    calc = FlashACECalculator._from_saved_model(str(run_dir / "best.ckpt"), device="cpu", chemical_species_to_atom_type_map=True)
    for symbol in SYMBOLS:
        atom = Atoms(symbol, positions=[[0.0, 0.0, 0.0]])
        atom.calc = calc
        assert atom.get_potential_energy() == pytest.approx(isolated[symbol], abs=1e-6)
        assert np.abs(atom.get_forces()).max() == 0.0
