"""Writes ``compat_nu3_attention.pt``: a float64 Flash-ACE state dict (attention on, ν = 3)
saved with the dense product basis (commit f7affaa), with its energies and forces on
a few structures. ``tests/test_product_basis.py`` reloads it into the current code.

Run from the repository root: ``python tests/data/make_compat_reference.py``.
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import build_model, make_data  # noqa: E402
from model_configs import BASE  # noqa: E402

from nequip.data import AtomicDataDict  # noqa: E402

CONFIG = dict(
    BASE, num_layers=2, l_max=2, feature_l_max=1, correlation_order=3,
    num_heads=2, attention_head_dim=4,
)


def structures():
    rng = np.random.default_rng(7)
    out = []
    # a molecule-like cluster and a periodic cell
    pos = rng.uniform(0, 3.5, size=(7, 3))
    out.append(dict(positions=pos, atom_types=rng.integers(0, 3, size=7)))
    cell = np.diag([4.2, 4.6, 4.4]) + rng.normal(scale=0.1, size=(3, 3))
    pos = rng.uniform(0, 1, size=(9, 3)) @ cell
    out.append(dict(positions=pos, atom_types=rng.integers(0, 3, size=9), cell=cell, pbc=[True] * 3))
    return out


def main():
    torch.manual_seed(0)
    model = build_model(CONFIG, "float64")
    # move the weights off their initial values so the test sees trained-like parameters
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    refs = []
    for s in structures():
        data = make_data(s["positions"], s["atom_types"], CONFIG["r_max"], s.get("cell"), s.get("pbc"))
        out = model(data)
        refs.append(
            dict(
                structure={k: torch.as_tensor(np.asarray(v)) for k, v in s.items()},
                energy=out[AtomicDataDict.TOTAL_ENERGY_KEY].detach().clone(),
                forces=out[AtomicDataDict.FORCE_KEY].detach().clone(),
            )
        )
    torch.save(
        dict(config=CONFIG, state_dict=model.state_dict(), references=refs),
        Path(__file__).with_name("compat_nu3_attention.pt"),
    )


if __name__ == "__main__":
    main()
