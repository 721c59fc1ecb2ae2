"""Product basis microbenchmark: sparse evaluation vs the previous dense one, and the cost
of body order and l_max for the product basis alone and for the whole model.

    python benchmarks/product_basis_bench.py            # 1000 atoms, all settings (~5 min)
    python benchmarks/product_basis_bench.py --quick    # 200 atoms, fewer repeats

Settings: ν = 1..4 at l_max = 2 and l_max = 1..3 at ν = 3. The product basis runs as
in layer 0 of the default model (32 channels, outputs 0e + 1o, 2 species, float32);
``forward`` is one call, ``fwd+bwd`` adds the backward to A and W of a scalar of the
output. The dense reference is ``tests/dense_product_basis.py`` (the package's previous
code); it is skipped where its largest per-atom intermediate would exceed
``--dense-limit-gb``. Peak memory is the high-water mark of one fwd+bwd
(`_harness.PeakMemory`). The whole-model column is the default Flash-ACE with that
ν / l_max, energy + forces on a Cu–Au cell, eager. Timings are medians, round-robin
between sparse and dense. Writes benchmarks/results/product_basis[_quick].{md,json}.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _harness import FLASH_ACE, RESULTS, PeakMemory, atoms_to_data, build_peer, bulk_cuau, markdown_table, model_step, provenance, timeit  # noqa: E402
from dense_product_basis import DenseProductBasis  # noqa: E402

from nequip_flash_ace.nn import ProductBasis  # noqa: E402
from nequip_flash_ace.nn.coupling import count_symmetric_couplings  # noqa: E402

SETTINGS = [(2, nu) for nu in (1, 2, 3, 4)] + [(1, 3), (3, 3)]
NUM_FEATURES = 32
IRREPS_OUT = "32x0e+32x1o"
NUM_TYPES = 2


def dense_peak_gb(l_max, nu, num_atoms):
    """Largest intermediate of the dense evaluation: (atoms, D^k * M, c) at k = ν, all outputs."""
    d = (l_max + 1) ** 2
    m_total = sum(2 * L + 1 for L, p in ((0, 1), (1, -1)) if count_symmetric_couplings(l_max, nu, L, p))
    return num_atoms * d**nu * m_total * NUM_FEATURES * 4 / 1e9


def run_module(module, a, types, mode):
    if mode == "forward":
        with torch.no_grad():
            return lambda: module(a, types)

    def step():
        out = module(a, types)
        out.square().sum().backward()
        module.zero_grad(set_to_none=True)
        a.grad = None

    return step


def bench_setting(l_max, nu, num_atoms, repeats, dense_limit_gb):
    torch.manual_seed(0)
    sparse = ProductBasis(NUM_FEATURES, l_max, IRREPS_OUT, nu, NUM_TYPES)
    a = torch.randn(num_atoms, sparse.irreps_in.dim, requires_grad=True)
    types = torch.randint(0, NUM_TYPES, (num_atoms,))
    modules = {"sparse": sparse}
    row = {"l_max": l_max, "nu": nu, "monomials": sparse.num_monomials,
           "species_contraction": sparse.species_contraction}
    est = dense_peak_gb(l_max, nu, num_atoms)
    if est <= dense_limit_gb:
        dense = DenseProductBasis(NUM_FEATURES, l_max, IRREPS_OUT, nu, NUM_TYPES)
        dense.load_state_dict(sparse.state_dict(), strict=False)
        modules["dense"] = dense
    else:
        row["dense_skipped"] = f"largest intermediate ~{est:.1f} GB"
    for mode in ("forward", "fwd+bwd"):
        steps = {name: run_module(m, a, types, mode) for name, m in modules.items()}
        for fn in steps.values():
            fn()  # warm-up
        times = {name: [] for name in steps}
        for _ in range(repeats):  # round-robin
            for name, fn in steps.items():
                times[name].append(timeit(fn, repeats=1, warmup=0))
        for name, ts in times.items():
            row[f"{name}_{mode}_ms"] = 1e3 * sorted(ts)[len(ts) // 2]
    for name, module in modules.items():
        step = run_module(module, a, types, "fwd+bwd")
        with PeakMemory() as pm:
            step()
        row[f"{name}_peak_mb"] = pm.peak_mb
    return row


def bench_model(l_max, nu, num_atoms, repeats):
    model = build_peer(dict(FLASH_ACE, l_max=l_max, correlation_order=nu), ["Cu", "Au"], 5.0)
    data = atoms_to_data(bulk_cuau(num_atoms), 5.0)
    return 1e3 * timeit(model_step(model, data, "ef"), repeats=repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--atoms", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dense-limit-gb", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    num_atoms = args.atoms or (200 if args.quick else 1000)
    repeats = 3 if args.quick else 5
    rows = []
    for l_max, nu in SETTINGS:
        row = bench_setting(l_max, nu, num_atoms, repeats, args.dense_limit_gb)
        row["model_ef_ms"] = bench_model(l_max, nu, num_atoms, repeats)
        rows.append(row)
        print(json.dumps(row), flush=True)

    def fmt(row, key):
        return f"{row[key]:.1f}" if key in row else "—"

    def ratio(row, key):
        return f"{row['dense_' + key] / row['sparse_' + key]:.1f}×" if "dense_" + key in row else "—"

    table = markdown_table(
        ["l_max", "ν", "monomials", "sparse fwd (ms)", "dense fwd (ms)", "speed-up fwd",
         "sparse fwd+bwd (ms)", "dense fwd+bwd (ms)", "speed-up fwd+bwd",
         "sparse peak (MB)", "dense peak (MB)", "whole model E+F (ms)"],
        [[r["l_max"], r["nu"], r["monomials"], fmt(r, "sparse_forward_ms"), fmt(r, "dense_forward_ms"),
          ratio(r, "forward_ms"), fmt(r, "sparse_fwd+bwd_ms"), fmt(r, "dense_fwd+bwd_ms"), ratio(r, "fwd+bwd_ms"),
          fmt(r, "sparse_peak_mb"), fmt(r, "dense_peak_mb"), fmt(r, "model_ef_ms")] for r in rows],
    )
    prov = provenance()
    suffix = "_quick" if args.quick else ""
    text = (
        f"# Product basis: sparse vs dense, {num_atoms} atoms, {NUM_FEATURES} channels, "
        f"{IRREPS_OUT}, {NUM_TYPES} species, float32, {args.threads} threads\n\n"
        f"Command: `python benchmarks/product_basis_bench.py {' '.join(sys.argv[1:])}`; "
        f"machine: {prov['machine']}, torch {prov['torch']}, commit {prov['git_commit']}.\n\n"
        + table + "\n\nDense skipped: "
        + (", ".join(f"l_max {r['l_max']} ν {r['nu']} ({r['dense_skipped']})" for r in rows if "dense_skipped" in r) or "none")
        + ".\n"
    )
    (RESULTS / f"product_basis{suffix}.md").write_text(text)
    (RESULTS / f"product_basis{suffix}.json").write_text(json.dumps({"provenance": prov, "atoms": num_atoms, "rows": rows}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
