"""Multi-process training through the host's Lightning DDP, on CPU (gloo).

Two processes train Flash-ACE through ``nequip-train`` exactly as a user would
(``trainer.devices=2``, ``trainer.accelerator=cpu``, ``trainer.strategy=ddp``). A probe
callback (tests/ddp_probe.py) saves every rank's parameters and the rotations its
augmentation drew.

Equivalence with one process: the comparison uses full-batch steps (the 8 training
frames are one global batch: 4 per rank, or 8 in one process), so both runs see exactly
the same frames in every step regardless of sampler order (Lightning's
DistributedSampler orders frames differently from the single-process loader). With
equal atom counts per frame, the host's rank-synchronised loss of the first step must
agree to float64 rounding. Tolerances after optimizer steps are justified at the test.
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
        "trainer.log_every_n_steps=1",
        # only the probe: no checkpoints or guardrails needed here
        f"trainer.callbacks=[{{_target_: ddp_probe.RankProbe, out_dir: '{run_dir}/probe'}}]",
        *overrides,
    ]
    run(cmd, cwd=run_dir.parent, timeout=1200)
    return {r: torch.load(run_dir / "probe" / f"rank{r}.pt") for r in range(2) if (run_dir / "probe" / f"rank{r}.pt").exists()}


DDP = ["trainer.devices=2", "trainer.accelerator=cpu", "trainer.strategy=ddp"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_data_subset(tmp_path_factory.mktemp("ddp_data"), n_train=8, n_val=2, n_test=2)


def _max_rel_diff(a, b):
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)).item() for k in a if a[k].is_floating_point() and a[k].numel() > 0)


def _logged(run_dir, key):
    """(step, value) rows of `key` in the run's CSV log (rank 0's logger)."""
    import csv

    with open(run_dir / "csv" / "metrics.csv") as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


def test_ddp_matches_single_process_attention_on(tmp_path, data):
    # full-batch steps (8 frames = 4 per rank x 2 ranks), so both runs see the same
    # frames in every step whatever order the samplers choose
    ddp = _train(tmp_path / "ddp", data, "batch_size=4", "max_epochs=2", "num_heads=4", *DDP)
    single = _train(tmp_path / "single", data, "batch_size=8", "max_epochs=2", "num_heads=4")
    assert set(ddp) == {0, 1}, "both ranks must finish"
    assert ddp[0]["world_size"] == 2
    # identical replicas, from identical initial parameters
    assert _max_rel_diff(ddp[0]["initial_params"], ddp[1]["initial_params"]) == 0.0
    assert _max_rel_diff(ddp[0]["params"], ddp[1]["params"]) == 0.0
    # the loss of the first global batch (same parameters, same 4 frames): the mean of the
    # two ranks' losses (equal frame and atom counts) equals the single process's loss,
    # up to float64 summation order
    ddp_first = (ddp[0]["losses"][0] + ddp[1]["losses"][0]) / 2
    single_first = single[0]["losses"][0]
    rel = abs(ddp_first - single_first) / abs(single_first)
    print(f"first-step loss DDP(2x4) {ddp_first:.12g} vs single(8) {single_first:.12g}: rel {rel:.2e}")
    assert rel < 1e-10, rel
    # after two Adam steps on identical full batches, the gradients differ only by the
    # summation order of the all-reduce, so parameters and validation loss agree to
    # near rounding; 1e-8 leaves room for Adam's elementwise g/sqrt(v) amplifying
    # rounding differences of near-zero gradient components
    param_diff = _max_rel_diff(ddp[0]["params"], single[0]["params"])
    val = "val0_epoch/weighted_sum"
    v_ddp, v_single = _logged(tmp_path / "ddp", val)[-1][1], _logged(tmp_path / "single", val)[-1][1]
    print(f"after 2 steps: validation loss DDP {v_ddp:.12g}, single {v_single:.12g}; max rel parameter diff {param_diff:.2e}")
    assert abs(v_ddp - v_single) / abs(v_single) < 1e-8
    assert param_diff < 1e-6


def test_ddp_attention_off_with_rotation_augmentation(tmp_path, data):
    ddp = _train(tmp_path / "ddp_rot", data, "batch_size=2", "num_heads=0", "random_rotation=true", *DDP)
    assert set(ddp) == {0, 1}
    assert _max_rel_diff(ddp[0]["params"], ddp[1]["params"]) == 0.0
    rot0, rot1 = ddp[0]["rotations"], ddp[1]["rotations"]
    assert len(rot0) > 0 and len(rot0) == len(rot1)
    for a, b in zip(rot0, rot1):
        assert not torch.allclose(a, b), "ranks drew the same rotation"
