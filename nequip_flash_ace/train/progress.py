"""One line per epoch while training runs, and a summary of how the run ended."""

import logging
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import lightning
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer

logger = logging.getLogger(__name__)

# (metric key suffix, label, factor to the quoted unit, unit); eV-based units assumed
QUOTED_METRICS = (
    ("forces_mae", "F MAE", 1e3, "meV/Å"),
    ("per_atom_energy_mae", "E MAE", 1e3, "meV/atom"),
    ("stress_mae", "σ MAE", 1e3, "meV/Å³"),
)


def format_duration(seconds: float) -> str:
    """``75`` -> ``"1m15s"``, ``4000`` -> ``"1h06m"``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _quoted(metrics: Dict[str, float], prefix: str) -> List[str]:
    parts = []
    for suffix, label, factor, unit in QUOTED_METRICS:
        value = metrics.get(f"{prefix}/{suffix}")
        if value is not None and math.isfinite(value):
            parts.append(f"{label} {value * factor:.3g} {unit}")
    return parts


class TrainingProgress(lightning.Callback):
    """Per-epoch progress lines and an end-of-run summary on the terminal.

    Each epoch (after its validation) logs one line::

        [flash-ace] epoch 3/15 | 1m12s elapsed, ~4m48s left | train loss 0.0312 | val F MAE 45.1 meV/Å, E MAE 3.2 meV/atom | lr 0.005

    When fitting ends it logs why (``max_epochs``, ``max_time``, early stopping)
    after how many epochs of the whole run — a run resumed from a checkpoint counts
    the epochs before the restart too, and says how many were trained since — and the
    best-validation epoch; after testing, the test metrics in meV units, the run
    directory and the next commands (report, compile, package). If the run is
    interrupted (SIGTERM from a cluster's time limit, Ctrl-C) it logs the epochs
    completed, the ``last.ckpt`` that holds the last of them and the exact command that
    resumes from it. Its history is saved in the checkpoints (callback state), so a
    resumed run reports the whole run. Everything goes through Python logging (the
    terminal and the run's log file), never into the metrics files.

    Args:
        monitor: validation metric whose minimum marks the best epoch (default: the
            first ``ModelCheckpoint``'s monitor, else ``val0_epoch/weighted_sum``)
        run_dir: run directory named in the summary (default: Hydra's output dir)
    """

    def __init__(self, monitor: Optional[str] = None, run_dir: Optional[str] = None) -> None:
        super().__init__()
        self.monitor = monitor
        self.run_dir = run_dir
        self._start = None
        self._loss_sum = 0.0
        self._loss_count = 0
        self.history: List[Dict[str, float]] = []
        self.stop_reason: Optional[str] = None
        # restored from a checkpoint: the epochs and training time before this run
        self._resumed_epochs = 0
        self._resumed_elapsed = 0.0

    # ---------------------------------------------------------------- checkpoint state
    def state_dict(self) -> Dict[str, Any]:
        elapsed = time.perf_counter() - self._start if self._start is not None else 0.0
        return {"history": self.history, "elapsed_s": self._resumed_elapsed + elapsed}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self._resumed_epochs = len(self.history)
        self._resumed_elapsed = float(state_dict.get("elapsed_s", 0.0))

    # ---------------------------------------------------------------- helpers
    def _say(self, trainer, message: str) -> None:
        if trainer.is_global_zero:
            logger.info("[flash-ace] %s", message)

    def _monitor(self, trainer) -> str:
        if self.monitor is not None:
            return self.monitor
        for cb in trainer.callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.monitor:
                return cb.monitor
        return "val0_epoch/weighted_sum"

    @staticmethod
    def _timer(trainer) -> Optional[Timer]:
        for cb in trainer.callbacks:
            if isinstance(cb, Timer) and cb._duration is not None:
                return cb
        return None

    def _run_dir(self) -> Optional[str]:
        if self.run_dir is not None:
            return self.run_dir
        try:
            from hydra.core.hydra_config import HydraConfig

            return HydraConfig.get().runtime.output_dir
        except Exception:  # not launched through Hydra
            return None

    def _epochs_label(self, trainer, done: int) -> str:
        max_epochs = trainer.max_epochs
        return f"{done}/{max_epochs}" if max_epochs is not None and max_epochs > 0 else f"{done}"

    # ---------------------------------------------------------------- hooks
    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()
        if not self._resumed_epochs:
            self.history = []
        self.stop_reason = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._loss_sum, self._loss_count = 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._loss_sum += float(loss.detach())
            self._loss_count += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # validation of this epoch has run; the metrics are in callback_metrics
        done = trainer.current_epoch + 1
        elapsed = self._resumed_elapsed + time.perf_counter() - self._start
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val")}
        record = {"epoch": done, "elapsed_s": elapsed}
        record.update(metrics)
        self.history.append(record)

        left = []
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            left.append(elapsed / done * (trainer.max_epochs - done))
        timer = self._timer(trainer)
        if timer is not None:
            left.append(max(0.0, timer.time_remaining() or 0.0))
        parts = [f"epoch {self._epochs_label(trainer, done)}", f"{format_duration(elapsed)} elapsed"]
        if left:
            parts[-1] += f", ~{format_duration(min(left))} left"
        if self._loss_count:
            parts.append(f"train loss {self._loss_sum / self._loss_count:.4g}")
        quoted = _quoted(metrics, "val0_epoch")
        if quoted:
            parts.append("val " + ", ".join(quoted))
        if trainer.optimizers:
            parts.append(f"lr {trainer.optimizers[0].param_groups[0]['lr']:.3g}")
        self._say(trainer, " | ".join(parts))

    def _reason(self, trainer) -> str:
        done = len(self.history)
        if trainer.interrupted:
            return "interrupted"
        timer = self._timer(trainer)
        if timer is not None and timer.time_elapsed() >= timer._duration:
            return f"max_time ({format_duration(timer._duration)}) reached"
        for cb in trainer.callbacks:
            if isinstance(cb, EarlyStopping) and cb.stopped_epoch > 0:
                return f"early stopping: {cb.monitor} did not improve for {cb.patience} epochs"
        if trainer.max_epochs is not None and 0 < trainer.max_epochs <= done:
            return "max_epochs reached"
        return "stopped by a callback"

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._start is None:
            return
        done = len(self.history)
        self.stop_reason = self._reason(trainer)
        this_run = time.perf_counter() - self._start
        elapsed = self._resumed_elapsed + this_run
        line = f"training ended after {self._epochs_label(trainer, done)} epochs in {format_duration(elapsed)}"
        if self._resumed_epochs:
            line += (f" ({done - self._resumed_epochs} of them in {format_duration(this_run)} since the restart "
                     f"from epoch {self._resumed_epochs})")
        line += f": {self.stop_reason}"
        if self.stop_reason.startswith("max_time") and trainer.max_epochs and done < trainer.max_epochs:
            line += " (cut short: the model may not be converged; raise max_time or lower max_epochs)"
        self._say(trainer, line)
        monitor = self._monitor(trainer)
        scored = [r for r in self.history if monitor in r and math.isfinite(r[monitor])]
        if scored:
            best = min(scored, key=lambda r: r[monitor])
            quoted = _quoted(best, "val0_epoch")
            self._say(
                trainer,
                f"best validation epoch {best['epoch']} ({monitor} = {best[monitor]:.4g}"
                + (f"; {', '.join(quoted)}" if quoted else "")
                + ")",
            )

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """An interrupted fit: what was done, where it is saved, how to go on."""
        from lightning.pytorch.trainer.states import TrainerFn
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if self._start is None or trainer.state.fn != TrainerFn.FITTING:
            return

        if isinstance(exception, SIGTERMException):
            cause = "SIGTERM (e.g. the cluster's time limit)"
        elif isinstance(exception, KeyboardInterrupt):
            cause = "Ctrl-C (SIGINT)"
        else:
            cause = f"{type(exception).__name__}: {str(exception).splitlines()[0][:200] if str(exception) else ''}"
        done = len(self.history)
        self._say(trainer, f"training interrupted by {cause} during epoch {trainer.current_epoch + 1}; "
                           f"{self._epochs_label(trainer, done)} epochs completed")
        last = next((cb.last_model_path for cb in trainer.checkpoint_callbacks if getattr(cb, "last_model_path", "")), "")
        if not last or not Path(last).is_file():
            self._say(trainer, "no checkpoint was written yet (none before the first epoch ends): start the run again")
            return
        self._say(trainer, f"last.ckpt (epoch {done}, the partial epoch is not in it): {last}")
        self._say(trainer, f"resume with: {resume_command(last)}")

    def on_test_end(self, trainer, pl_module) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test")}
        prefixes = sorted({k.split("/")[0] for k in metrics})
        for prefix in prefixes:
            quoted = _quoted(metrics, prefix)
            if quoted:
                self._say(trainer, f"{prefix.replace('_epoch', '')}: " + ", ".join(quoted))
        run = self._run_dir()
        if run is not None:
            self._say(trainer, f"run directory: {run}")
            # name the file Lightning wrote: in a reused run directory it is best-v1.ckpt, not best.ckpt
            best = next((cb.best_model_path for cb in trainer.checkpoint_callbacks if getattr(cb, "best_model_path", "")), "")
            ckpt = best or "RUN/best.ckpt"
            self._say(
                trainer,
                "next: python -m nequip_flash_ace.report RUN | "
                f"nequip-compile {ckpt} model.nequip.pt2 --mode aotinductor --device cpu --target ase | "
                f"nequip-package build {ckpt} model.nequip.zip  (RUN = the run directory)",
            )


def resume_command(checkpoint: str, argv: Optional[List[str]] = None) -> str:
    """The command line that started this process, as ``nequip-train ...``, with
    ``++ckpt_path=<checkpoint>`` in place of any ``ckpt_path`` it had."""
    argv = list(sys.argv if argv is None else argv)
    args = [a for a in argv[1:] if not a.lstrip("+").startswith("ckpt_path=")]
    return " ".join(["nequip-train", *map(shlex.quote, args), shlex.quote(f"++ckpt_path={Path(checkpoint).resolve()}")])
