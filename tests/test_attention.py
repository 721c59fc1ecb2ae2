"""Neighbour attention: exact derivatives, smoothness at the cutoff, invariances, limits."""

import numpy as np
import pytest
import torch

from nequip.data import AtomicDataDict
from nequip_flash_ace.nn import NeighbourAttention, smooth_segment_softmax
from nequip_flash_ace.nn.layer import FlashACELayer

from helpers import build_model, energy_and_forces, make_data
from model_configs import ATTENTION_NU2

# every option that changes what the attention or the normalisation computes; the
# physics tests below run on each (on top of ATTENTION_NU2: 2 layers, 2 heads, τ = 1)
VARIANTS = {
    "backbone": dict(num_heads=0),
    "attention": dict(),
    "backbone-coordination": dict(num_heads=0, neighbour_normalization="coordination"),
    "attention-coordination": dict(neighbour_normalization="coordination"),
    "attention-environment": dict(attention_score_inputs="environment"),
    "attention-descriptor": dict(attention_score_inputs="descriptor"),
    "attention-descriptor-coordination": dict(attention_score_inputs="descriptor", neighbour_normalization="coordination"),
}
WITH_ATTENTION = [k for k, v in VARIANTS.items() if v.get("num_heads", 2) > 0]


def _coordination(envelope, centers, num_centers):
    return 1.0 + torch.zeros(num_centers, 1, dtype=envelope.dtype).index_add(0, centers, envelope.reshape(-1, 1))


def _random_graph(num_centers=5, num_edges=17, heads=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(num_edges, heads, generator=gen, dtype=torch.float64)
    envelope = torch.rand(num_edges, 1, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    sink = torch.randn(num_centers, heads, generator=gen, dtype=torch.float64)
    centers = torch.randint(0, num_centers, (num_edges,), generator=gen)
    return scores, envelope, sink, centers


def test_segment_softmax_matches_dense_reference():
    scores, envelope, sink, centers = _random_graph()
    a = smooth_segment_softmax(scores, envelope, sink, centers, 5)
    for i in range(5):
        mask = centers == i
        num = envelope[mask] * torch.exp(scores[mask])
        den = torch.exp(sink[i]) + num.sum(0)
        torch.testing.assert_close(a[mask], num / den, atol=1e-14, rtol=0)


def test_segment_softmax_is_stable_for_huge_scores():
    scores, envelope, sink, centers = _random_graph()
    a = smooth_segment_softmax(scores, envelope, sink, centers, 5)
    shifted = smooth_segment_softmax(scores + 800.0, envelope, sink + 800.0, centers, 5)
    assert torch.isfinite(shifted).all()
    torch.testing.assert_close(a, shifted, atol=1e-12, rtol=0)
    # an edge with zero envelope and an enormous score changes nothing and stays finite
    scores2, envelope2 = scores.clone(), envelope.clone()
    scores2[0] = 1e4
    envelope2[0] = 0.0
    b = smooth_segment_softmax(scores2, envelope2, sink, centers, 5)
    assert torch.isfinite(b).all() and (b[0] == 0).all()


def test_segment_softmax_near_cutoff_edge_keeps_float32_precision():
    """A high-scoring edge just inside the cutoff (f_c ~ 1e-43) next to ordinary ones, in
    float32: the weights must match float64 to float32 precision. Shifting by the largest
    score instead of the largest term put every other term and the sink into float32's
    subnormal range (e^-100), where they keep a few bits: errors of percents."""
    scores = torch.tensor([[0.0], [0.5], [100.0]], dtype=torch.float32)
    envelope = torch.tensor([[0.9], [0.7], [1e-43]], dtype=torch.float32)
    sink = torch.zeros(1, 1, dtype=torch.float32)
    centers = torch.zeros(3, dtype=torch.long)
    a = smooth_segment_softmax(scores, envelope, sink, centers, 1)
    reference = smooth_segment_softmax(scores.double(), envelope.double(), sink.double(), centers, 1)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a.double(), reference, atol=0, rtol=1e-5)


def test_segment_softmax_gradcheck_and_gradgradcheck():
    scores, envelope, sink, centers = _random_graph(num_centers=4, num_edges=9, heads=2)
    inputs = tuple(t.clone().requires_grad_(True) for t in (scores, envelope, sink))

    def fn(s, e, b):
        return smooth_segment_softmax(s, e, b, centers, 4)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("score_inputs", ["pair", "environment"])
def test_neighbour_attention_gradgradcheck(score_inputs):
    torch.manual_seed(0)
    att = NeighbourAttention(
        num_scalar_features=4, num_radial=3, num_heads=2, head_dim=2, num_types=2, initial_temperature=0.7,
        score_inputs=score_inputs,
    ).double()
    centers = torch.tensor([0, 0, 1, 2, 2, 2])
    neighbours = torch.tensor([1, 2, 0, 0, 1, 1])
    types = torch.tensor([0, 1, 1])
    h = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    radial = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    env = (torch.rand(6, 1, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)

    def fn(h, radial, env):
        return att(h, h, radial, env, centers, neighbours, types, _coordination(env, centers, 3))

    assert torch.autograd.gradcheck(fn, (h, radial, env))
    assert torch.autograd.gradgradcheck(fn, (h, radial, env))


@pytest.mark.parametrize("score_inputs", ["pair", "environment", "descriptor"])
def test_attention_starts_uniform_in_the_model(score_inputs):
    """Default initialisation: w_ij = f_c(r_ij) for every head and edge, whatever the
    (random) query/key projections and features — training starts from the backbone."""
    config = dict(
        ATTENTION_NU2, attention_temperature_init=0.0, num_heads=4, num_features=8, attention_score_inputs=score_inputs
    )
    model = build_model(config, "float64")
    rng = np.random.default_rng(3)
    data = make_data(rng.uniform(0, 5, (9, 3)), rng.integers(0, 3, 9), config["r_max"], cell=np.eye(3) * 5.0)
    seen = []

    def record(module, args, kwargs, output):
        seen.append((output, kwargs["edge_envelope"]))

    layers = [m for m in model.modules() if isinstance(m, NeighbourAttention)]
    assert len(layers) == config["num_layers"]
    hooks = [m.register_forward_hook(record, with_kwargs=True) for m in layers]
    model(dict(data))
    for h in hooks:
        h.remove()
    assert len(seen) == config["num_layers"]
    for w, envelope in seen:
        assert w.shape == (envelope.shape[0], 4) and w.dtype == torch.float64
        assert envelope.min() < 1.0  # some edges are inside the cutoff's decay
        torch.testing.assert_close(w, envelope.reshape(-1, 1).expand(-1, 4), atol=1e-12, rtol=0)
    # and the projections are not zero: the weights are uniform because τ = 0
    for m in layers:
        assert (m.score_temperature == 0).all()
        assert any(p.abs().sum() > 0 for p in m.query.parameters())


def _descriptor_queries(model, positions, atom_types):
    queries = []
    hooks = [m.register_forward_hook(lambda mod, args, kwargs, out: queries.append(kwargs["center_scalars"].detach()),
                                     with_kwargs=True) for m in model.modules() if isinstance(m, NeighbourAttention)]
    model(dict(make_data(positions, atom_types, ATTENTION_NU2["r_max"])))
    for h in hooks:
        h.remove()
    return queries[0]


def test_descriptor_query_sees_angles_that_two_body_queries_miss():
    """score_inputs="descriptor": the query reads the centre's scalars followed by an
    invariant many-body descriptor. A centre with two neighbours at the same distance,
    90° and 150° apart, has the same species, coordination and radial summaries (all that
    ``pair`` and ``environment`` queries read), but not the same descriptor; rotating the
    whole cluster leaves the descriptor unchanged."""
    from scipy.spatial.transform import Rotation

    config = dict(ATTENTION_NU2, num_layers=1, correlation_order=3, attention_score_inputs="descriptor")
    model = build_model(config, "float64")
    width = config["num_features"]

    def cluster(angle_deg):
        a = np.deg2rad(angle_deg)
        return np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [1.5 * np.cos(a), 1.5 * np.sin(a), 0.0]])

    types = [1, 0, 0]
    q90, q150 = _descriptor_queries(model, cluster(90), types), _descriptor_queries(model, cluster(150), types)
    assert q90.shape == (3, width + 8)
    # the centre's own scalars (its type embedding, in the first layer) are the same
    torch.testing.assert_close(q90[0, :width], q150[0, :width], rtol=0, atol=1e-14)
    assert (q90[0, width:] - q150[0, width:]).abs().max() > 1e-4
    rotation = Rotation.from_euler("zyx", [0.3, -1.1, 2.0]).as_matrix()
    q_rotated = _descriptor_queries(model, cluster(90) @ rotation.T + 0.7, types)
    torch.testing.assert_close(q_rotated, q90, rtol=0, atol=1e-12)
    # an isolated atom's descriptor is zero (no neighbours, no A)
    q_alone = _descriptor_queries(model, np.array([[0.0, 0.0, 0.0], [9.0, 0.0, 0.0]]), [1, 0])
    assert q_alone.shape[0] == 2 and torch.all(q_alone[:, width:] == 0)


def test_checkpoint_without_temperature_loads_with_temperature_one():
    """Models saved before the learned temperature computed q·k/√d: they load with τ = 1."""
    att = NeighbourAttention(4, 3, 2, 2, 2)
    state = {k: v for k, v in att.state_dict().items() if k != "score_temperature"}
    fresh = NeighbourAttention(4, 3, 2, 2, 2)
    fresh.load_state_dict(state, strict=True)
    assert (fresh.score_temperature == 1).all()


def test_checkpoint_without_normalized_scores_loads_raw_scores():
    """Models saved before the normalised scores used the raw q·k: they load as such, and
    give the weights they were trained with."""
    torch.manual_seed(2)
    att = NeighbourAttention(4, 3, 2, 2, 2, initial_temperature=0.9).double()
    state = {k: v for k, v in att.state_dict().items() if k != "normalized_scores"}
    old = NeighbourAttention(4, 3, 2, 2, 2).double()
    old.load_state_dict(state, strict=True)
    assert not old.normalize and float(old.normalized_scores) == 0.0
    new = NeighbourAttention(4, 3, 2, 2, 2).double()
    new.load_state_dict(att.state_dict(), strict=True)
    assert new.normalize
    centers, neighbours = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 0])
    h, radial = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    raw = (old.query(h)[centers] * (old.key_features(h)[neighbours] + old.key_radial(radial))).view(-1, 2, 2).sum(-1)
    args = (h, h, radial, centers, neighbours, torch.ones(3, 1, dtype=torch.float64))
    torch.testing.assert_close(old.scores(*args), raw * old.score_temperature / np.sqrt(2), atol=1e-12, rtol=0)
    assert (new.scores(*args) - old.scores(*args)).abs().max() > 1e-3


def test_scores_and_their_temperature_gradient_stay_bounded_as_features_grow():
    """|s| <= sqrt(d)|τ| and |∂s/∂τ| <= sqrt(d) per edge whatever the size of the
    features that reach the query and key (a second layer reads the first one's output,
    which grows with density). With raw q·k both grew as the features squared."""
    torch.manual_seed(3)
    att = NeighbourAttention(6, 3, 2, 4, 1, initial_temperature=1.5).double()
    centers, neighbours = torch.tensor([0, 0, 1, 1, 2]), torch.tensor([1, 2, 0, 2, 1])
    radial = torch.randn(5, 3, dtype=torch.float64)
    bound = 2.0 * 1.5  # sqrt(d) |τ|, d = 4
    for scale in (1.0, 1e2, 1e4):
        h = scale * torch.randn(3, 6, dtype=torch.float64)
        s = att.scores(h, h, radial, centers, neighbours, torch.ones(3, 1, dtype=torch.float64))
        assert s.abs().max() <= bound + 1e-9, (scale, s.abs().max())
        (grad,) = torch.autograd.grad(s.sum(), att.score_temperature)
        assert grad.abs().max() <= 2.0 * 5 + 1e-9  # sqrt(d) per edge, 5 edges


def test_uniform_scores_reduce_to_plain_ace_sum():
    """With zero query and sink scores, w_ij = f_c(r_ij): attention adds nothing but the envelope."""
    att = NeighbourAttention(4, 3, 2, 2, 2).double()
    with torch.no_grad():
        for p in att.query.parameters():
            p.zero_()
    centers = torch.tensor([0, 0, 1, 2, 2, 2])
    neighbours = torch.tensor([1, 2, 0, 0, 1, 1])
    env = torch.rand(6, 1, dtype=torch.float64)
    w = att(
        torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64),
        torch.randn(6, 3, dtype=torch.float64), env, centers, neighbours, torch.tensor([0, 1, 1]),
        _coordination(env, centers, 3),
    )
    torch.testing.assert_close(w, env.expand(-1, 2), atol=1e-14, rtol=0)


@pytest.mark.parametrize("normalized", [True, False], ids=["normalized", "raw"])
def test_environment_query_matches_the_formula_atom_by_atom(normalized):
    """score_inputs="environment": s_ij = τ q̂_i · k̂_ij / √d (raw: τ q_i · k_ij / √d) with
    q_i = W_q h_i + W_e [ρ_i, ln c_i], c_i = 1 + Σ_j f_c(r_ij), ρ_i = Σ_j u_ij / c_i and
    x̂ = x / sqrt(mean(x²) + 1e-6) per head, evaluated centre by centre (float64)."""
    torch.manual_seed(1)
    att = NeighbourAttention(4, 3, 2, 2, 2, initial_temperature=0.8, score_inputs="environment",
                             normalized_scores=normalized).double()
    with torch.no_grad():
        att.sink_score.normal_()
    centers = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    neighbours = torch.tensor([1, 2, 0, 0, 1, 3, 2])
    types = torch.tensor([0, 1, 1, 0])
    h = torch.randn(4, 4, dtype=torch.float64)
    radial = torch.randn(7, 3, dtype=torch.float64)
    env = torch.rand(7, 1, dtype=torch.float64) * 0.9 + 0.05
    w = att(h, h, radial, env, centers, neighbours, types, _coordination(env, centers, 4))
    for i in range(4):
        mine = (centers == i).nonzero().view(-1)
        c = 1.0 + env[mine].sum()
        rho = radial[mine].sum(0) / c
        q = att.query(h[i : i + 1]) + att.query_environment(torch.cat([rho, c.log().view(1)]).view(1, -1))
        k = att.key_features(h[neighbours[mine]]) + att.key_radial(radial[mine])
        q, k = q.view(-1, 2, 2), k.view(-1, 2, 2)
        if normalized:
            q = q / torch.sqrt((q**2).mean(-1, keepdim=True) + 1e-6)
            k = k / torch.sqrt((k**2).mean(-1, keepdim=True) + 1e-6)
        s = (q * k).sum(-1) * att.score_temperature / np.sqrt(2)
        num = env[mine] * torch.exp(s)
        a = num / (torch.exp(att.sink_score[types[i]]) + num.sum(0))
        torch.testing.assert_close(w[mine], c * a, atol=1e-12, rtol=0)
    # the environment changes the scores: the same edges without it give other weights
    pair = NeighbourAttention(4, 3, 2, 2, 2, initial_temperature=0.8).double()
    pair.load_state_dict({k: v for k, v in att.state_dict().items() if not k.startswith("query_environment")})
    assert (pair(h, h, radial, env, centers, neighbours, types, _coordination(env, centers, 4)) - w).abs().max() > 1e-6


def test_unknown_score_inputs_are_refused():
    with pytest.raises(ValueError, match=r"`attention_score_inputs` must be one of \['pair', 'environment', 'descriptor'\], got 'density'"):
        build_model(dict(ATTENTION_NU2, attention_score_inputs="density"), "float64")


def _dimer_trimer_positions(distance):
    # a bent triatomic plus a fourth atom sliding along x towards/away from atom 0;
    # atoms 1 and 2 sit on the far side so that near r_max the only edge that
    # changes is 0-3
    return [[0.0, 0.0, 0.0], [-1.1, 0.3, 0.0], [-0.4, 1.0, 0.2], [distance, -0.3, 0.4]]


def test_force_training_double_backward_matches_finite_differences():
    """∂(Σ F²)/∂θ from double backward equals a central finite difference in θ."""
    model = build_model(ATTENTION_NU2, "float64")
    model.train()  # forces keep their graph (create_graph) only in training mode
    data = make_data(_dimer_trimer_positions(2.2), [0, 1, 2, 1], ATTENTION_NU2["r_max"])

    def force_loss():
        out = model(AtomicDataDict.to_(dict(data), "cpu"))
        return out[AtomicDataDict.FORCE_KEY].square().sum()

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    names = [n for n in params if "attention" in n][:3] + [n for n in params if "product_basis" in n][:1]
    assert any("attention" in n for n in names)
    loss = force_loss()
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    eps = 1e-6
    for name, grad in zip(names, grads):
        p = params[name]
        idx = tuple(0 for _ in p.shape)
        orig = p[idx].item()
        values = []
        for shifted in (orig + eps, orig - eps):
            with torch.no_grad():
                p[idx] = shifted
            values.append(force_loss().item())  # forces need autograd: outside no_grad
        with torch.no_grad():
            p[idx] = orig
        plus, minus = values
        numeric = (plus - minus) / (2 * eps)
        assert abs(numeric - grad[idx].item()) <= 1e-6 * max(1.0, abs(numeric)), (name, numeric, grad[idx].item())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_neighbour_crossing_cutoff_is_smooth(variant):
    """Slide one atom across r_max in 1e-4 Å steps (float64); no jump in E or F.

    The neighbour list is rebuilt at every step, so the edge appears/disappears
    exactly at r_max, as in MD.
    """
    config = dict(ATTENTION_NU2, **VARIANTS[variant])
    r_max = config["r_max"]
    model = build_model(config, "float64")
    step = 1e-4
    # atom 3 at (x, -0.3, 0.4) from atom 0; solve for x so |r_03| crosses r_max
    offsets = np.arange(-20, 21) * step
    x_cross = np.sqrt(r_max**2 - 0.3**2 - 0.4**2)
    energies, forces = [], []
    for off in offsets:
        data = make_data(_dimer_trimer_positions(x_cross + off), [0, 1, 2, 1], r_max)
        e, f, _ = energy_and_forces(model, data)
        energies.append(e.item())
        forces.append(f.numpy())
    energies = np.array(energies)
    forces = np.array(forces)
    de = np.abs(np.diff(energies))
    df = np.abs(np.diff(forces, axis=0)).max(axis=(1, 2))
    # the cutoff vanishes with its first two derivatives at r_max, so within 2e-3 Å of
    # it a neighbour contributes O((Δr/r_max)^3): no step anywhere, in E or in F
    # (measured: backbone 6e-13 eV / 1e-9 eV/Å per step, attention 3e-11 / 3e-8)
    assert de.max() < 1e-9, de.max()
    assert df.max() < 1e-6, df.max()
    # beyond the cutoff the fourth atom exerts exactly nothing on the others
    far = make_data(_dimer_trimer_positions(x_cross + 0.5), [0, 1, 2, 1], r_max)
    e_far, f_far, _ = energy_and_forces(model, far)
    assert np.abs(energies[offsets > 0] - e_far.item()).max() < 1e-12
    np.testing.assert_allclose(forces[offsets > 0], np.broadcast_to(f_far.numpy(), forces[offsets > 0].shape), atol=1e-12)
    assert np.abs(energies - e_far.item()).max() < 1e-8
    assert np.abs(forces - f_far.numpy()).max() < 1e-5
    # control: inside the cutoff the same slide does move the energy
    inside = [energy_and_forces(model, make_data(_dimer_trimer_positions(x), [0, 1, 2, 1], r_max))[0].item() for x in (2.0, 2.1)]
    assert abs(inside[0] - inside[1]) > 1e-6


@pytest.mark.parametrize("variant", WITH_ATTENTION)
def test_sharp_attention_crossing_cutoff_stays_bounded_and_continuous_in_float32(variant):
    """The same slide through r_max in float32 with sharp heads (τ = 8, so scores span
    about ±20): forces stay finite, agree with the float64 model of the same weights to
    float32 precision at every step, and do not jump (the softmax terms are shifted by
    the largest s + ln f_c, so a vanishing edge never sets the scale of the others)."""
    config = dict(ATTENTION_NU2, **VARIANTS[variant], attention_temperature_init=8.0)
    model64 = build_model(config, "float64")
    model32 = build_model(config, "float32")
    model32.load_state_dict(model64.state_dict())
    r_max = config["r_max"]
    x_cross = np.sqrt(r_max**2 - 0.3**2 - 0.4**2)
    f32, f64 = [], []
    for off in np.arange(-20, 21) * 1e-4:
        data = make_data(_dimer_trimer_positions(x_cross + off), [0, 1, 2, 1], r_max)
        f32.append(energy_and_forces(model32, data)[1].numpy())
        f64.append(energy_and_forces(model64, data)[1].numpy())
    f32, f64 = np.array(f32), np.array(f64)
    assert np.isfinite(f32).all()
    scale = 1.0 + np.abs(f64).max()
    assert np.abs(f32 - f64).max() < 1e-4 * scale, np.abs(f32 - f64).max()
    assert np.abs(np.diff(f32, axis=0)).max() < 1e-4 * scale


@pytest.mark.parametrize("variant", WITH_ATTENTION)
def test_isolated_atoms_and_atoms_without_neighbours_give_the_shift(variant):
    model = build_model(dict(ATTENTION_NU2, **VARIANTS[variant]), "float64")
    shifts = ATTENTION_NU2["per_type_energy_shifts"]
    names = ATTENTION_NU2["type_names"]
    for t in range(3):
        e, f, _ = energy_and_forces(model, make_data([[0.0, 0.0, 0.0]], [t], 4.0))
        assert abs(e.item() - shifts[names[t]]) < 1e-12
        assert torch.isfinite(f).all() and f.abs().max() == 0
    # three atoms far apart: extensive sum of shifts
    e, f, _ = energy_and_forces(model, make_data([[0, 0, 0], [10, 0, 0], [0, 10, 0]], [0, 1, 2], 4.0))
    assert abs(e.item() - sum(shifts.values())) < 1e-12


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_permutation_invariance(variant):
    """Relabelling atoms (and so reordering the edge list) permutes per-atom outputs."""
    config = dict(ATTENTION_NU2, **VARIANTS[variant])
    model = build_model(config, "float64")
    rng = np.random.default_rng(0)
    pos = rng.uniform(0, 3.0, size=(7, 3))
    types = rng.integers(0, 3, size=7)
    perm = rng.permutation(7)
    e1, f1, o1 = energy_and_forces(model, make_data(pos, types, config["r_max"]))
    data2 = make_data(pos[perm], types[perm], config["r_max"])
    # also shuffle the edge list
    eperm = torch.from_numpy(rng.permutation(data2[AtomicDataDict.EDGE_INDEX_KEY].shape[1]))
    data2[AtomicDataDict.EDGE_INDEX_KEY] = data2[AtomicDataDict.EDGE_INDEX_KEY][:, eperm]
    if AtomicDataDict.EDGE_CELL_SHIFT_KEY in data2:
        data2[AtomicDataDict.EDGE_CELL_SHIFT_KEY] = data2[AtomicDataDict.EDGE_CELL_SHIFT_KEY][eperm]
    e2, f2, o2 = energy_and_forces(model, data2)
    assert abs(e1.item() - e2.item()) < 1e-12
    torch.testing.assert_close(f1[perm], f2, atol=1e-12, rtol=0)
    torch.testing.assert_close(
        o1[AtomicDataDict.PER_ATOM_ENERGY_KEY][perm], o2[AtomicDataDict.PER_ATOM_ENERGY_KEY], atol=1e-12, rtol=0
    )


def test_num_heads_zero_is_the_plain_backbone():
    """num_heads=0 builds no attention module and matches the backbone parameter-for-parameter."""
    with_att = build_model(ATTENTION_NU2, "float64")
    without = build_model(dict(ATTENTION_NU2, num_heads=0), "float64")
    layers_on = [m for m in with_att.modules() if isinstance(m, FlashACELayer)]
    layers_off = [m for m in without.modules() if isinstance(m, FlashACELayer)]
    assert all(layer.attention is not None for layer in layers_on)
    assert all(layer.attention is None for layer in layers_off)
    names_off = {n for n, _ in without.named_parameters()}
    names_on = {n for n, _ in with_att.named_parameters()}
    assert names_off <= names_on
    assert all("attention" in n for n in names_on - names_off)
    # with attention switched to uniform scores, the energy is the backbone's with f_c-weighted edges:
    # check the plain backbone differs from attention in general (the ablation is real)
    data = make_data(_dimer_trimer_positions(2.0), [0, 1, 2, 1], 4.0)
    state_off = without.state_dict()
    with_att.load_state_dict({**with_att.state_dict(), **state_off})
    assert abs(energy_and_forces(with_att, data)[0] - energy_and_forces(without, data)[0]) > 1e-8


def test_every_parameter_gets_a_gradient():
    """No unused parameters (DDP without find_unused_parameters), with and without attention."""
    for variant in VARIANTS.values():
        model = build_model(dict(ATTENTION_NU2, **variant, per_type_energy_scales_trainable=True,
                                 per_type_energy_shifts_trainable=True), "float64")
        data = make_data(_dimer_trimer_positions(2.0), [0, 1, 2, 1], 4.0)
        model.train()
        out = model(AtomicDataDict.to_(dict(data), "cpu"))
        loss = out[AtomicDataDict.TOTAL_ENERGY_KEY].sum() + out[AtomicDataDict.FORCE_KEY].square().sum()
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
        unused = [n for (n, _), g in zip(params, grads) if g is None]
        assert not unused, unused


@pytest.mark.parametrize("variant", WITH_ATTENTION)
def test_extensivity_of_copies(variant):
    """Two far-apart copies of a structure have twice the energy (size extensivity)."""
    model = build_model(dict(ATTENTION_NU2, **VARIANTS[variant]), "float64")
    pos = np.array(_dimer_trimer_positions(2.0))
    types = [0, 1, 2, 1]
    e1, f1, _ = energy_and_forces(model, make_data(pos, types, 4.0))
    both = np.concatenate([pos, pos + 20.0])
    e2, f2, _ = energy_and_forces(model, make_data(both, types * 2, 4.0))
    assert abs(e2.item() - 2 * e1.item()) < 1e-11
    torch.testing.assert_close(f2, torch.cat([f1, f1]), atol=1e-12, rtol=0)

