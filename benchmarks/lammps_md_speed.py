"""MD speed in a real LAMMPS: Flash-ACE (2 layers, message passing, through pair_style
nequip; the strictly local one-layer model, the default, through pair_style allegro on 1
and 2 MPI ranks),
tutorial NequIP (pair_style nequip) and tutorial Allegro (pair_style allegro), same cell.

    python benchmarks/lammps_md_speed.py                 # 864-atom Cu-Au cell, 100 steps
    python benchmarks/lammps_md_speed.py --quick         # 256 atoms, 20 steps (smoke)

Each model is trained for a short budget on the bundled Cu-Au data through our config
(peers swap only the model block, as in accuracy_budget.py: the weights only have to
give sane MD), compiled with `nequip-compile --mode aotinductor` for its pair style
(float32), then run in one LAMMPS binary (tools/build_lammps.sh) on the bundled 32-atom
cell replicated: NVE at 600 K, warm-up steps, then timed steps; the speed is LAMMPS'
own "Loop time". On this 2-core machine 1 rank runs 2 OpenMP threads and 2 ranks run
1 thread each. Writes benchmarks/results/lammps_md_speed[_quick].{md,json}.
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _harness import RESULTS, RUNS, markdown_table, peer_models, provenance  # noqa: E402
import accuracy_budget  # noqa: E402
from test_lammps import _find_lmp, cell_and_pair_style, run_lammps  # noqa: E402  (one way to find and run lmp)
from workflow_utils import nequip_compile  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# name -> (config, knob overrides, model kwargs or None, compile target, pair style, [(ranks, threads)])
CASES = {
    # attention on (4 heads), as measured in benchmarks/results/lammps_md_speed.md (the
    # configs' default became num_heads: 0 later)
    "flash_ace (2 layers)": ("flash_ace", {"num_layers": 2, "num_heads": 4, "attention_score_inputs": "pair"}, None, "pair_nequip", "nequip", [(1, 2)]),
    "flash_ace_local (1 layer)": ("flash_ace_local", {"num_heads": 4, "attention_score_inputs": "pair"}, None, "pair_allegro", "allegro", [(1, 2), (2, 1)]),
    "nequip (tutorial)": ("flash_ace", {}, "nequip", "pair_nequip", "nequip", [(1, 2)]),
    "allegro (tutorial)": ("flash_ace", {}, "allegro", "pair_allegro", "allegro", [(1, 2), (2, 1)]),
}

DECK = """\
velocity        all create 600.0 4928459 mom yes rot yes dist gaussian
timestep        0.001
fix             nve all nve
thermo          {steps}
run             {warmup}
run             {steps}
"""


def trained_checkpoint(name, config, knobs, model_key, budget_min, out_root):
    """A short nequip-train run (budget in minutes) of one model through our config."""
    run_dir = out_root / re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    model_kwargs = None if model_key is None else peer_models()[model_key]
    config_dir = accuracy_budget.write_run_config(run_dir, config, knobs, model_kwargs, 0, budget_min)
    proc = accuracy_budget.run_training(run_dir, config_dir, "run=[train]")
    if proc.returncode != 0:
        raise RuntimeError(f"training {name} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1]}")
    return run_dir / "best.ckpt"


def compile_model(checkpoint: Path, target: str) -> Path:
    out = checkpoint.parent / f"model_{target}.nequip.pt2"
    nequip_compile(checkpoint, out, target)
    return out


def time_md(lmp, model, pair_style, ranks, threads, replicate, steps, warmup, work: Path):
    work.mkdir(parents=True, exist_ok=True)
    deck = work / "in.speed"
    deck.write_text(cell_and_pair_style(pair_style, replicate) + DECK.format(steps=steps, warmup=warmup))
    proc = run_lammps(lmp, deck, work, model, ranks=ranks, threads=threads, timeout=3600)
    loops = re.findall(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms", proc.stdout)
    seconds, procs, n_steps, atoms = loops[-1]
    seconds, n_steps, atoms = float(seconds), int(n_steps), int(atoms)
    return {"atoms": atoms, "steps": n_steps, "loop_s": seconds, "timesteps_per_s": n_steps / seconds,
            "atom_steps_per_s": atoms * n_steps / seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 atoms, 20 timed steps, 20 s training")
    parser.add_argument("--replicate", type=int, default=3, help="replicas of the 32-atom cell per axis")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--train-min", type=float, default=1.0, help="training budget per model (minutes)")
    args = parser.parse_args()
    if args.quick:
        args.replicate, args.steps, args.warmup, args.train_min = 2, 20, 5, 20 / 60
    stem = "lammps_md_speed" + ("_quick" if args.quick else "")
    out_root = RUNS / stem
    lmp = _find_lmp()
    replicate = " ".join([str(args.replicate)] * 3)
    rows, results = [], []
    start = time.time()
    for name, (config, knobs, model_key, target, pair_style, layouts) in CASES.items():
        checkpoint = trained_checkpoint(name, config, knobs, model_key, args.train_min, out_root)
        compiled = compile_model(checkpoint, target)
        for ranks, threads in layouts:
            r = time_md(lmp, compiled, pair_style, ranks, threads, replicate, args.steps, args.warmup,
                        checkpoint.parent / f"md_{ranks}x{threads}")
            r.update(model=name, pair_style=pair_style, ranks=ranks, threads=threads)
            results.append(r)
            print(json.dumps(r), flush=True)
    reference = next(r for r in results if r["model"].startswith("flash_ace (2"))
    for r in results:
        rows.append([r["model"], f"pair_style {r['pair_style']}", f"{r['ranks']} x {r['threads']}", r["atoms"],
                     f"{r['timesteps_per_s']:.2f}", f"{r['atom_steps_per_s']:.0f}",
                     f"{r['timesteps_per_s'] / reference['timesteps_per_s']:.2f}"])
    header = ["model", "LAMMPS route", "MPI ranks x OpenMP threads", "atoms", "timesteps/s", "atom-steps/s",
              "speed vs Flash-ACE default"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = provenance()
    text = (
        f"# MD speed in LAMMPS ({stem})\n\n"
        f"`python benchmarks/lammps_md_speed.py{' --quick' if args.quick else ''}`: NVE, {args.steps} timed steps after "
        f"{args.warmup} warm-up steps, 1 fs, 600 K start, bundled Cu-Au cell replicated {replicate}; AOTInductor "
        f"float32 models; LAMMPS `{lmp}`. Total {time.time() - start:.0f} s.\n\n"
        + markdown_table(header, rows)
        + f"\n\nMachine: {meta.get('machine', '')}; commit {meta.get('git_commit', '')}.\n"
    )
    (RESULTS / f"{stem}.md").write_text(text)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"results": results, "provenance": meta}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
