"""Is the last-layer uncertainty any good? Ranking, calibration and an active-learning loop.

    python benchmarks/uncertainty_quality.py --part quality          # every bundled data set + acetylacetone
    python benchmarks/uncertainty_quality.py --part active --seeds 0 1   # active learning on silicon
    python benchmarks/uncertainty_quality.py --rewrite

Quality: for each bundled data set the shipped config is trained as in the quick start
(its own epochs), and for acetylacetone the shipped model of the 15-min benchmark run
(``benchmarks/runs/acac_15min/flash_ace_seed0``, trained first if missing); then
``python -m nequip_flash_ace.uncertainty`` fits σ on the run's own training and validation
splits, and on the test split(s) we measure: the Spearman rank correlation between σ_E and
the absolute energy error per structure, and between each atom's σ_i and the norm of its
force error; the fraction of energy errors within 1σ and 2σ (a calibrated Gaussian gives
68 % and 95 %); on acetylacetone, the mean σ_E at 600 K over that at 300 K.

Active learning (silicon): from the training pool (data/silicon_gfn1/train.xyz) draw 100
structures at random, train the shipped silicon config on them for ``--epochs`` epochs, fit σ,
then add 100 more from the rest of the pool: the 100 with the highest σ_E, or 100 at
random; retrain from scratch on the 200 (same epochs, same seed) and compare the test
force MAE. Validation and test splits are the bundled ones.

Writes benchmarks/results/uncertainty.{md,json} and uncertainty_calibration.png; runs under
benchmarks/runs/uncertainty/.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import RESULTS, RUNS, markdown_table, provenance  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = RUNS / "uncertainty"
ACAC_BASE = RUNS / "acac_15min" / "flash_ace_seed0"
# data set -> (config, test files)
DATASETS = {
    "cuau": ("flash_ace", [REPO / "data" / "cuau_emt" / "test.xyz"]),
    "paracetamol": ("flash_ace_paracetamol", [REPO / "data" / "paracetamol_gfn2" / "test.xyz"]),
    "silicon": ("flash_ace_silicon", [REPO / "data" / "silicon_gfn1" / "test.xyz"]),
    "acac": ("flash_ace_acac", [REPO / "data" / "acac" / "test_MD_300K.xyz", REPO / "data" / "acac" / "test_MD_600K.xyz"]),
}


def _exe(name):
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else name


def train(config: str, run_dir: Path, *overrides) -> Path:
    if (run_dir / "best.ckpt").exists():
        return run_dir
    cmd = [_exe("nequip-train"), "-cp", str(REPO / "configs"), "-cn", config, f"hydra.run.dir={run_dir}", "run=[train]", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"training failed: {(proc.stderr or proc.stdout)[-2000:]}")
    return run_dir


def fit_sigma(run_dir: Path):
    """``python -m nequip_flash_ace.uncertainty run_dir``, in process: (checkpoint, fit)."""
    from nequip_flash_ace.uncertainty import fit_checkpoint

    fit = fit_checkpoint(run_dir / "best.ckpt", run_dir / "uncertainty.ckpt")
    return run_dir / "uncertainty.ckpt", {"val_nll": fit["nll"], "val_spearman": fit["val_spearman"], "variance_scale": fit["variance_scale"]}


def predict(checkpoint: Path, frames) -> dict:
    """Energies, forces and σ of every frame through FlashACEUncertaintyCalculator."""
    from nequip_flash_ace.integrations.ase import FlashACEUncertaintyCalculator

    calc = FlashACEUncertaintyCalculator._from_saved_model(str(checkpoint), device="cpu", chemical_species_to_atom_type_map=True)
    out = {"e_err": [], "sigma_e": [], "f_err_norm": [], "sigma_i": [], "natoms": []}
    for atoms in frames:
        ref_e, ref_f = atoms.get_potential_energy(), atoms.get_forces()
        atoms = atoms.copy()
        atoms.calc = calc
        out["e_err"].append(atoms.get_potential_energy() - ref_e)
        out["sigma_e"].append(calc.results["energy_uncertainty"])
        out["f_err_norm"].extend(np.linalg.norm(atoms.get_forces() - ref_f, axis=1).tolist())
        out["sigma_i"].extend(calc.results["energies_uncertainty"].tolist())
        out["natoms"].append(len(atoms))
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def quality(pred: dict) -> dict:
    from scipy.stats import spearmanr

    err, sig = np.abs(pred["e_err"]), pred["sigma_e"]
    return {
        "frames": int(len(err)),
        "spearman_energy": float(spearmanr(sig, err).statistic),
        "spearman_atoms": float(spearmanr(pred["sigma_i"], pred["f_err_norm"]).statistic),
        "within_1sigma": float(np.mean(err <= sig)), "within_2sigma": float(np.mean(err <= 2 * sig)),
        "mean_sigma_e_mev": 1e3 * float(sig.mean()), "mean_abs_error_mev": 1e3 * float(err.mean()),
        "rmse_mev": 1e3 * float(np.sqrt(np.mean(err**2))),
        "mean_force_error_mev": 1e3 * float(pred["f_err_norm"].mean()),
    }


def run_quality(only=None):
    from ase.io import read

    results = []
    for data, (config, test_files) in DATASETS.items():
        if only and data not in only:
            continue
        if data == "acac":
            run_dir = ACAC_BASE
            if not (ACAC_BASE / "best.ckpt").exists():
                train(config, ACAC_BASE)
        else:
            # the config's epochs, whatever else runs on the machine (its time limit lifted)
            run_dir = train(config, OUT / f"quality_{data}", "max_time=00:02:00:00")
        checkpoint, fit = fit_sigma(run_dir)
        for test_file in test_files:
            pred = predict(checkpoint, read(test_file, index=":"))
            r = dict(quality(pred), **fit, data=data, test=test_file.name, run_dir=str(run_dir.relative_to(REPO)))
            r["curve"] = {"sigma_e": pred["sigma_e"].tolist(), "abs_err": np.abs(pred["e_err"]).tolist()}
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "curve"}), flush=True)
    return results


def write_split(frames, indices, data_dir: Path, source: Path) -> Path:
    """A data folder for the silicon config: ``frames[indices]`` as train.xyz, the bundled
    validation and test files of ``source`` beside them."""
    from ase.io import write

    data_dir.mkdir(parents=True, exist_ok=True)
    write(data_dir / "train.xyz", [frames[i] for i in indices], format="extxyz")
    for split in ("val", "test"):
        (data_dir / f"{split}.xyz").write_text((source / f"{split}.xyz").read_text())
    return data_dir


def test_force_mae(run_dir: Path) -> float:
    import csv

    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("test0_epoch/forces_mae")]
    return float(rows[-1]["test0_epoch/forces_mae"])


def run_active(seeds, epochs: int, start: int = 100, add: int = 100):
    from ase.io import read

    source = REPO / "data" / "silicon_gfn1"
    pool = read(source / "train.xyz", index=":")
    results = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(pool))
        first, rest = order[:start], order[start:]
        base_data = write_split(pool, first, OUT / f"active_seed{seed}" / "data_start", source)
        common = [f"seed={seed}", f"max_epochs={epochs}", "max_time=00:02:00:00", "run=[train,test]"]
        base = train("flash_ace_silicon", OUT / f"active_seed{seed}" / "run_start", f"data_dir={base_data}", *common)
        checkpoint, _ = fit_sigma(base)
        sigma = predict(checkpoint, [pool[i] for i in rest])["sigma_e"]
        chosen = {"uncertainty": rest[np.argsort(-sigma)[:add]], "random": rng.permutation(rest)[:add]}
        record = {"seed": seed, "epochs": epochs, "start": start, "add": add, "start_test_force_mae": test_force_mae(base)}
        for how, added in chosen.items():
            data = write_split(pool, np.concatenate([first, added]), OUT / f"active_seed{seed}" / f"data_{how}", source)
            run = train("flash_ace_silicon", OUT / f"active_seed{seed}" / f"run_{how}", f"data_dir={data}", *common)
            record[f"{how}_test_force_mae"] = test_force_mae(run)
            record[f"{how}_mean_pool_sigma_mev"] = 1e3 * float(np.mean(sigma[np.isin(rest, added)]))
        results.append(record)
        print(json.dumps(record), flush=True)
    return results


def write_report(data, prov):
    quality_rows = [[r["data"], r["test"], r["frames"], f"{r['val_nll']:.3f}", f"{r['val_spearman']:.2f}",
                     f"{r['spearman_energy']:.2f}", f"{r['spearman_atoms']:.2f}",
                     f"{100 * r['within_1sigma']:.0f} %", f"{100 * r['within_2sigma']:.0f} %", f"{r['mean_sigma_e_mev']:.3g}",
                     f"{r['mean_abs_error_mev']:.3g}", f"{r['mean_force_error_mev']:.3g}"]
                    for r in data.get("quality", [])]
    lines = ["# Last-layer uncertainty: ranking, calibration, active learning", "", "```", json.dumps(prov, indent=1), "```", "",
             "`python benchmarks/uncertainty_quality.py` (module docstring). σ fitted by "
             "`python -m nequip_flash_ace.uncertainty` on each run's own training and validation splits; the validation NLL "
             "is the mean of ln σ² + ΔE²/σ² over the validation structures (eV, lower is better), the validation Spearman "
             "that of σ_E with |ΔE| there; everything else is on test splits.", ""]
    if quality_rows:
        lines += ["## Ranking and calibration", "",
                  markdown_table(["data", "test set", "frames", "val NLL", "val Spearman", "Spearman σ_E vs |ΔE|", "Spearman σ_i vs |ΔF_i|", "|ΔE| ≤ 1σ",
                                  "|ΔE| ≤ 2σ", "mean σ_E (meV)", "mean |ΔE| (meV)", "mean |ΔF_i| (meV/Å)"], quality_rows)]
        acac = {r["test"]: r for r in data["quality"] if r["data"] == "acac"}
        if len(acac) == 2:
            ratio = acac["test_MD_600K.xyz"]["mean_sigma_e_mev"] / acac["test_MD_300K.xyz"]["mean_sigma_e_mev"]
            err_ratio = acac["test_MD_600K.xyz"]["mean_abs_error_mev"] / acac["test_MD_300K.xyz"]["mean_abs_error_mev"]
            lines += ["", f"Acetylacetone: mean σ_E at 600 K / at 300 K = **{ratio:.2f}** (the mean |ΔE| grows {err_ratio:.2f}×)."]
        lines += ["", "![calibration](uncertainty_calibration.png)"]
    if data.get("active"):
        rows = [[r["seed"], r["epochs"], f"{1e3 * r['start_test_force_mae']:.1f}", f"{1e3 * r['uncertainty_test_force_mae']:.1f}",
                 f"{1e3 * r['random_test_force_mae']:.1f}", f"{r['uncertainty_test_force_mae'] / r['random_test_force_mae']:.2f}"]
                for r in data["active"]]
        mean_ratio = np.mean([r["uncertainty_test_force_mae"] for r in data["active"]]) / np.mean([r["random_test_force_mae"] for r in data["active"]])
        lines += ["", "## Active learning on silicon", "",
                  "100 random training structures, then 100 more chosen by the highest σ_E or at random from the rest "
                  "of the pool; each model trained from scratch for the same epochs with the same seed; test force MAE "
                  "(meV/Å) of the best-validation checkpoint.", "",
                  markdown_table(["seed", "epochs", "100 start", "+100 by σ", "+100 random", "σ / random"], rows), "",
                  f"Mean over seeds: chosen by σ / random = **{mean_ratio:.2f}**."]
    (RESULTS / "uncertainty.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "uncertainty.json").write_text(json.dumps(dict(data, provenance=prov), indent=1))
    plot(data.get("quality", []))
    print("\n".join(lines))


def plot(quality_results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not quality_results:
        return
    fig, axes = plt.subplots(1, len(quality_results), figsize=(3.6 * len(quality_results), 3.6), squeeze=False)
    for ax, r in zip(axes[0], quality_results):
        sig = 1e3 * np.asarray(r["curve"]["sigma_e"])
        err = 1e3 * np.asarray(r["curve"]["abs_err"])
        # binned by σ: RMSE of the errors in each bin against the bin's RMS σ (on the diagonal if calibrated)
        edges = np.quantile(sig, np.linspace(0, 1, 9))
        idx = np.clip(np.searchsorted(edges, sig, side="right") - 1, 0, 7)
        xs = [np.sqrt(np.mean(sig[idx == b] ** 2)) for b in range(8) if (idx == b).any()]
        ys = [np.sqrt(np.mean(err[idx == b] ** 2)) for b in range(8) if (idx == b).any()]
        ax.scatter(sig, err, s=3, alpha=0.3)
        ax.plot(xs, ys, "r-o", ms=3, label="binned RMSE")
        top = max(sig.max(), err.max())
        ax.plot([0, top], [0, top], "k--", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("σ_E (meV)")
        ax.set_ylabel("|ΔE| (meV)")
        ax.set_title(f"{r['data']} {r['test'].replace('.xyz', '')}", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "uncertainty_calibration.png", dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", nargs="+", choices=["quality", "active"], default=["quality", "active"])
    parser.add_argument("--data", nargs="+", choices=sorted(DATASETS), help="quality: only these data sets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=30, help="active learning: epochs of every training")
    parser.add_argument("--rewrite", action="store_true")
    args = parser.parse_args()
    saved = RESULTS / "uncertainty.json"
    data = json.loads(saved.read_text()) if saved.exists() else {}
    prov = data.pop("provenance", None) or provenance()
    if not args.rewrite:
        prov = provenance()
        if "quality" in args.part:
            new = run_quality(args.data)
            keep = [r for r in data.get("quality", []) if args.data and r["data"] not in args.data]
            data["quality"] = keep + new
            write_report(data, prov)
        if "active" in args.part:
            data["active"] = run_active(args.seeds, args.epochs)
    write_report(data, prov)


if __name__ == "__main__":
    main()
