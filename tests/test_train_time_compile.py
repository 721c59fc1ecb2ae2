"""Train-time ``torch.compile`` (the host's ``compile_mode: compile``) on CPU.

The host's own train-time compile test skips on CPU; this one runs it for the attention
model, comparing outputs and parameter gradients with the eager model (float64). It takes
about 5 minutes on 2 cores, so it is opt-in: ``FLASH_ACE_SLOW_TESTS=1 python -m pytest
tests/test_train_time_compile.py``.
"""

import os

import numpy as np
import pytest

from nequip.data import AtomicDataDict, compute_neighborlist_, from_dict
from nequip.utils.unittests.utils import compare_output_and_gradients

from helpers import build_model
from model_configs import ATTENTION_NU2

pytestmark = pytest.mark.skipif(
    os.environ.get("FLASH_ACE_SLOW_TESTS") != "1", reason="opt-in (about 5 min): set FLASH_ACE_SLOW_TESTS=1"
)


def test_train_time_compile_matches_eager_attention_float64():
    rng = np.random.default_rng(0)
    frame = compute_neighborlist_(from_dict({"pos": rng.uniform(0, 3, (6, 3)), "atom_types": rng.integers(0, 3, 6)}), r_max=4.0)
    batch = AtomicDataDict.batched_from_list([frame, frame])
    eager = build_model(ATTENTION_NU2, "float64")
    compiled = build_model(dict(ATTENTION_NU2, compile_mode="compile"), "float64")
    compare_output_and_gradients(eager, compiled, batch, tol=1e-10)
