"""A Lightning callback that records what grows while a Flash-ACE model trains.

Used by ``benchmarks/stability_diagnosis.py --train``; added to a run with the override
``trainer.callbacks=[{_target_:_training_probe.TrainingProbe,out_file:...}]`` (with
``benchmarks/`` on ``PYTHONPATH``). Every ``every`` optimiser steps it writes one JSON
line with

- ``loss``: the training loss of the step;
- ``grad_norm``: the gradient norm before clipping, in total and per module group
  (``layerK.attention``, ``layerK.product_basis``, ``layerK.radial``, ``layerK.other``,
  ``other``), and the three parameters with the largest gradient norm;
- per attention layer: the temperatures ``τ_h``, the largest sink score ``|b|``, the
  largest and mean ``|s_ij|`` of the step's batch, the mean normalised attention entropy
  ``-Σ_j a_ij ln a_ij / ln n_i`` (1 = uniform over the live neighbours), and the largest
  edge amplification ``w_ij / f_c(r_ij)`` (1 everywhere for uniform scores);
- per layer: the largest and the root-mean-square per-atom norm of the features entering
  it (``input``) and of its product basis ``B_i`` (``product_basis``).
"""

import json
import math
from pathlib import Path

import lightning
import torch

from nequip.data import AtomicDataDict


def _group(name: str) -> str:
    parts = name.split(".")
    for i, p in enumerate(parts):
        if p.startswith("layer") and p[5:].isdigit():
            sub = parts[i + 1] if i + 1 < len(parts) else ""
            return f"{p}.{sub if sub in ('attention', 'product_basis', 'radial') else 'other'}"
    return "other"


class TrainingProbe(lightning.Callback):
    def __init__(self, out_file: str, every: int = 5):
        self.out_file = Path(out_file)
        self.every = int(every)
        self._record = {}
        self._active = False
        self._handles = []

    # --- hooks on the model ---
    def _attention_hook(self, name):
        def hook(module, args, kwargs, output):
            if not self._active:
                return
            with torch.no_grad():
                edge_center = kwargs["edge_center"]
                envelope = kwargs["edge_envelope"].reshape(-1, 1)
                s = module.scores(kwargs["center_scalars"], kwargs["neighbour_scalars"], kwargs["edge_radial"],
                                  edge_center, kwargs["edge_neighbour"], kwargs["center_coordination"])
                live = (envelope > 0).expand_as(s)
                coordination = kwargs["center_coordination"]
                a = output / torch.index_select(coordination, 0, edge_center)
                plogp = torch.where(a > 0, a * torch.log(a.clamp_min(1e-30)), torch.zeros_like(a))
                num_centers = coordination.shape[0]
                entropy = -torch.zeros(num_centers, s.shape[1], dtype=s.dtype).index_add_(0, edge_center, plogp)
                n = torch.zeros(num_centers, dtype=s.dtype).index_add_(0, edge_center, (envelope.view(-1) > 0).to(s.dtype))
                keep = n > 1
                norm_entropy = entropy[keep] / torch.log(n[keep]).unsqueeze(1)
                amplification = output / envelope.clamp_min(1e-12)
                self._record[name] = {
                    "tau": module.score_temperature.tolist(),
                    "sink_max": float(module.sink_score.abs().max()),
                    "score_max": float(s[live].abs().max()) if live.any() else 0.0,
                    "score_mean": float(s[live].abs().mean()) if live.any() else 0.0,
                    "entropy": float(norm_entropy.mean()) if norm_entropy.numel() else float("nan"),
                    "amplification_max": float(amplification[live].max()) if live.any() else 0.0,
                }
        return hook

    def _layer_input_hook(self, name):
        def hook(module, args):
            if not self._active:
                return
            with torch.no_grad():
                h = args[0][AtomicDataDict.NODE_FEATURES_KEY]
                norms = h.detach().norm(dim=1)
                self._record.setdefault(name, {})["input"] = [float(norms.max()), float(norms.pow(2).mean().sqrt())]
        return hook

    def _product_basis_hook(self, name):
        def hook(module, args, output):
            if not self._active:
                return
            with torch.no_grad():
                norms = output.detach().norm(dim=1)
                self._record.setdefault(name, {})["product_basis"] = [float(norms.max()), float(norms.pow(2).mean().sqrt())]
        return hook

    def on_fit_start(self, trainer, pl_module):
        self.out_file.parent.mkdir(parents=True, exist_ok=True)
        self.out_file.write_text("")
        for name, module in pl_module.model.named_modules():
            short = name.split(".")[-1]
            if type(module).__name__ == "NeighbourAttention":
                layer = name.split(".")[-2]
                self._handles.append(module.register_forward_hook(self._attention_hook(f"{layer}.attention"), with_kwargs=True))
            elif type(module).__name__ == "FlashACELayer":
                self._handles.append(module.register_forward_pre_hook(self._layer_input_hook(short)))
            elif short in ("product_basis", "attended_product_basis") and type(module).__name__ == "ProductBasis":
                layer = name.split(".")[-2]
                self._handles.append(module.register_forward_hook(self._product_basis_hook(f"{layer}.{short}")))

    def on_fit_end(self, trainer, pl_module):
        for h in self._handles:
            h.remove()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._active = trainer.global_step % self.every == 0
        self._record = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if not self._active:
            return
        groups, per_parameter = {}, {}
        for name, p in pl_module.model.named_parameters():
            if p.grad is not None:
                g = _group(name)
                squared = float(p.grad.detach().pow(2).sum())
                groups[g] = groups.get(g, 0.0) + squared
                per_parameter[name.removeprefix("model.func.")] = math.sqrt(squared)
        total = math.sqrt(sum(groups.values()))
        self._record["grad_norm"] = {"total": total, **{k: math.sqrt(v) for k, v in sorted(groups.items())}}
        self._record["largest_grads"] = dict(sorted(per_parameter.items(), key=lambda kv: -kv[1])[:3])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self._active:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        line = {"step": trainer.global_step, "epoch": trainer.current_epoch,
                "loss": float(loss.detach()) if torch.is_tensor(loss) else None, **self._record}
        with open(self.out_file, "a") as f:
            f.write(json.dumps(line) + "\n")
        self._active = False
