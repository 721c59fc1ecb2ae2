"""Multi-process training through the host's Lightning DDP, on CPU (gloo).

Two processes train Flash-ACE through ``nequip-train`` exactly as a user would
(``trainer.devices=2``, ``trainer.accelerator=cpu``, ``trainer.strategy=ddp``). A probe
callback (tests/ddp_probe.py) saves every rank's parameters and the rotations its
augmentation drew.

Equivalence with one process: with ``shuffle: false`` the DistributedSampler gives rank
r the frames r, r+2, ...; with 2 frames per rank and equal atom counts per frame, the
average of the two ranks' mean losses is the single process's mean loss over the same 4
frames, so the averaged DDP gradients equal the single-process gradients up to
float64 rounding. Adam then takes identical steps; we allow 1e-9 (relative) for the
rounding of the all-reduce summation order amplified by a few Adam steps.
"""

import os

import pytest
import torch

from workflow_utils import CONFIG_DIR, run, write_data_subset

pytestmark = pytest.mark.slow

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def _train(run_dir, data_dir, *overrides):
    env_pythonpath = os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")])
    cmd = [
        "env",
        f"PYTHONPATH={env_pythonpath}",
        "nequip-train",
        "-cp",
        str(CONFIG_DIR),
        "-cn",
        "flash_ace",
        f"data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
        "model_dtype=float64",
        "num_features=8",
        "max_epochs=1",
        "data.train_dataloader.shuffle=false",
        "run=[train]",
        # only the probe: no checkpoints or guardrails needed here
        f"trainer.callbacks=[{{_target_: ddp_probe.RankProbe, out_dir: '{run_dir}/probe'}}]",
        *overrides,
    ]
    run(cmd, cwd=run_dir.parent, timeout=1200)
    return {r: torch.load(run_dir / "probe" / f"rank{r}.pt") for r in range(2) if (run_dir / "probe" / f"rank{r}.pt").exists()}


DDP = ["trainer.devices=2", "trainer.accelerator=cpu", "+trainer.strategy=ddp"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data_subset(tmp_path_factory.mktemp("ddp_data"), n_train=8, n_val=2, n_test=2)


def _max_rel_diff(a, b):
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)).item() for k in a if a[k].is_floating_point())


def test_ddp_matches_single_process_attention_on(tmp_path, data):
    ddp = _train(tmp_path / "ddp", data, "batch_size=2", *DDP)
    single = _train(tmp_path / "single", data, "batch_size=4")
    assert set(ddp) == {0, 1}, "both ranks must finish"
    assert ddp[0]["world_size"] == 2
    # identical replicas
    assert _max_rel_diff(ddp[0]["params"], ddp[1]["params"]) == 0.0
    # same updates as one process with the same global batch
    diff = _max_rel_diff(ddp[0]["params"], single[0]["params"])
    print(f"max relative parameter difference DDP(2x2) vs single(4): {diff:.3e}")
    assert diff < 1e-9, diff


def test_ddp_attention_off_with_rotation_augmentation(tmp_path, data):
    ddp = _train(tmp_path / "ddp_rot", data, "batch_size=2", "num_heads=0", "random_rotation=true", *DDP)
    assert set(ddp) == {0, 1}
    assert _max_rel_diff(ddp[0]["params"], ddp[1]["params"]) == 0.0
    rot0, rot1 = ddp[0]["rotations"], ddp[1]["rotations"]
    assert len(rot0) > 0 and len(rot0) == len(rot1)
    for a, b in zip(rot0, rot1):
        assert not torch.allclose(a, b), "ranks drew the same rotation"
