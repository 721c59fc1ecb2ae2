"""Training data is checked before the first epoch: errors name the file, the frame and
the field; a force outlier is a warning (it may be real)."""

import re

import numpy as np
import pytest
import torch
from ase.io import read, write

from nequip.data import AtomicDataDict
from nequip.data.dataset import ASEDataset
from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper

from nequip_flash_ace.data import TrainingDataWarning, check_frames
from workflow_utils import CONFIG_DIR, DATA_DIR, write_data_subset


def _dataset(tmp_path, edit=None, n=6):
    frames = read(DATA_DIR / "train.xyz", index=f":{n}")
    if edit is not None:
        edit(frames)
    path = tmp_path / "train.xyz"
    write(path, frames, format="extxyz")
    mapper = ChemicalSpeciesToAtomTypeMapper(model_type_names=["Cu", "Au"], chemical_species_to_atom_type_map={"Cu": "Cu", "Au": "Au"})
    return ASEDataset(file_path=str(path), transforms=[mapper]), path


def test_clean_data_passes(tmp_path):
    dataset, _ = _dataset(tmp_path)
    assert check_frames(dataset, "train") == []


def _set_energy_nan(frames):
    frames[3].calc.results["energy"] = float("nan")


def _set_force_inf(frames):
    frames[2].calc.results["forces"][1, 0] = np.inf


def _set_stress_nan(frames):
    frames[4].calc.results["stress"][0] = np.nan


def _set_position_nan(frames):
    frames[1].positions[0, 2] = np.nan


def _add_iron(frames):
    frames[5].symbols[0] = "Fe"


@pytest.mark.parametrize(
    "edit,message",
    [
        (_set_energy_nan, r"frame 3: `total_energy` is not finite"),
        (_set_force_inf, r"frame 2: `forces` is not finite"),
        (_set_stress_nan, r"frame 4: `stress` is not finite"),
        (_set_position_nan, r"frame 1: non-finite positions \(atom 0\)"),
        (_add_iron, r"frame 5: species \['Fe'\] not in the config's chemical_symbols"),
    ],
)
def test_bad_frame_is_named_with_its_file(tmp_path, edit, message):
    dataset, path = _dataset(tmp_path, edit)
    with pytest.raises(ValueError, match=rf"train data {re.escape(str(path))}, {message}"):
        check_frames(dataset, "train")


def test_forces_of_the_wrong_shape(tmp_path):
    dataset, path = _dataset(tmp_path)
    dataset.data_list[2][AtomicDataDict.FORCE_KEY] = torch.zeros(5, 3, dtype=torch.float64)
    n = dataset.data_list[2][AtomicDataDict.POSITIONS_KEY].shape[0]
    with pytest.raises(ValueError, match=rf"frame 2: `forces` has shape \(5, 3\), expected \({n}, 3\)"):
        check_frames(dataset, "train")


def test_force_outlier_is_a_warning_naming_the_frame(tmp_path):
    def scale(frames):
        frames[4].calc.results["forces"] *= 1000.0

    dataset, _ = _dataset(tmp_path, scale)
    with pytest.warns(TrainingDataWarning, match=r"frame 4: force RMS .* is \d+x the split's median"):
        messages = check_frames(dataset, "train")
    assert len(messages) == 1


def test_subset_reports_the_frame_index_in_its_file(tmp_path):
    dataset, _ = _dataset(tmp_path, _set_energy_nan)
    subset = torch.utils.data.Subset(dataset, [3, 5])
    with pytest.raises(ValueError, match=r"frame 3: `total_energy`"):
        check_frames(subset, "train")
    assert check_frames(torch.utils.data.Subset(dataset, [0, 5]), "train") == []


@pytest.mark.slow
def test_nequip_train_stops_before_the_first_epoch(tmp_path):
    """The real command: a NaN energy in the training file stops nequip-train at setup."""
    import subprocess

    data = write_data_subset(tmp_path / "data", n_train=8, n_val=2, n_test=2)
    frames = read(data / "train.xyz", index=":")
    frames[6].calc.results["energy"] = float("nan")
    write(data / "train.xyz", frames, format="extxyz")
    cmd = ["nequip-train", "-cp", str(CONFIG_DIR), "-cn", "flash_ace", f"data_dir={data}",
           f"hydra.run.dir={tmp_path / 'run'}", "max_epochs=1", "num_features=8"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"train data {data / 'train.xyz'}, frame 6: `total_energy` is not finite" in out, out[-3000:]
    assert "[flash-ace] epoch 1/" not in out
