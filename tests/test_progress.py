"""Issue: a training run shows its progress and says how it ended.

Two tiny real `nequip-train` runs with the shipped config: one that ends at
`max_epochs`, one cut short by a tiny `max_time`. Their terminal output (stdout and
stderr together, as `> log 2>&1` gives) must carry one progress line per epoch and
the summary with the right epoch count and stop reason.
"""

import re

import pytest

from nequip_flash_ace.train.progress import format_duration
from workflow_utils import nequip_train, write_data_subset

pytestmark = pytest.mark.slow

TINY = ("num_features=8", "num_layers=1", "l_max=1", "correlation_order=2", "num_heads=2")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_data_subset(tmp_path_factory.mktemp("data"), n_train=8, n_val=2, n_test=2)


def _output(proc):
    return proc.stdout + proc.stderr


def test_progress_lines_and_summary_at_max_epochs(tmp_path, tiny_data):
    proc = nequip_train(tmp_path / "run", tiny_data, "max_epochs=2", *TINY)
    out = _output(proc)
    lines = re.findall(r"\[flash-ace\] epoch (\d+)/2 \| .* elapsed, ~.* left \| train loss .* \| val F MAE .* meV/Å, E MAE .* meV/atom.* \| lr ", out)
    assert lines == ["1", "2"], out[-3000:]
    assert "[flash-ace] training ended after 2/2 epochs" in out and "max_epochs reached" in out
    assert re.search(r"\[flash-ace\] best validation epoch [12] ", out)
    assert re.search(r"\[flash-ace\] test0: F MAE .* meV/Å, E MAE .* meV/atom", out)
    assert f"[flash-ace] run directory: {tmp_path / 'run'}" in out
    assert f"nequip-compile {tmp_path / 'run' / 'best.ckpt'} " in out
    # the progress goes to the terminal, not into the metrics files
    metrics_csv = (tmp_path / "run" / "csv" / "metrics.csv").read_text()
    assert "flash-ace" not in metrics_csv


def test_hint_names_the_checkpoint_written_in_a_reused_run_directory(tmp_path, tiny_data):
    # a second run into the same directory: Lightning keeps the first best.ckpt and writes best-v1.ckpt
    for _ in range(2):
        proc = nequip_train(tmp_path / "run", tiny_data, "max_epochs=1", *TINY)
    hinted = re.search(r"nequip-compile (\S+) model\.nequip\.pt2", _output(proc))
    assert hinted, _output(proc)[-3000:]
    assert hinted.group(1) == str(tmp_path / "run" / "best-v1.ckpt")


def test_summary_says_max_time_cut_the_run_short(tmp_path, tiny_data):
    proc = nequip_train(tmp_path / "run", tiny_data, "max_epochs=50", "max_time=00:00:00:01", *TINY)
    out = _output(proc)
    match = re.search(r"\[flash-ace\] training ended after (\d+)/50 epochs in .*: max_time \(1s\) reached \(cut short", out)
    assert match, out[-3000:]
    assert int(match.group(1)) < 50
    assert len(re.findall(r"\[flash-ace\] epoch \d+/50 ", out)) == int(match.group(1))


def test_format_duration():
    assert [format_duration(s) for s in (0, 59.6, 75, 4000)] == ["0s", "1m00s", "1m15s", "1h06m"]
