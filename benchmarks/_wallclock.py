"""Lightning callback used by the accuracy benchmarks: after every validation pass it
appends the training wall time so far and the epoch-level metrics to a JSON-lines file,
so that metric-vs-time curves use measured times (the CSV logger records none)."""

import json
import time

from lightning.pytorch.callbacks import Callback


class EpochWallClock(Callback):
    def __init__(self, out_file: str):
        self.out_file = out_file
        self._start = None

    def on_fit_start(self, trainer, pl_module):
        self._start = time.perf_counter()
        open(self.out_file, "w").close()

    def on_validation_end(self, trainer, pl_module):
        # runs after the module has logged its epoch metrics; skip Lightning's sanity check
        if trainer.sanity_checking or self._start is None:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val") and "_epoch/" in k}
        record = {"epoch": trainer.current_epoch, "elapsed_s": time.perf_counter() - self._start, "metrics": metrics}
        with open(self.out_file, "a") as f:
            f.write(json.dumps(record) + "\n")
