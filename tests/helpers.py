"""Small helpers shared by the Flash-ACE tests."""

import copy

import numpy as np
import torch
from hydra.utils import get_method

from nequip.data import AtomicDataDict, compute_neighborlist_, from_dict
from nequip.utils.global_state import set_global_state


def build_model(config: dict, model_dtype: str = "float64"):
    set_global_state()
    config = copy.deepcopy(config)
    config["model_dtype"] = model_dtype
    builder = get_method(config.pop("_target_"))
    return builder(**config)


def make_data(positions, atom_types, r_max, cell=None, pbc=None) -> AtomicDataDict.Type:
    raw = {
        "pos": np.asarray(positions, dtype=np.float64),
        "atom_types": np.asarray(atom_types, dtype=np.int64),
    }
    if cell is not None:
        raw["cell"] = np.asarray(cell, dtype=np.float64)
        raw["pbc"] = np.asarray(pbc if pbc is not None else [True] * 3)
    return compute_neighborlist_(from_dict(raw), r_max=r_max)


def energy_and_forces(model, data):
    out = model(AtomicDataDict.to_(dict(data), "cpu"))
    return (
        out[AtomicDataDict.TOTAL_ENERGY_KEY].detach().to(torch.float64).sum(),
        out[AtomicDataDict.FORCE_KEY].detach().to(torch.float64),
        out,
    )
