"""Where the time goes: per-module CPU time of a Flash-ACE model, forward and backward.

    python benchmarks/profile_layer.py                 # default model, 1000-atom Cu–Au
    python benchmarks/profile_layer.py --atoms 256 --out results/profile_layer_256

Two workloads, each profiled with `torch.profiler` after warm-up:
- ``ef``: energy + forces (forward, one backward for the forces), model in eval mode;
- ``train``: one training step with a force loss (forward, force backward with
  ``create_graph``, loss backward to the parameters, i.e. double backward).

Every submodule of interest runs inside a ``record_function`` range (forward hooks).
Backward work is charged to the module whose forward op created the autograd node:
each ``autograd::engine::evaluate_function`` event carries the node's sequence number,
which the forward op recorded inside the module's range; ops run inside a backward
node (double backward) inherit that module, and so do the nodes they create.
Times are self CPU times summed per module (children modules excluded).
Writes ``<out>.{json,md}`` (default ``benchmarks/results/profile_layer``).
"""

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import FLASH_ACE, RESULTS, atoms_to_data, build_peer, bulk_cuau, markdown_table, model_step, provenance  # noqa: E402

# per-layer submodules (nn/layer.py) and the embedding modules of the builder
LAYER_PARTS = (
    "linear_up", "radial", "attention", "atomic_basis", "linear_atomic_basis",
    "product_basis", "linear_out", "self_connection", "readout",
)
MODEL_PARTS = ("type_embed", "spharm", "edge_norm", "radial_encode", "attention_envelope", "per_type_energy_scale_shift")
PREFIX = "module::"


def instrument(model):
    """Wrap the parts' forwards in record_function ranges; returns the hook handles."""
    handles = []
    for name, module in model.named_modules():
        short = name.split(".")
        label = None
        if len(short) >= 2 and short[-2].startswith("layer") and short[-1] in LAYER_PARTS:
            label = f"{short[-2]}.{short[-1]}"
        elif short[-1] in MODEL_PARTS or (short[-1].startswith("layer") and short[-1][5:].isdigit()):
            label = short[-1]
        if label is None:
            continue
        stack = []

        def pre(mod, args, label=label, stack=stack):
            rf = torch.autograd.profiler.record_function(PREFIX + label)
            rf.__enter__()
            stack.append(rf)

        def post(mod, args, out, stack=stack):
            stack.pop().__exit__(None, None, None)

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    return handles


def attribute(events):
    """Self CPU time (ms) per (module, phase) from profiler events."""
    events = sorted(events, key=lambda e: (e.time_range.start, -e.time_range.end))
    owner_of_seq = {}
    owner = {}
    phase = {}
    totals = defaultdict(float)
    for e in events:
        parent = e.cpu_parent
        inherited = owner.get(id(parent), "other") if parent is not None else "other"
        in_backward = phase.get(id(parent), False) if parent is not None else False
        if e.name.startswith(PREFIX):
            who = e.name[len(PREFIX):]
        elif e.name.startswith("autograd::engine::evaluate_function"):
            in_backward = True
            who = owner_of_seq.get(e.sequence_nr, inherited)
        else:
            who = inherited
        owner[id(e)] = who
        phase[id(e)] = in_backward
        if e.sequence_nr is not None and e.sequence_nr >= 0 and not e.name.startswith("autograd::engine"):
            owner_of_seq.setdefault(e.sequence_nr, who)
        totals[(who, "backward" if in_backward else "forward")] += e.self_cpu_time_total / 1e3
    return totals


def profile(model, data, mode, repeats):
    step = model_step(model, data, mode)
    for _ in range(2):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    totals = attribute(prof.events())
    return {f"{who}|{ph}": ms / repeats for (who, ph), ms in totals.items()}


def group(per_module):
    """Sum the layers' parts over layers (``layer*.product_basis`` -> ``product_basis``)."""
    out = defaultdict(float)
    for key, ms in per_module.items():
        who, ph = key.split("|")
        name = who.split(".", 1)[1] if who.startswith("layer") and "." in who else who
        if name.startswith("layer") and name[5:].isdigit():
            name = "layer (glue)"
        out[(name, ph)] += ms
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atoms", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="{}", help="JSON overrides of the Flash-ACE builder arguments")
    parser.add_argument("--out", default=str(RESULTS / "profile_layer"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kwargs = dict(FLASH_ACE, **json.loads(args.model))
    model = build_peer(kwargs, ["Cu", "Au"], 5.0)
    instrument(model)
    atoms = bulk_cuau(args.atoms)
    data = atoms_to_data(atoms, 5.0)
    result = {"provenance": provenance(), "atoms": len(atoms), "model": kwargs, "modes": {}}
    lines = [f"# Per-module CPU time, Flash-ACE, {len(atoms)}-atom Cu–Au, float32, {args.threads} threads\n",
             f"Model overrides: `{args.model}`. Command: `python benchmarks/profile_layer.py "
             + " ".join(sys.argv[1:]) + "`.\n"]
    for mode in ("ef", "train"):
        per_module = profile(model, data, mode, args.repeats)
        result["modes"][mode] = per_module
        grouped = group(per_module)
        names = sorted({n for n, _ in grouped}, key=lambda n: -(grouped[(n, "forward")] + grouped[(n, "backward")]))
        total = sum(grouped.values())
        rows = []
        for n in names:
            f, b = grouped[(n, "forward")], grouped[(n, "backward")]
            rows.append([n, f"{f:.1f}", f"{b:.1f}", f"{f + b:.1f}", f"{100 * (f + b) / total:.1f} %"])
        rows.append(["**total**", f"{sum(v for (n, p), v in grouped.items() if p == 'forward'):.1f}",
                     f"{sum(v for (n, p), v in grouped.items() if p == 'backward'):.1f}", f"{total:.1f}", "100 %"])
        title = "energy + forces" if mode == "ef" else "training step with force loss"
        lines.append(f"\n## {title} (ms per call, summed over layers)\n")
        lines.append(markdown_table(["module", "forward", "backward", "total", "share"], rows))
        print(lines[-2] + lines[-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(result, indent=1))
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
