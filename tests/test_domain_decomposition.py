"""LAMMPS ML-IAP domain decomposition, emulated without LAMMPS.

What LAMMPS does across MPI ranks with ``pair_style mliap unified``: every rank owns
the atoms of its spatial domain and holds ghost copies (periodic images included) of
all atoms within the cutoff of its own; it calls the model on its local + ghost atoms
with the pair list of its local atoms, and between layers the model's ghost-exchange
hooks (``enable_LAMMPSMLIAPGhostExchange``) ask LAMMPS to overwrite ghost features with
those of their owners (``forward_exchange``) and, in the backward pass, to add ghost
gradients back to the owners (``reverse_exchange``). Pair forces on ghosts are reverse
communicated to their owners.

Here each "rank" runs in its own thread with a fake ``lmp_data`` whose exchanges
go through shared memory in lock step, exactly mirroring that data flow. The summed
local energies and the reverse-communicated forces must equal the single-domain
result (float64, 1e-10).
"""

import threading

import numpy as np
import pytest
import torch
from ase.build import bulk

from nequip.data import AtomicDataDict, compute_neighborlist_, from_ase
from nequip.model.modify_utils import get_all_modifiers, modify
from nequip.nn._ghost_exchange_base import NoOpGhostExchangeModule
from nequip.nn._ghost_exchange_lmp_mliap import LAMMPSMLIAPGhostExchangeModule

from helpers import build_model
from model_configs import ATTENTION_NU2, BACKBONE_NU3

K = AtomicDataDict
R_MAX = 4.0


class _Exchange:
    """Shared memory and lock-step barrier for the emulated ranks."""

    def __init__(self, num_ranks):
        self.barrier = threading.Barrier(num_ranks, timeout=120)
        self.board = {}


class FakeLMPData:
    """The parts of LAMMPS' ML-IAP data object the host's ghost exchange uses."""

    def __init__(self, rank, nlocal, ghost_owner, exchange, ranks_ghosts, communicate=True):
        self.communicate = communicate  # False: a broken exchange, for the control test
        self.rank = rank
        self.nlocal = nlocal
        self.ntotal = nlocal + len(ghost_owner)
        self.ghost_owner = ghost_owner  # list of (owner rank, owner local index)
        self.exchange = exchange
        self.ranks_ghosts = ranks_ghosts  # all ranks' ghost_owner lists, for reverse comm

    def forward_exchange(self, src, out, ncols):
        ex = self.exchange
        ex.board[self.rank] = src[: self.nlocal].detach().clone()
        ex.barrier.wait()
        out.zero_()
        out[: self.nlocal] = src[: self.nlocal]
        for g, (owner_rank, owner_idx) in enumerate(self.ghost_owner):
            if self.communicate:
                out[self.nlocal + g] = ex.board[owner_rank][owner_idx]
        ex.barrier.wait()

    def reverse_exchange(self, grad, gout, ncols):
        ex = self.exchange
        ex.board[self.rank] = grad[self.nlocal :].detach().clone()
        ex.barrier.wait()
        gout.zero_()
        gout[: self.nlocal] = grad[: self.nlocal]
        for rank, ghosts in enumerate(self.ranks_ghosts):
            ghost_grads = ex.board[rank]
            for g, (owner_rank, owner_idx) in enumerate(ghosts):
                if owner_rank == self.rank:
                    gout[owner_idx] += ghost_grads[g]
        ex.barrier.wait()


def _decompose(atoms, num_ranks, r_max=R_MAX):
    """Split a periodic box into slabs along a; build local/ghost atoms and pair lists."""
    cell = atoms.cell[:]
    frac = atoms.get_scaled_positions(wrap=True)
    pos = frac @ cell
    n = len(atoms)
    owner_rank = np.minimum((frac[:, 0] * num_ranks).astype(int), num_ranks - 1)
    local_index = np.zeros(n, dtype=int)
    for r in range(num_ranks):
        idx = np.where(owner_rank == r)[0]
        local_index[idx] = np.arange(len(idx))
    shifts = np.array([[i, j, k] for i in (-2, -1, 0, 1, 2) for j in (-2, -1, 0, 1, 2) for k in (-2, -1, 0, 1, 2)])
    domains = []
    for r in range(num_ranks):
        local = np.where(owner_rank == r)[0]
        ghost_key, ghost_pos, ghost_owner, ghost_atom = {}, [], [], []
        pair_i, pair_j, rij = [], [], []
        for li, a in enumerate(local):
            for b in range(n):
                for s in shifts:
                    p = pos[b] + s @ cell
                    d = p - pos[a]
                    dist = np.linalg.norm(d)
                    if dist == 0.0 or dist >= r_max:
                        continue
                    if owner_rank[b] == r and not s.any():
                        j = local_index[b]
                    else:
                        key = (b, tuple(s))
                        if key not in ghost_key:
                            ghost_key[key] = len(local) + len(ghost_pos)
                            ghost_pos.append(p)
                            ghost_owner.append((int(owner_rank[b]), int(local_index[b])))
                            ghost_atom.append(b)
                        j = ghost_key[key]
                    pair_i.append(li)
                    pair_j.append(j)
                    rij.append(d)
        domains.append(
            dict(
                local=local,
                ghost_atom=np.array(ghost_atom, dtype=int),
                ghost_owner=ghost_owner,
                pair_i=np.array(pair_i),
                pair_j=np.array(pair_j),
                rij=np.array(rij),
                types=np.concatenate([atoms.numbers[local], atoms.numbers[np.array(ghost_atom, dtype=int)]]),
            )
        )
    return domains


def _mliap_model(config):
    """The model as the host's ML-IAP wrapper prepares it: ghost exchange on, energy only."""
    model = build_model(config, "float64")
    n_hooks = sum(isinstance(m, NoOpGhostExchangeModule) for m in model.modules())
    # every layer carries one (the first one idles: its type-embedding features are known for ghosts)
    assert n_hooks == config["num_layers"]
    modifiers = get_all_modifiers(model)
    assert "enable_LAMMPSMLIAPGhostExchange" in modifiers
    # modifiers act in place: the reference is a second build (same seed, same weights)
    mliap = modify(build_model(config, "float64"), [{"modifier": "enable_LAMMPSMLIAPGhostExchange"}])
    replaced = [m for m in mliap.modules() if isinstance(m, LAMMPSMLIAPGhostExchangeModule)]
    assert len(replaced) == n_hooks
    assert not any(type(m) is NoOpGhostExchangeModule for m in mliap.modules())
    assert not any(isinstance(m, LAMMPSMLIAPGhostExchangeModule) for m in model.modules())
    if "disable_ForceStressOutput" in modifiers:
        mliap = modify(mliap, [{"modifier": "disable_ForceStressOutput"}])
    else:
        mliap.model = mliap.model.func
    return model, mliap


def _run_domains(mliap, atoms, domains, type_of_number, communicate=True):
    num_ranks = len(domains)
    exchange = _Exchange(num_ranks)
    ranks_ghosts = [d["ghost_owner"] for d in domains]
    results = [None] * num_ranks
    errors = []

    def work(r):
        try:
            d = domains[r]
            lmp = FakeLMPData(r, len(d["local"]), d["ghost_owner"], exchange, ranks_ghosts, communicate)
            rij = torch.tensor(d["rij"], dtype=torch.float64, requires_grad=True)
            data = {
                K.EDGE_VECTORS_KEY: rij,
                K.EDGE_INDEX_KEY: torch.tensor(np.stack([d["pair_i"], d["pair_j"]]), dtype=torch.int64),
                K.ATOM_TYPE_KEY: torch.tensor([type_of_number[z] for z in d["types"]], dtype=torch.int64),
                K.LMP_MLIAP_DATA_KEY: lmp,
                K.NUM_LOCAL_GHOST_NODES_KEY: torch.tensor([lmp.nlocal, lmp.ntotal - lmp.nlocal]),
            }
            out = mliap(data)
            per_atom = out[K.PER_ATOM_ENERGY_KEY].view(-1)[: lmp.nlocal]
            energy = per_atom.sum()
            (edge_grad,) = torch.autograd.grad(energy, rij)
            results[r] = (per_atom.detach(), edge_grad.detach())
        except BaseException as e:  # surface errors from the worker threads
            errors.append(e)
            exchange.barrier.abort()

    threads = [threading.Thread(target=work, args=(r,)) for r in range(num_ranks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]

    n = len(atoms)
    energies = np.zeros(n)
    forces = np.zeros((n, 3))
    for d, (per_atom, edge_grad) in zip(domains, results):
        energies[d["local"]] = per_atom.numpy()
        g = edge_grad.numpy()
        owners = np.concatenate([d["local"], d["ghost_atom"]])
        # rij = r_j - r_i: F_i += dE/drij, F_j -= dE/drij; ghost forces go to their owners
        np.add.at(forces, owners[d["pair_i"]], g)
        np.add.at(forces, owners[d["pair_j"]], -g)
    return energies, forces


def _system(seed):
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True) * (2, 2, 2)
    rng = np.random.default_rng(seed)
    atoms.symbols[rng.choice(len(atoms), 10, replace=False)] = "O"
    atoms.symbols[rng.choice(len(atoms), 6, replace=False)] = "H"
    atoms.rattle(0.1, seed=seed)
    return atoms


TYPE_OF_NUMBER = {1: 0, 29: 1, 8: 2}  # H, C, O types; Cu stands in for the C type


def _reference(full, atoms):
    data = compute_neighborlist_(from_ase(atoms), r_max=R_MAX)
    data[K.ATOM_TYPE_KEY] = torch.tensor([TYPE_OF_NUMBER[z] for z in atoms.numbers])
    ref = full(data)
    return ref[K.PER_ATOM_ENERGY_KEY].view(-1).detach().numpy(), ref[K.FORCE_KEY].detach().numpy()


@pytest.mark.parametrize(
    "config",
    [
        ATTENTION_NU2,
        dict(ATTENTION_NU2, attention_score_inputs="environment"),
        dict(ATTENTION_NU2, attention_score_inputs="descriptor"),
        dict(BACKBONE_NU3, pair_potential=None, num_layers=3),
    ],
    ids=["attention", "attention-environment", "attention-descriptor", "backbone3layers"],
)
@pytest.mark.parametrize("num_ranks", [2, 3])
def test_domain_decomposition_matches_single_domain(config, num_ranks):
    config = dict(config, r_max=R_MAX)
    atoms = _system(num_ranks)
    full, mliap = _mliap_model(config)
    ref_e, ref_f = _reference(full, atoms)

    domains = _decompose(atoms, num_ranks)
    assert sum(len(d["local"]) for d in domains) == len(atoms)
    assert all(len(d["ghost_atom"]) > 0 for d in domains)
    energies, forces = _run_domains(mliap, atoms, domains, TYPE_OF_NUMBER)

    de = abs(energies.sum() - ref_e.sum())
    df = np.abs(forces - ref_f).max()
    print(f"{num_ranks} ranks: |dE| = {de:.2e} eV, max |dF| = {df:.2e} eV/A")
    np.testing.assert_allclose(energies, ref_e, atol=1e-10, rtol=0)
    assert de < 1e-10
    assert df < 1e-10


def test_control_without_ghost_exchange_the_result_is_wrong():
    """The emulation has teeth: skipping the forward exchange breaks the agreement."""
    config = dict(ATTENTION_NU2, r_max=R_MAX)
    atoms = _system(2)
    full, mliap = _mliap_model(config)
    ref_e, _ = _reference(full, atoms)
    energies, _ = _run_domains(mliap, atoms, _decompose(atoms, 2), TYPE_OF_NUMBER, communicate=False)
    assert np.abs(energies - ref_e).max() > 1e-4
