"""Interrupted runs say how to go on, and a resumed run counts the whole run.

A real ``nequip-train`` of the shipped config on a few frames is sent SIGTERM (what a
cluster's time limit sends) or SIGINT (Ctrl-C) after its second epoch; it must print
the epochs completed, the ``last.ckpt`` holding them and the exact resume command. That
command, run as printed, continues to ``max_epochs`` and its summary counts the epochs
of the whole run and those since the restart.
"""

import os
import re
import shlex
import signal
import subprocess
import time

import pytest

from nequip_flash_ace.train.progress import resume_command
from workflow_utils import CONFIG_DIR, write_data_subset

pytestmark = pytest.mark.slow

TINY = ("num_features=8", "l_max=1", "correlation_order=2")
MAX_EPOCHS = 5


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_data_subset(tmp_path_factory.mktemp("data"), n_train=8, n_val=2, n_test=2)


def _env():
    # unbuffered: the progress line must reach the test when it is printed, not when the
    # child's pipe buffer fills or the run ends (then the signal came after the last epoch)
    return dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), PYTHONUNBUFFERED="1")


def _train_until_epoch(run_dir, data_dir, epoch: int, sig):
    """Start nequip-train, send ``sig`` once the progress line of ``epoch`` is out; the full output."""
    cmd = ["nequip-train", "-cp", str(CONFIG_DIR), "-cn", "flash_ace", f"data_dir={data_dir}",
           f"hydra.run.dir={run_dir}", f"max_epochs={MAX_EPOCHS}", *TINY]
    # SIGINT back to its default in the child: a shell starts background jobs with SIGINT
    # ignored, the child would inherit that and Python would then never raise
    # KeyboardInterrupt (a user's Ctrl-C in a terminal always has the default)
    proc = subprocess.Popen(cmd, cwd=run_dir.parent, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines, deadline = [], time.time() + 600
    for line in proc.stdout:
        lines.append(line)
        if f"[flash-ace] epoch {epoch}/{MAX_EPOCHS} " in line:
            proc.send_signal(sig)
            break
        assert time.time() < deadline, "".join(lines[-50:])
    rest, _ = proc.communicate(timeout=600)
    return proc.returncode, "".join(lines) + rest


@pytest.mark.parametrize("sig,cause", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "Ctrl-C")])
def test_interrupted_run_says_where_it_stopped_and_how_to_resume(tmp_path, tiny_data, sig, cause):
    run_dir = tmp_path / "run"
    _, out = _train_until_epoch(run_dir, tiny_data, 2, sig)
    assert re.search(rf"\[flash-ace\] training interrupted by {cause}.* during epoch \d+; \d/{MAX_EPOCHS} epochs completed", out), out[-3000:]
    completed = int(re.search(rf"; (\d)/{MAX_EPOCHS} epochs completed", out).group(1))
    assert completed >= 2
    last = re.search(r"\[flash-ace\] last\.ckpt \(epoch (\d+), the partial epoch is not in it\): (\S+)", out)
    assert last and int(last.group(1)) == completed and os.path.isfile(last.group(2)), out[-3000:]
    assert re.search(r"\[flash-ace\] resume with: nequip-train .*\+\+ckpt_path=\S*last\.ckpt", out), out[-3000:]
    # no end-of-training summary for a run that did not end
    assert "[flash-ace] training ended after" not in out


def test_resumed_run_counts_the_whole_run(tmp_path, tiny_data):
    run_dir = tmp_path / "run"
    _, out = _train_until_epoch(run_dir, tiny_data, 2, signal.SIGTERM)
    completed = int(re.search(rf"; (\d)/{MAX_EPOCHS} epochs completed", out).group(1))
    command = re.search(r"\[flash-ace\] resume with: (.*)$", out, re.MULTILINE).group(1)
    resumed = subprocess.run(shlex.split(command), cwd=run_dir.parent, env=_env(), capture_output=True, text=True,
                             timeout=900)
    text = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, text[-4000:]
    # progress lines carry on from the checkpoint's epoch, and the summary counts all epochs
    assert re.findall(rf"\[flash-ace\] epoch (\d+)/{MAX_EPOCHS} ", text) == [str(e) for e in range(completed + 1, MAX_EPOCHS + 1)]
    summary = re.search(rf"\[flash-ace\] training ended after {MAX_EPOCHS}/{MAX_EPOCHS} epochs in \S+ "
                        rf"\((\d+) of them in \S+ since the restart from epoch (\d+)\): max_epochs reached", text)
    assert summary, text[-4000:]
    assert (int(summary.group(1)), int(summary.group(2))) == (MAX_EPOCHS - completed, completed)
    # the best epoch is chosen over the whole run, not only the resumed part
    assert re.search(rf"\[flash-ace\] best validation epoch [1-{MAX_EPOCHS}] ", text)


def test_resume_command_replaces_an_earlier_checkpoint_path(tmp_path):
    argv = ["/venv/bin/nequip-train", "-cp", "/a b/configs", "-cn", "flash_ace", "++ckpt_path=/old/last.ckpt", "lr=0.005"]
    command = resume_command(str(tmp_path / "last.ckpt"), argv)
    assert command == f"nequip-train -cp '/a b/configs' -cn flash_ace lr=0.005 ++ckpt_path={tmp_path / 'last.ckpt'}"
