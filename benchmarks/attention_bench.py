"""Benchmark: smooth neighbour attention implementations, and Flash-ACE with attention on vs off.

    python benchmarks/attention_bench.py            # full: 1k, 4k, 16k atoms
    python benchmarks/attention_bench.py --quick    # smoke run, a minute or two

Writes benchmarks/results/attention.md (and .json). Every case runs in a fresh process
so that peak RSS is the case's own.

Attention implementations, all computing the same thing, out_i = (1 + Σ_k f_c(r_ik))
Σ_j a_ij m_ij with a_ij = f_c e^{s_ij} / (e^{b_i} + Σ_k f_c e^{s_ik}):

(a) ``segment``: Flash-ACE's edge-list segment softmax (memory O(edges x heads));
(b) ``padded``: dense softmax on an (atoms x max_neighbours) padded block;
(c) ``sdpa``:   torch.nn.functional.scaled_dot_product_attention on the padded block,
    envelope as log f_c in the additive mask, sink as an extra key.

Inside a toy energy model (radial messages, scores from species and distance), we time
energy + forces (one backward) and one training step with a force loss (double
backward, what force training needs).
"""

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    RESULTS,
    atoms_to_data,
    bulk_cuau,
    fit_exponent,
    markdown_table,
    model_step,
    peak_rss_mb,
    provenance,
    run_case_in_subprocess,
    timeit,
)

R_MAX = 5.0
HEADS, HEAD_DIM, CHANNELS, NUM_RADIAL = 4, 8, 32, 8


class ToyAttentionModel(torch.nn.Module):
    """Energy from attention-weighted radial messages; only the aggregation differs."""

    def __init__(self, impl: str, num_types=2):
        super().__init__()
        self.impl = impl
        self.radial = torch.nn.Sequential(torch.nn.Linear(NUM_RADIAL, 32), torch.nn.SiLU(), torch.nn.Linear(32, CHANNELS))
        self.key_radial = torch.nn.Linear(NUM_RADIAL, HEADS * HEAD_DIM)
        self.key_type = torch.nn.Embedding(num_types, HEADS * HEAD_DIM)
        self.query_type = torch.nn.Embedding(num_types, HEADS * HEAD_DIM)
        self.sink = torch.nn.Parameter(torch.zeros(num_types, HEADS))
        self.readout = torch.nn.Sequential(torch.nn.Linear(CHANNELS, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1))
        from nequip.nn.embedding import PolynomialCutoff

        self.cutoff = PolynomialCutoff(6)

    def edge_features(self, pos, edge_index, shifts, types):
        """Envelope f_c (E, 1), messages (E, C) and keys (E, H*d) of every edge."""
        i, j = edge_index
        x = (pos[j] - pos[i] + shifts).norm(dim=-1, keepdim=True) / R_MAX
        n = torch.arange(1, NUM_RADIAL + 1, dtype=pos.dtype)
        env = self.cutoff(x)
        basis = torch.sin(math.pi * n * x) / x * env  # (E, R)
        return env, self.radial(basis), self.key_radial(basis) + self.key_type(types[j])

    def forward(self, pos, edge_index, shifts, types, padded_index):
        i = edge_index[0]
        env, messages, keys = self.edge_features(pos, edge_index, shifts, types)
        queries = self.query_type(types)[i]
        scores = (queries * keys).view(-1, HEADS, HEAD_DIM).sum(-1) / math.sqrt(HEAD_DIM)
        sink = self.sink[types]
        num = pos.shape[0]
        coordination = 1.0 + torch.zeros(num, 1, dtype=pos.dtype).index_add(0, i, env)
        out = AGGREGATORS[self.impl](scores, env, sink, messages, i, num, padded_index)
        out = out * coordination
        return self.readout(out).sum()


def aggregate_segment(scores, env, sink, messages, center, num, padded_index):
    from nequip_flash_ace.nn import smooth_segment_softmax

    a = smooth_segment_softmax(scores, env, sink, center, num)  # (E, H)
    weighted = messages.view(-1, HEADS, CHANNELS // HEADS) * a.unsqueeze(-1)
    return torch.zeros(num, HEADS, CHANNELS // HEADS, dtype=messages.dtype).index_add(0, center, weighted).view(num, CHANNELS)


def _pad(values, padded_index, fill):
    """(E, ...) edge values -> (N, K, ...) with `fill` where there is no neighbour."""
    idx, mask = padded_index
    padded = values[idx.clamp_min(0)]
    return torch.where(mask.view(mask.shape + (1,) * (values.dim() - 1)), padded, torch.full_like(padded, fill))


def aggregate_padded(scores, env, sink, messages, center, num, padded_index):
    s = _pad(scores, padded_index, -math.inf)  # (N, K, H)
    e = _pad(env, padded_index, 0.0)  # (N, K, 1)
    m = _pad(messages, padded_index, 0.0)  # (N, K, C)
    full = torch.cat([sink.unsqueeze(1), s], dim=1)  # (N, K+1, H)
    shift = full.detach().amax(dim=1, keepdim=True)
    w = torch.exp(full - shift)
    w = w * torch.cat([torch.ones_like(e[:, :1]), e], dim=1)
    a = (w / w.sum(dim=1, keepdim=True))[:, 1:]  # drop the sink column
    return (a.unsqueeze(-1) * m.view(num, -1, HEADS, CHANNELS // HEADS)).sum(1).view(num, CHANNELS)


class ToySDPAModel(ToyAttentionModel):
    """(c): SDPA needs queries and keys rather than scores, so it overrides the forward."""

    def forward(self, pos, edge_index, shifts, types, padded_index):
        i = edge_index[0]
        env, messages, keys = self.edge_features(pos, edge_index, shifts, types)
        num = pos.shape[0]
        k = _pad(keys, padded_index, 0.0).view(num, -1, HEADS, HEAD_DIM).transpose(1, 2)  # (N, H, K, d)
        v = _pad(messages, padded_index, 0.0).view(num, -1, HEADS, CHANNELS // HEADS).transpose(1, 2)
        e = _pad(env, padded_index, 0.0).view(num, 1, 1, -1)  # (N, 1, 1, K)
        q = self.query_type(types).view(num, HEADS, 1, HEAD_DIM)
        # sink: an extra key with k = 0 and additive score b; padding and f_c = 0 get -inf
        k = torch.cat([torch.zeros_like(k[:, :, :1]), k], dim=2)
        v = torch.cat([torch.zeros_like(v[:, :, :1]), v], dim=2)
        log_env = torch.log(e.clamp_min(1e-30)).masked_fill(e == 0, -math.inf)
        mask = torch.cat([self.sink[types].view(num, HEADS, 1, 1), log_env.expand(num, HEADS, 1, -1)], dim=-1)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, H, 1, C/H)
        coordination = 1.0 + torch.zeros(num, 1, dtype=pos.dtype).index_add(0, i, env)
        out = out.reshape(num, CHANNELS) * coordination
        return self.readout(out).sum()


AGGREGATORS = {"segment": aggregate_segment, "padded": aggregate_padded}


def _inputs(num_atoms, dtype):
    from nequip.data import AtomicDataDict as K

    atoms = bulk_cuau(num_atoms)
    data = atoms_to_data(atoms, R_MAX)
    pos = data[K.POSITIONS_KEY].to(dtype)
    edge_index = data[K.EDGE_INDEX_KEY]
    shifts = (data[K.EDGE_CELL_SHIFT_KEY].to(dtype) @ data[K.CELL_KEY].view(3, 3).to(dtype))
    types = data[K.ATOM_TYPE_KEY].view(-1)
    # padded (N, K) layout of the edge list, for (b) and (c)
    center = edge_index[0]
    counts = torch.bincount(center, minlength=len(atoms))
    kmax = int(counts.max())
    order = torch.argsort(center, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(center)) - starts[center[order]]
    idx = torch.full((len(atoms), kmax), -1, dtype=torch.long)
    idx[center[order], slot] = order
    return pos, edge_index, shifts, types, (idx, idx >= 0), len(atoms), len(center), kmax


def run_op_case(impl, num_atoms, mode, dtype=torch.float32):
    torch.manual_seed(0)
    pos, edge_index, shifts, types, padded, n_atoms, n_edges, kmax = _inputs(num_atoms, dtype)
    model = (ToySDPAModel("sdpa") if impl == "sdpa" else ToyAttentionModel(impl)).to(dtype)
    base = peak_rss_mb()

    def energy_forces(create_graph=False):
        p = pos.clone().requires_grad_(True)
        energy = model(p, edge_index, shifts, types, padded)
        (grad,) = torch.autograd.grad(energy, p, create_graph=create_graph)
        return energy, -grad

    def train_step():
        _, forces = energy_forces(create_graph=True)
        loss = forces.square().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    result = {"impl": impl, "atoms": n_atoms, "edges": n_edges, "max_neighbours": kmax, "mode": mode}
    try:
        t = timeit(energy_forces if mode == "ef" else train_step, repeats=3)
        result.update(seconds=t, peak_rss_mb=peak_rss_mb(), base_rss_mb=base)
    except RuntimeError as err:
        result.update(error=str(err).splitlines()[0][:160])
    return result


def run_model_case(num_heads, num_atoms, mode, num_features=32, dtype="float32"):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from helpers import build_model
    from nequip.data import AtomicDataDict as K

    data = atoms_to_data(bulk_cuau(num_atoms), R_MAX)
    model = build_model(
        dict(
            _target_="nequip_flash_ace.model.FlashACEModel", seed=0, r_max=R_MAX, type_names=["Cu", "Au"],
            avg_num_neighbors=40.0, num_layers=2, l_max=2, num_features=num_features, correlation_order=3, num_heads=num_heads, attention_score_inputs="pair",
        ),
        dtype,
    )
    base = peak_rss_mb()
    t = timeit(model_step(model, data, mode), repeats=2)
    return {"num_heads": num_heads, "atoms": len(data[K.POSITIONS_KEY]), "mode": mode, "seconds": t,
            "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base, "num_features": num_features}


def check_implementations_agree():
    """(a), (b), (c) compute the same energy and forces (float64, small system)."""
    torch.manual_seed(0)
    pos, edge_index, shifts, types, padded, *_ = _inputs(32, torch.float64)
    ref = ToyAttentionModel("segment").double()
    state = ref.state_dict()
    results = {}
    for impl in ("segment", "padded", "sdpa"):
        model = (ToySDPAModel("sdpa") if impl == "sdpa" else ToyAttentionModel(impl)).double()
        model.load_state_dict(state)
        p = pos.clone().requires_grad_(True)
        e = model(p, edge_index, shifts, types, padded)
        (g,) = torch.autograd.grad(e, p)
        results[impl] = (e.item(), g)
    for impl in ("padded", "sdpa"):
        assert abs(results[impl][0] - results["segment"][0]) < 1e-9, (impl, results[impl][0], results["segment"][0])
        assert torch.allclose(results[impl][1], results["segment"][1], atol=1e-9), impl
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.case:
        spec = json.loads(args.case)
        kind = spec.pop("kind")
        print(json.dumps(run_op_case(**spec) if kind == "op" else run_model_case(**spec)))
        return

    check_implementations_agree()
    sizes = [256, 1000] if args.quick else [1000, 4000, 16000]
    model_sizes = [256] if args.quick else [500, 1000, 2000, 4000]
    script = Path(__file__).resolve()
    op_results = []
    for n in sizes:
        for impl in ("segment", "padded", "sdpa"):
            for mode in ("ef", "train"):
                r = run_case_in_subprocess(script, {"kind": "op", "impl": impl, "num_atoms": n, "mode": mode})
                r.setdefault("impl", impl), r.setdefault("mode", mode), r.setdefault("atoms", n)
                print(r, flush=True)
                op_results.append(r)
    model_results = []
    for n in model_sizes:
        for heads in (4, 0):
            for mode in ("ef", "train"):
                r = run_case_in_subprocess(script, {"kind": "model", "num_heads": heads, "num_atoms": n, "mode": mode})
                print(r, flush=True)
                model_results.append(r)
    write_report(op_results, model_results, quick=args.quick)


def _fmt(r, key, fmt="{:.3f}"):
    return fmt.format(r[key]) if key in r else f"fails: {r.get('error', '?')}"


def write_report(op_results, model_results, quick):
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "attention_quick" if quick else "attention"
    rows = []
    for r in op_results:
        mem = f"{r['peak_rss_mb'] - r['base_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"
        rows.append([r["impl"], r["atoms"], r.get("edges", "-"), r.get("max_neighbours", "-"), r["mode"], _fmt(r, "seconds"), mem])
    text = [f"# Attention benchmark{' (quick)' if quick else ''}", "", "```", json.dumps(provenance(), indent=1), "```", ""]
    text += ["## Attention implementations inside a toy energy model (float32, 2 threads)", "",
             "`ef` = energy + forces (one backward); `train` = one step with a force loss (double backward). "
             "Memory: peak RSS of the case's process above its RSS after setup (MB).", ""]
    text.append(markdown_table(["impl", "atoms", "edges", "max nbrs", "mode", "seconds", "peak MB"], rows))
    # memory exponents of the segment implementation
    text.append("")
    for impl in ("segment", "padded", "sdpa"):
        for mode in ("ef", "train"):
            pts = [(r["atoms"], r["peak_rss_mb"] - r["base_rss_mb"]) for r in op_results
                   if r["impl"] == impl and r["mode"] == mode and "peak_rss_mb" in r and r["peak_rss_mb"] - r["base_rss_mb"] > 0]
            if len(pts) >= 2:
                x, y = zip(*pts)
                text.append(f"- memory exponent {impl}/{mode}: {fit_exponent(x, y):.3f} (fit of log peak MB vs log atoms)")
    text += ["", "## Flash-ACE model: attention on (4 heads) vs off (float32, 2 layers, l_max 2, ν=3, 32 features)", ""]
    rows = []
    for n in sorted({r["atoms"] for r in model_results}):
        for mode in ("ef", "train"):
            on = next((r for r in model_results if r["atoms"] == n and r["num_heads"] == 4 and r["mode"] == mode), None)
            off = next((r for r in model_results if r["atoms"] == n and r["num_heads"] == 0 and r["mode"] == mode), None)
            if on and off and "seconds" in on and "seconds" in off:
                rows.append([n, mode, f"{on['seconds']:.3f}", f"{off['seconds']:.3f}", f"{on['seconds'] / off['seconds']:.3f}",
                             f"{on['peak_rss_mb'] - on['base_rss_mb']:.0f}", f"{off['peak_rss_mb'] - off['base_rss_mb']:.0f}"])
    text.append(markdown_table(["atoms", "mode", "on s", "off s", "on/off", "on peak MB", "off peak MB"], rows))
    for heads in (4, 0):
        for mode in ("ef", "train"):
            pts = [(r["atoms"], r["peak_rss_mb"] - r["base_rss_mb"]) for r in model_results
                   if r["num_heads"] == heads and r["mode"] == mode and "peak_rss_mb" in r]
            if len(pts) >= 2:
                x, y = zip(*pts)
                text.append(f"- model memory exponent heads={heads}/{mode}: {fit_exponent(x, y):.3f}")
    (RESULTS / f"{stem}.md").write_text("\n".join(text) + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps({"op": op_results, "model": model_results, "provenance": provenance()}, indent=1))
    print(f"wrote {RESULTS / (stem + '.md')}")


if __name__ == "__main__":
    main()
