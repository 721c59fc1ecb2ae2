"""Accuracy at equal wall-clock budget: Flash-ACE vs peers, the attention-vs-depth study,
and a one-knob-at-a-time ablation of the deep preset.

    python benchmarks/accuracy_budget.py --study peers --quick      # 5 models x 1 seed x 40 s
    python benchmarks/accuracy_budget.py --study depth --quick      # 8 settings x 1 seed x 40 s
    python benchmarks/accuracy_budget.py --study ablation --quick   # 6 settings x 1 seed x 40 s
    python benchmarks/accuracy_budget.py --study local --budget-min 2.5 --seeds 0 1   # 1-layer preset vs default
    python benchmarks/accuracy_budget.py --study peers --budget-min 2.5 --seeds 0 1   # docs/benchmarks.md
    python benchmarks/accuracy_budget.py --study long --budget-min 15 --seeds 0   # default, deep preset, tutorial peers
    python benchmarks/accuracy_budget.py --study defaults --data paracetamol --budget-min 2.5 --seeds 0 1   # 1 vs 2 layers, peers
    python benchmarks/accuracy_budget.py --study stability --data silicon --max-epochs 10 --budget-min 60 --seeds 0 1 --jobs 2   # equal epochs, 2 runs at once
    python benchmarks/accuracy_budget.py --study scores --budget-min 2.5 --seeds 0 1   # what the attention scores see
    python benchmarks/accuracy_budget.py --study attention --data acac --budget-min 2.5 --seeds 0 1   # does attention pay (every data set)
    python benchmarks/accuracy_budget.py --study knobs --budget-min 2.5 --seeds 0   # one knob at a time

Every run is `nequip-train` on a bundled data set with its config in configs/, or a preset
put on that config (`flash_ace_deep`, ...), composed by Hydra, so data split, loss, optimiser,
EMA and schedule are the same for all models; a peer only replaces the
`training_module.model` block (NequIP / Allegro at tutorial and Flash-ACE-matched
parameter counts, `_harness.peer_models`). The budget is Lightning's `max_time`.
Besides the validation set (which selects the checkpoint and drives the scheduler), the
held-out test trajectory is evaluated after every epoch as a second validation set
(`val1`), and a callback records the training wall time at each epoch, giving measured
test-force-MAE-vs-time curves. Final numbers: the test run on the best checkpoint.
Writes benchmarks/results/accuracy_<study>[_quick].{md,json,png}; runs under benchmarks/runs/.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from threading import Lock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import FLASH_ACE, RESULTS, RUNS, count_params, markdown_table, param_matched_widths, parse_value, peer_models, provenance  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# data set -> (its Flash-ACE config in configs/, type names, one-line description for reports)
DATASETS = {
    "cuau": ("flash_ace", ["Cu", "Au"], "bundled Cu–Au EMT data (train: 6 trajectories, 360 frames; validation and "
             "test: one held-out trajectory each, 60 frames)"),
    "paracetamol": ("flash_ace_paracetamol", ["H", "C", "N", "O"], "bundled paracetamol GFN2-xTB MD (train: 4 "
                    "trajectories, 800 frames; validation and test: one held-out trajectory each, 200 frames)"),
    "silicon": ("flash_ace_silicon", ["Si"], "bundled diverse Si GFN1-xTB set (random, relaxed and distorted crystals; "
                "random split 80/10/10)"),
    "acac": ("flash_ace_acac", ["H", "C", "O"], "acetylacetone benchmark (DFT; train_300K.xyz split 450/50 with the "
             "run's seed; test: 300 K and 600 K MD sets)"),
}
FLASH_KNOBS = ("num_layers", "num_heads", "attention_score_inputs", "l_max", "num_radial", "num_features",
               "correlation_order", "radial_mlp_width", "radial_mlp_depth", "feature_l_max", "attention_head_dim",
               "readout_mlp_hidden_layers_width", "readout_mlp_hidden_layers_depth")


def flash_model_kwargs(cfg) -> dict:
    """The Flash-ACE builder arguments of a composed config's model block (knobs only;
    reading one entry resolves just its own interpolation, e.g. ``${num_heads}``)."""
    block = cfg.training_module.model
    return dict(FLASH_ACE, **{k: block[k] for k in FLASH_KNOBS if k in block})


def default_flash_kwargs(dataset: str) -> dict:
    """The model of the data set's shipped config, as builder arguments."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        return flash_model_kwargs(compose(config_name=DATASETS[dataset][0]))


def knob_overrides(knobs: dict) -> list:
    return [f"{k}={v}" for k, v in knobs.items()]


def settings_for(study: str, dataset: str = "cuau") -> dict:
    """name -> (config name, top-level knob overrides, model kwargs replacing the model block or None).

    ``flash_ace`` stands for the data set's own config; a preset that builds on it
    (``flash_ace_deep``, ...) is put on the data set's config (:func:`preset_changes`)."""
    types = DATASETS[dataset][1]
    if study == "peers":
        models = peer_models(param_matched_widths(types, default_flash_kwargs(dataset)))
        return {name: ("flash_ace", {}, None if name == "flash_ace" else kwargs)
                for name, kwargs in models.items() if name != "flash_ace_attention"}
    if study == "long":
        # the longer budget (15 min): the default, the deeper preset meant for longer
        # trainings, and the peers at their tutorial sizes
        models = peer_models()
        return {"flash_ace": ("flash_ace", {}, None), "flash_ace_deep": ("flash_ace_deep", {}, None),
                "nequip": ("flash_ace", {}, models["nequip"]), "allegro": ("flash_ace", {}, models["allegro"])}
    if study == "defaults":
        # the peers study plus the depth/attention candidates for the default: 2 layers
        # (message passing, pair_style nequip) vs 1 layer (strictly local, pair_style
        # allegro on many ranks), attention on and off
        models = peer_models(param_matched_widths(types, default_flash_kwargs(dataset)))
        settings = {f"flash_ace_{layers}L{'' if heads else '_no_attention'}": ("flash_ace", {"num_layers": layers, "num_heads": heads}, None)
                    for layers in (2, 1) for heads in (4, 0)}
        settings.update({name: ("flash_ace", {}, kwargs) for name, kwargs in models.items() if not name.startswith("flash_ace")})
        return settings
    if study == "attention":
        # does attention earn its place: every attention setting against the same depth
        # without it (1 and 2 layers), the 2-layer attention with normalised scores and the
        # strictly local 1-layer many-body attention, beside the tutorial peers
        models = peer_models()
        settings = {f"flash_ace_{layers}L{'' if heads else '_no_attention'}": ("flash_ace", {"num_layers": layers, "num_heads": heads}, None)
                    for layers, heads in ((1, 0), (2, 0), (2, 4))}
        settings["flash_ace_1L_many_body"] = ("flash_ace", {"num_layers": 1, "num_heads": 4, "attention_score_inputs": "many_body"}, None)
        settings.update({name: ("flash_ace", {}, models[name]) for name in ("nequip", "allegro")})
        return settings
    if study == "stability":
        # the diverse-structures issue's table: the default (attention off since it was
        # measured), attention on, ν = 2, and the peers
        models = peer_models()
        return {"flash_ace": ("flash_ace", {}, None), "flash_ace_attention": ("flash_ace", {"num_heads": 4}, None),
                "flash_ace_nu2": ("flash_ace", {"correlation_order": 2}, None),
                "nequip": ("flash_ace", {}, models["nequip"]), "allegro": ("flash_ace", {}, models["allegro"])}
    if study == "scores":
        # what the attention scores should see, at the default depth (one layer: the
        # features are the type embedding, so "pair" scores see species and distance
        # only); attention off is the bar attention has to clear
        return {"flash_ace_attention": ("flash_ace", {"num_heads": 4, "attention_score_inputs": "pair"}, None),
                "flash_ace_environment": ("flash_ace", {"num_heads": 4, "attention_score_inputs": "environment"}, None),
                "flash_ace_no_attention": ("flash_ace", {"num_heads": 0}, None)}
    if study == "knobs":
        # one knob at a time around the shipped default (one layer, no attention), each
        # moved down and up (feature_l_max is not a knob at one layer: its only layer reads
        # out scalars): which knob matters on which data, at equal time
        radial_width = "+training_module.model.radial_mlp_width"
        variants = {
            "default": {},
            "num_features_16": {"num_features": 16}, "num_features_64": {"num_features": 64},
            "l_max_1": {"l_max": 1}, "l_max_3": {"l_max": 3},
            "nu_2": {"correlation_order": 2}, "nu_4": {"correlation_order": 4},
            "num_radial_4": {"num_radial": 4}, "num_radial_12": {"num_radial": 12},
            "radial_mlp_32": {radial_width: 32}, "radial_mlp_128": {radial_width: 128},
            "lr_0.005": {"lr": 0.005}, "lr_0.02": {"lr": 0.02},
            "batch_2": {"batch_size": 2}, "batch_8": {"batch_size": 8},
            # the last layer's readout MLP (its hidden width is a config knob: 64 on Cu-Au,
            # 16 on the molecule) and the energy loss weight (default 1:1 with forces)
            "readout_mlp_16": {"readout_mlp_width": 16}, "readout_mlp_64": {"readout_mlp_width": 64},
            "energy_weight_10": {"energy_weight": 10},
        }
        return {f"flash_ace_{name}": ("flash_ace", knobs, None) for name, knobs in variants.items()}
    if study == "depth":
        # naive: the 2-layer config with only depth (and attention) changed;
        # coupled: the deep preset as it was (benchmarks/configs/flash_ace_coupled.yaml: lr 1e-3,
        # clip 5, energy warm-up, batch 8 x 2, faster scheduler)
        return {f"{layers}L_{'att' if heads else 'noatt'}_{knobs}": ("flash_ace" if knobs == "naive" else "flash_ace_coupled",
                                                                      {"num_layers": layers, "num_heads": heads}, None)
                for layers in (2, 4) for heads in (4, 0) for knobs in ("naive", "coupled")}
    if study == "ablation":
        # 4 layers with attention: the deep preset, then with one coupled knob put back to the
        # 2-layer value (or the basis reduced), one hypothesis of the method's authors each
        base = {"num_layers": 4, "num_heads": 4}
        variants = {
            "coupled": {},
            "lr_1e-2": {"lr": 0.01},
            "clip_10": {"gradient_clip_val": 10.0},
            "no_energy_warmup": {"energy_warmup_weight": 1.0},
            "batch_4_no_accum": {"batch_size": 4, "accumulate_grad_batches": 1},
            "reduced_basis": {"num_radial": 4, "l_max": 1},
        }
        return {f"4L_att_{name}": ("flash_ace_coupled", dict(base, **knobs), None) for name, knobs in variants.items()}
    if study == "local":
        # the strictly local preset (one layer, runs on many MPI ranks through pair_style
        # allegro) next to the 2-layer message-passing model (pair_style nequip, one rank)
        return {"flash_ace_2L": ("flash_ace", {"num_layers": 2}, None), "flash_ace_local_1L": ("flash_ace_local", {"num_layers": 1}, None)}
    raise ValueError(f"unknown study {study!r}; choose peers, long, defaults, attention, scores, knobs, depth, ablation, local or stability")


BENCH_CONFIGS = Path(__file__).resolve().parent / "configs"
STOPPING = ("max_epochs", "max_time")  # set by the study's budget, never by a preset


def preset_changes(config_name: str):
    """What a preset built on one data set's config (``flash_ace.yaml``,
    ``flash_ace_paracetamol.yaml``, ...) changes, so that the study can put it on any data
    set's config: (top-level knobs, blocks it replaces). Presets are read from configs/, or
    from benchmarks/configs/ for those kept only to rerun earlier studies."""
    from omegaconf import OmegaConf

    path = REPO / "configs" / f"{config_name}.yaml"
    if not path.exists():
        path = BENCH_CONFIGS / f"{config_name}.yaml"
    preset = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    bases = sorted(config for config, _, _ in DATASETS.values())
    defaults = preset.pop("defaults", None)
    if not (isinstance(defaults, list) and len(defaults) == 2 and defaults[0] in bases and defaults[1] == "_self_"):
        raise ValueError(f"{path}: defaults {defaults}; a preset must build on one data set's config: [<one of {bases}>, _self_]")
    knobs = {k: v for k, v in preset.items() if not isinstance(v, dict) and k not in STOPPING}
    return knobs, {k: v for k, v in preset.items() if isinstance(v, dict)}


def write_run_config(run_dir: Path, config_name: str, knobs: dict, model_kwargs, seed: int, budget_min: float,
                     dataset: str = "cuau", max_epochs: int = 1000) -> Path:
    """Compose the config like nequip-train would, then swap the model block (peers), add the
    test set as a second validation set and the wall-clock callback; save it in the run dir."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    dataset_config = DATASETS[dataset][0]
    minutes, seconds = int(budget_min), int(round((budget_min - int(budget_min)) * 60))
    hours, minutes = divmod(minutes, 60)
    # the data set's config names its folder as ${hydra:runtime.cwd}/data/<folder>
    data_dir = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / f"{dataset_config}.yaml"), resolve=False)["data_dir"]
    preset, blocks = [], {}
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        if config_name != "flash_ace":
            # a preset on the data set's own config: its knobs before the study's, so the study's win
            preset_knobs, blocks = preset_changes(config_name)
            base_keys = set(compose(config_name=dataset_config))
            preset = [f"{'' if k in base_keys else '+'}{k}={v}" for k, v in preset_knobs.items()]
        overrides = [f"seed={seed}", f"max_time=00:{hours:02d}:{minutes:02d}:{seconds:02d}", f"max_epochs={max_epochs}",
                     *preset, *knob_overrides(knobs), f"data_dir={REPO / 'data' / data_dir.split('/data/')[-1]}"]
        cfg = compose(config_name=dataset_config, overrides=overrides)
    OmegaConf.set_struct(cfg, False)  # a preset's blocks may add keys (trainer.accumulate_grad_batches)
    cfg = OmegaConf.merge(cfg, blocks)
    if model_kwargs is not None:
        # keep the entries every NequIP-framework model takes (interpolations left unresolved)
        block = OmegaConf.to_container(cfg.training_module.model, resolve=False)
        common = ("seed", "model_dtype", "type_names", "r_max", "avg_num_neighbors", "per_type_energy_shifts", "per_type_energy_scales")
        cfg.training_module.model = OmegaConf.create(dict(model_kwargs, **{k: block[k] for k in common}))
    if "split_dataset" not in cfg.data:
        # the test set as a second validation set (val1): test curves for the report. Not
        # where the validation split comes from split_dataset: the host appends split
        # entries after the listed ones, so the test set would become val0 and select
        test_as_val = OmegaConf.to_container(cfg.data.test_dataset, resolve=False)
        cfg.data.val_dataset = [OmegaConf.to_container(cfg.data.val_dataset, resolve=False), test_as_val]
    cfg.trainer.callbacks.append({"_target_": "_wallclock.EpochWallClock", "out_file": str(run_dir / "wallclock.jsonl")})
    config_dir = run_dir / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, config_dir / "bench.yaml")
    return config_dir


_IN_PROCESS = Lock()  # serialises the in-process parts of runs trained at once (--jobs)


def run_training(run_dir: Path, config_dir: Path, *overrides, threads=None):
    """``nequip-train`` on the config written by :func:`write_run_config` (the wall-clock
    callback is importable from this folder), on ``threads`` CPU threads if given;
    returns the finished process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = ["nequip-train", "-cp", str(config_dir), "-cn", "bench", f"hydra.run.dir={run_dir}", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def train(name, setting, seed, budget_min, out_root, dataset="cuau", max_epochs=1000, threads=None):
    config_name, knobs, model_kwargs = setting
    run_dir = out_root / f"{name}_seed{seed}"
    # a run left by an earlier invocation would leave its checkpoints next to this one's
    # (Lightning then writes best-v1.ckpt) and its test predictions until overwritten
    shutil.rmtree(run_dir, ignore_errors=True)
    with _IN_PROCESS:  # Hydra's compose state is global: one run config at a time
        config_dir = write_run_config(run_dir, config_name, knobs, model_kwargs, seed, budget_min, dataset, max_epochs)
    start = time.time()
    proc = run_training(run_dir, config_dir, threads=threads)
    wall_s = time.time() - start
    with _IN_PROCESS:
        return _collect(name, seed, budget_min, wall_s, proc, run_dir, config_dir, model_kwargs, dataset)


def _collect(name, seed, budget_min, wall_s, proc, run_dir, config_dir, model_kwargs, dataset):
    """The result record of one finished training: parameters, test errors, curves."""
    from omegaconf import OmegaConf

    # the model the run trains: the peer's block, or the composed config's knobs
    model = model_kwargs or flash_model_kwargs(OmegaConf.load(config_dir / "bench.yaml"))
    params = count_params(model, DATASETS[dataset][1])
    result = {"name": name, "seed": seed, "budget_min": budget_min, "wall_s": wall_s, "params": params}
    if proc.returncode != 0:
        result["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1][:300]
        return result
    from nequip_flash_ace.report import parity_plots

    errs = parity_plots(run_dir / "test_dataset0.xyz", run_dir)
    curve = [json.loads(line) for line in open(run_dir / "wallclock.jsonl")]
    result.update(
        epochs=len(curve),
        test_force_mae=errs["forces"]["mae"], test_force_rmse=errs["forces"]["rmse"],
        test_energy_mae=errs["energy_per_atom"]["mae"], test_energy_rmse=errs["energy_per_atom"]["rmse"],
        curve_s=[c["elapsed_s"] for c in curve],
        curve_test_force_mae=[c["metrics"].get("val1_epoch/forces_mae") for c in curve],
        curve_val_force_mae=[c["metrics"].get("val0_epoch/forces_mae") for c in curve],
        curve_test_energy_mae=[c["metrics"].get("val1_epoch/per_atom_energy_mae") for c in curve],
        curve_val_energy_mae=[c["metrics"].get("val0_epoch/per_atom_energy_mae") for c in curve],
        # logged where the config asks for RMSE metrics (the acac benchmark's metric)
        curve_val_force_rmse=[c["metrics"].get("val0_epoch/forces_rmse") for c in curve],
        curve_val_total_energy_rmse=[c["metrics"].get("val0_epoch/total_energy_rmse") for c in curve],
    )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", choices=["peers", "long", "defaults", "attention", "scores", "knobs", "depth", "ablation", "local", "stability"], default="peers")
    parser.add_argument("--data", choices=sorted(DATASETS), default="cuau", help="bundled data set (default cuau)")
    parser.add_argument("--max-epochs", type=int, default=1000, help="stop after this many epochs (equal-epoch studies)")
    parser.add_argument("--quick", action="store_true", help="40 s per run, one seed (smoke check)")
    parser.add_argument("--budget-min", type=float, default=3.0, help="wall-clock training budget per run, minutes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--only", nargs="+", help="run only these settings (names as in the table)")
    parser.add_argument("--out", help="result stem (default accuracy_<study>[_quick])")
    parser.add_argument("--resume", action="store_true", help="keep the finished runs saved under the same stem, run the rest")
    parser.add_argument("--rewrite", action="store_true", help="only rewrite the report from the saved JSON results")
    parser.add_argument("--decide", nargs="+", metavar="STEM",
                        help="only write the cross-data-set validation ratios of saved studies (e.g. accuracy_knobs accuracy_knobs_paracetamol)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="trainings at once, the CPU cores split between them (equal-epoch studies only: "
                             "shared cores make the wall times, and so any time budget, mean nothing)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KNOB=VALUE",
                        help="config knob overrides for every Flash-ACE setting of the study (e.g. neighbour_normalization=coordination)")
    parser.add_argument("--set-all", nargs="+", default=[], metavar="KNOB=VALUE",
                        help="config knob overrides for every model, peers included (training knobs: energy_weight=10, lr=0.005, ...)")
    args = parser.parse_args()
    if args.decide:
        write_decision(args.decide)
        return
    if args.jobs > 1 and args.max_epochs >= 1000:
        parser.error(f"--jobs {args.jobs}: runs sharing the cores have no meaningful wall time; "
                     "use --jobs > 1 only with --max-epochs (equal-epoch studies)")
    budget = 40 / 60 if args.quick else args.budget_min
    seeds = [0] if args.quick else args.seeds
    settings = settings_for(args.study, args.data)
    extra = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    common = {k: parse_value(v) for k, v in (s.split("=", 1) for s in args.set_all)}
    settings = {name: (config, {**common, **extra, **knobs} if model_kwargs is None else {**common, **knobs}, model_kwargs)
                for name, (config, knobs, model_kwargs) in settings.items()}
    extra = {**common, **extra}
    if args.only:
        unknown = sorted(set(args.only) - set(settings))
        if unknown:
            parser.error(f"--only: unknown setting(s) {unknown}; {args.study} has {sorted(settings)}")
        settings = {k: v for k, v in settings.items() if k in args.only}
    stem = args.out or f"accuracy_{args.study}" + ("" if args.data == "cuau" else f"_{args.data}") + ("_quick" if args.quick else "")
    out_root = RUNS / stem
    if args.rewrite:
        saved = json.loads((RESULTS / f"{stem}.json").read_text())
        write_report(saved["results"], args.study, stem, saved["budget_min"], saved["seeds"], args.data, args.max_epochs,
                     saved.get("knobs") or extra, saved["provenance"])
        return
    results = []
    if args.resume and (RESULTS / f"{stem}.json").exists():
        # keep the finished runs of an earlier, cut-short invocation with the same stem
        results = [r for r in json.loads((RESULTS / f"{stem}.json").read_text())["results"] if "error" not in r]
    done = {(r["name"], r["seed"]) for r in results}
    # seed-major: a cut-short run still has every setting once
    todo = [(name, setting, seed) for seed in seeds for name, setting in settings.items() if (name, seed) not in done]
    prov = provenance()
    threads = None
    if args.jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        prov.update(torch_threads=threads, runs_at_once=args.jobs)
    order = list(settings)  # the report lists runs by seed, then in the study's setting order
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = [pool.submit(train, name, setting, seed, budget, out_root, args.data, args.max_epochs, threads)
                for name, setting, seed in todo]
        try:
            for finished in as_completed(runs):
                r = finished.result()
                print(json.dumps({k: v for k, v in r.items() if not k.startswith("curve")}), flush=True)
                results.append(r)
                results.sort(key=lambda run: (run["seed"], order.index(run["name"]) if run["name"] in order else -1))
                write_report(results, args.study, stem, budget, seeds, args.data, args.max_epochs, extra, prov)
        except BaseException:
            # otherwise the pool's exit would train every queued run with nobody left to record it
            pool.shutdown(wait=False, cancel_futures=True)
            raise


PEERS = ("nequip", "allegro")
# the shipped default's name in each study (peers/long/stability, knobs, defaults, scores):
# chosen across the data sets (docs/benchmarks.md), so its test error is reported too
SHIPPED = ("flash_ace", "flash_ace_default", "flash_ace_1L_no_attention", "flash_ace_no_attention")


def is_peer(name: str) -> bool:
    """A peer model (NequIP, Allegro) rather than a Flash-ACE setting of the study."""
    return name.startswith(PEERS)


def best_validation(result) -> float:
    """The selection metric: the lowest force MAE on the validation split (``val0``) over
    the run's epochs. Reads validation only; the test split never enters a choice."""
    return min(v for v in result["curve_val_force_mae"] if v is not None)


def select(results) -> str:
    """The Flash-ACE setting with the lowest mean validation force MAE over its seeds
    (peers are compared, never chosen). Test metrics are not read."""
    scores = {}
    for r in results:
        if "error" not in r and not is_peer(r["name"]):
            scores.setdefault(r["name"], []).append(best_validation(r))
    if not scores:
        raise ValueError("no finished Flash-ACE run to choose from")
    return min(scores, key=lambda name: np.mean(scores[name]))


def decide_across(stems, baseline="flash_ace_default"):
    """Per setting, the geometric mean over data sets (result files ``stems``) of its mean
    validation force MAE divided by ``baseline``'s over the seeds both have: one number per
    setting for "one default for all data sets". Validation only."""
    ratios = {}
    for stem in stems:
        results = [r for r in json.loads((RESULTS / f"{stem}.json").read_text())["results"] if "error" not in r]
        val = {(r["name"], r["seed"]): best_validation(r) for r in results}
        for name in dict.fromkeys(r["name"] for r in results):
            seeds = sorted({s for n, s in val if n == name} & {s for n, s in val if n == baseline})
            if seeds and name != baseline:
                ratio = np.mean([val[name, s] for s in seeds]) / np.mean([val[baseline, s] for s in seeds])
                ratios.setdefault(name, {})[stem] = ratio
    return {name: (float(np.exp(np.mean(np.log(list(per.values()))))), per) for name, per in ratios.items()
            if len(per) == len(stems)}


def write_decision(stems, baseline="flash_ace_default"):
    """benchmarks/results/decision_<stems>.md: the cross-data-set validation ratios."""
    rows = [[name, f"{gm:.3f}"] + [f"{per[s]:.3f}" for s in stems]
            for name, (gm, per) in sorted(decide_across(stems, baseline).items(), key=lambda kv: kv[1][0])]
    text = "\n".join([
        f"# One default for all data sets: validation force MAE / {baseline}'s", "",
        f"`python benchmarks/accuracy_budget.py --decide {' '.join(stems)}`. Mean of each setting's best validation "
        "force MAE over the seeds it shares with the baseline, divided by the baseline's; geometric mean over the "
        "data sets. < 1: better than the baseline on validation. Test errors are not read.", "",
        markdown_table(["setting", "geometric mean"] + list(stems), rows)])
    out = RESULTS / f"decision_{'_'.join(stems)}.md"
    out.write_text(text + "\n")
    print(text)
    return out


def summarise(results):
    """name -> dict of mean/std over seeds (successful runs only)."""
    out = {}
    for name in dict.fromkeys(r["name"] for r in results):
        ok = [r for r in results if r["name"] == name and "error" not in r]
        if not ok:
            out[name] = {"error": next(r["error"] for r in results if r["name"] == name)}
            continue
        f = np.array([r["test_force_mae"] for r in ok])
        out[name] = {"runs": len(ok), "val_force_mae": np.mean([best_validation(r) for r in ok]),
                     "val_force_mae_std": np.std([best_validation(r) for r in ok]), "force_mae": f.mean(), "force_mae_std": f.std(), "force_mae_min": f.min(), "force_mae_max": f.max(),
                     "force_rmse": np.mean([r["test_force_rmse"] for r in ok]),
                     "energy_mae_mev": 1e3 * np.mean([r["test_energy_mae"] for r in ok]),
                     "energy_mae_mev_std": 1e3 * np.std([r["test_energy_mae"] for r in ok]),
                     "epochs": np.mean([r["epochs"] for r in ok]), "params": ok[0]["params"],
                     # training time to the last epoch: below the budget when early stopping ended the run
                     "trained_min": np.mean([r["curve_s"][-1] / 60 for r in ok])}
    return out


def comparisons(study, summary, results):
    """Differences the study was designed to measure, as ratios of mean validation force MAE
    (:func:`best_validation`) over the seeds both settings have (a resumed study can hold
    more seeds of one than the other)."""
    force = {(r["name"], r["seed"]): best_validation(r) for r in results if "error" not in r}

    def ratio(a, b):
        # no common seed also covers a setting that never ran or only failed
        seeds = sorted({s for n, s in force if n == a} & {s for n, s in force if n == b})
        if not seeds:
            return None
        value = np.mean([force[a, s] for s in seeds]) / np.mean([force[b, s] for s in seeds])
        return f"{a} / {b}: {value:.2f} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"

    pairs = []
    if study == "depth":
        for layers in (2, 4):
            for att in ("att", "noatt"):
                pairs.append((f"{layers}L_{att}_coupled", f"{layers}L_{att}_naive"))
        for knobs in ("naive", "coupled"):
            for att in ("att", "noatt"):
                pairs.append((f"4L_{att}_{knobs}", f"2L_{att}_{knobs}"))
            for layers in (2, 4):
                pairs.append((f"{layers}L_att_{knobs}", f"{layers}L_noatt_{knobs}"))
    elif study == "ablation":
        pairs = [(name, "4L_att_coupled") for name in summary if name != "4L_att_coupled"]
    elif study == "peers":
        pairs = [("flash_ace", name) for name in summary if name != "flash_ace"]
    elif study == "long":
        pairs = [(flash, peer) for flash in ("flash_ace", "flash_ace_deep") for peer in ("nequip", "allegro")]
        pairs.append(("flash_ace_deep", "flash_ace"))
    elif study == "local":
        pairs = [("flash_ace_local_1L", "flash_ace_2L")]
    elif study == "defaults":
        pairs = [("flash_ace_1L", "flash_ace_2L"), ("flash_ace_2L", "flash_ace_2L_no_attention"), ("flash_ace_1L", "flash_ace_1L_no_attention")]
        pairs += [(flash, peer) for flash in ("flash_ace_2L", "flash_ace_1L") for peer in summary if not peer.startswith("flash_ace")]
    elif study == "attention":
        # every attention setting against the same depth without it, depth against depth
        pairs = [("flash_ace_2L", "flash_ace_2L_no_attention"), ("flash_ace_1L_many_body", "flash_ace_1L_no_attention"),
                 ("flash_ace_2L_no_attention", "flash_ace_1L_no_attention")]
        pairs += [(flash, peer) for flash in summary if flash.startswith("flash_ace") for peer in ("nequip", "allegro")]
    elif study == "knobs":
        pairs = [(name, "flash_ace_default") for name in summary if name != "flash_ace_default"]
    elif study == "scores":
        pairs = [("flash_ace_attention", "flash_ace_no_attention"), ("flash_ace_environment", "flash_ace_no_attention"),
                 ("flash_ace_environment", "flash_ace_attention")]
    elif study == "stability":
        pairs = [("flash_ace", "nequip"), ("flash_ace", "allegro"), ("flash_ace_attention", "flash_ace"),
                 ("flash_ace_attention", "flash_ace_no_attention"), ("flash_ace_attention", "nequip"),
                 ("flash_ace_no_attention", "nequip")]
    return [line for line in (ratio(a, b) for a, b in pairs) if line]


def write_report(results, study, stem, budget, seeds, dataset="cuau", max_epochs=1000, extra=None, prov=None):
    prov = prov or provenance()
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = summarise(results)
    finished = [r for r in results if "error" not in r]
    chosen = select(finished) if any(not is_peer(r["name"]) for r in finished) else None
    rows = []
    for name, s in summary.items():
        if "error" in s:
            rows.append([name, 0, "fails: " + s["error"]] + ["-"] * 7)
            continue
        # test errors of the chosen setting, the shipped default and the peers only: the
        # test split reports, it never selects
        shown = name == chosen or name in SHIPPED or is_peer(name)
        test = ([f"{s['force_mae']:.4f} ± {s['force_mae_std']:.4f}", f"{s['force_rmse']:.4f}",
                 f"{s['energy_mae_mev']:.2f} ± {s['energy_mae_mev_std']:.2f}"] if shown else ["–", "–", "–"])
        label = name + (" (chosen)" if name == chosen else "") + (" (shipped)" if name in SHIPPED else "")
        rows.append([label, s["runs"],
                     f"{s['val_force_mae']:.4f} ± {s['val_force_mae_std']:.4f}", *test,
                     f"{s['epochs']:.1f}", f"{s['trained_min']:.1f}", s["params"]])
    lines = [f"# Accuracy at equal budget: {study}{' (quick)' if 'quick' in stem else ''}", "", "```", json.dumps(prov, indent=1), "```", "",
             f"Budget {budget:.2f} min of training wall time per run (Lightning `max_time`, {prov.get('torch_threads', '?')} CPU thread(s) per run"
             + (f", {prov['runs_at_once']} runs at a time: wall times are not comparable with single runs" if prov.get("runs_at_once", 1) > 1 else "") + ")"
             + (f" or {max_epochs} epochs, whichever comes first" if max_epochs < 1000 else "") + f", seeds {seeds}; "
             f"{DATASETS[dataset][2]}. "
             "Settings are compared and chosen on the validation split only (lowest force MAE over the epochs, mean ± std "
             "over seeds); the test split is reported once, for the setting chosen here, the shipped default "
             "(chosen across the data sets) and the peers "
             "(best-validation checkpoint). 'trained' is the training time to the last epoch, less than the budget where "
             "the config's early stopping ended the run."
             + (f" Knobs set (`--set` for Flash-ACE, `--set-all` for every model): {', '.join(f'{k}={v}' for k, v in extra.items())}." if extra else ""), "",
             markdown_table(["setting", "runs", "validation force MAE (eV/Å)", "test force MAE (eV/Å)", "test force RMSE",
                             "test energy MAE (meV/atom)", "epochs", "trained (min)", "params"], rows)]
    if chosen:
        lines += ["", f"Chosen on validation: **{chosen}** ({summary[chosen]['val_force_mae']:.4f} eV/Å validation force MAE)."]
    comp = comparisons(study, summary, results)
    if comp:
        lines += ["", "Ratios of mean validation force MAE (< 1: the first is more accurate):", ""] + [f"- {c}" for c in comp]
    if study == "stability":
        lines += ["", stability_table(results)]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps({"results": results, "provenance": prov, "budget_min": budget, "seeds": seeds, "knobs": extra or {}}, indent=1))
    plot(results, RESULTS / f"{stem}.png", study)
    print(f"wrote {RESULTS / (stem + '.md')}", flush=True)


def worst_rebound(curve, after_epoch=3):
    """Largest ratio of a validation error to the best one so far, over epochs after
    ``after_epoch`` (1-based): 1.0 means it never got worse than its best."""
    best, worst = float("inf"), 1.0
    for epoch, value in enumerate(curve, start=1):
        if epoch > after_epoch:
            worst = max(worst, value / best)
        best = min(best, value)
    return worst


def stability_table(results):
    """Per-epoch validation force MAE of every run, its worst rebound after epoch 3 and
    the seed-to-seed spread of the test force MAE (the diverse-structures issue's checks)."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return ""
    width = max(len(r["curve_val_force_mae"]) for r in ok)
    rows = []
    for r in ok:
        curve = [v for v in r["curve_val_force_mae"] if v is not None]
        rows.append([r["name"], r["seed"]] + [f"{v:.3f}" for v in curve] + [""] * (width - len(curve))
                    + [f"{worst_rebound(curve):.2f}"])
    lines = ["Validation force MAE (eV/Å) after every epoch, and the worst ratio of an epoch's value "
             "to the best so far after epoch 3 (target ≤ 1.3):", "",
             markdown_table(["setting", "seed"] + [str(e) for e in range(1, width + 1)] + ["worst rebound"], rows)]
    spread = []
    for name in dict.fromkeys(r["name"] for r in ok):
        f = [best_validation(r) for r in ok if r["name"] == name]
        if len(f) > 1:
            spread.append(f"- {name}: validation force MAE {min(f):.4f}–{max(f):.4f} eV/Å, spread "
                          f"(max − min) / mean = {100 * (max(f) - min(f)) / np.mean(f):.0f} %")
    if spread:
        lines += ["", "Seed-to-seed spread (target ≤ 10 %):", ""] + spread
    return "\n".join(lines)


def plot(results, path, study):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["name"] for r in results))
    # tab20 in order: a colour per setting for up to 20 settings (the knob study has 17), then repeat
    colors = {name: plt.cm.tab20(i % 20) for i, name in enumerate(names)}
    if study == "stability":
        # equal epochs: the per-epoch validation curve is what the study is about
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        for r in results:
            for ax, key in zip(axes, ("curve_val_force_mae", "curve_val_energy_mae")):
                pts = [(e, m) for e, m in enumerate(r.get(key, []), start=1) if m is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, lw=1, color=colors[r["name"]], ls="-" if r["seed"] == 0 else "--",
                            label=f"{r['name']} seed {r['seed']}")
        for ax, title in zip(axes, ("force MAE (eV/Å)", "energy MAE (eV/atom)")):
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"validation {title}")
            ax.set_yscale("log")
            ax.set_title(f"validation {title.split(' (')[0]} after every epoch", fontsize=9)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        pts = [(t / 60, m) for t, m in zip(r.get("curve_s", []), r.get("curve_val_force_mae", [])) if m is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=2.5, lw=1, color=colors[r["name"]], label=r["name"] if r["seed"] == min(x["seed"] for x in results) else None)
    ax.set_xlabel("training wall time (min, measured at each epoch)")
    ax.set_ylabel("validation force MAE (eV/Å)")
    ax.set_yscale("log")
    ax.set_title(f"{study}: validation split, every epoch (lines: seeds)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
