"""A Lightning callback the DDP test puts into the trainer: it records, per rank, the
rotations the augmentation drew and the parameters at the end of training."""

from pathlib import Path

import lightning
import torch


class RankProbe(lightning.Callback):
    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = Path(out_dir)
        self.rotations = []
        self.losses = []
        self.batch_energies = []

    def _rotation_transforms(self, trainer):
        datasets = getattr(trainer.datamodule, "train_dataset", None) or []
        found = []
        for ds in datasets:
            for t in getattr(ds, "transforms", []) or []:
                if hasattr(t, "last_rotation"):
                    found.append(t)
        return found

    @staticmethod
    def _params(pl_module):
        return {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}

    def on_train_start(self, trainer, pl_module):
        self.initial_params = self._params(pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        for t in self._rotation_transforms(trainer):
            if t.enabled and t.last_rotation is not None:
                self.rotations.append(t.last_rotation.clone())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # the host returns this rank's loss times world_size (it cancels DDP's averaging)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss.detach()) / trainer.world_size)
        self.batch_energies.append(batch["total_energy"].detach().view(-1).tolist())

    def on_train_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "rank": trainer.global_rank,
                "world_size": trainer.world_size,
                "initial_params": self.initial_params,
                "params": self._params(pl_module),
                "rotations": self.rotations,
                "losses": self.losses,
                "batch_energies": self.batch_energies,
            },
            self.out_dir / f"rank{trainer.global_rank}.pt",
        )
