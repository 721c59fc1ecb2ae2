"""End to end, as a user runs it: nequip-train → report → nequip-compile (AOTInductor)
→ ASE MD with the host calculator → nequip-package; and the LAMMPS pair_nequip target,
replayed in Python with exactly the inputs pair_style nequip hands the model.

Slow (each AOTInductor compile takes about two minutes on 2 cores), so it compiles
three artefacts in all: (attention on, float64) for `ase` and `pair_nequip`, and
(attention off, float32) for `pair_nequip`.
"""

import subprocess

import numpy as np
import pytest
import torch
from ase import units
from ase.io import read
from ase.md.verlet import VelocityVerlet
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from nequip.data import AtomicDataDict, compute_neighborlist_, from_ase
from nequip.integrations.ase import NequIPCalculator
from nequip.model.inference_models.aotinductor import load_aotinductor_model
from nequip.scripts._compile_utils import PAIR_NEQUIP_INPUTS, LMP_OUTPUTS

from workflow_utils import DATA_DIR, nequip_compile, python_module, run

pytestmark = pytest.mark.slow


def _test_frame():
    return read(DATA_DIR / "test.xyz", index="0")


def _assert_calculators_agree(atoms, calc_a, calc_b, tol, stress=False):
    """Energy, forces (and stress) of two ASE calculators agree; returns atoms with ``calc_a``."""
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = calc_a, calc_b
    assert abs(a.get_potential_energy() - b.get_potential_energy()) < tol
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=tol)
    if stress:
        np.testing.assert_allclose(a.get_stress(), b.get_stress(), atol=tol)
    return a


def test_training_prints_test_metrics_and_report(run_attention_f64):
    run_dir, proc = run_attention_f64
    assert "test0_epoch/forces_mae" in proc.stdout + proc.stderr
    assert (run_dir / "best.ckpt").exists()
    out = python_module("nequip_flash_ace.report", run_dir, cwd=run_dir)
    for name in ("learning_curves.png", "parity_energy.png", "parity_forces.png"):
        path = run_dir / "report" / name
        assert path.exists() and path.stat().st_size > 5000, path
    assert "force MAE" in out.stdout


def test_compiled_model_in_ase_md_conserves_energy(ase_artifact):
    run_dir, compiled = ase_artifact
    calc = NequIPCalculator.from_compiled_model(compiled, device="cpu", chemical_species_to_atom_type_map=True)
    ref = NequIPCalculator._from_saved_model(run_dir / "best.ckpt", device="cpu", chemical_species_to_atom_type_map=True)

    atoms = _test_frame()
    # the compiled artefact and the checkpoint agree (float64)
    a1 = _assert_calculators_agree(atoms, calc, ref, tol=1e-9, stress=True)

    # forces are -dE/dx: central finite differences on the compiled model
    rng = np.random.default_rng(0)
    f = a1.get_forces()
    h = 1e-4
    for atom in rng.choice(len(atoms), 4, replace=False):
        for axis in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[atom, axis] += h
            minus.positions[atom, axis] -= h
            plus.calc, minus.calc = calc, calc
            numeric = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * h)
            assert abs(numeric - f[atom, axis]) < 1e-6, (atom, axis, numeric, f[atom, axis])

    # 200 steps of NVE: total energy stays put
    md_atoms = atoms.copy()
    md_atoms.calc = calc
    MaxwellBoltzmannDistribution(md_atoms, temperature_K=600, rng=np.random.default_rng(1))
    dyn = VelocityVerlet(md_atoms, timestep=1.0 * units.fs)
    totals = []

    def record():
        totals.append(md_atoms.get_potential_energy() + md_atoms.get_kinetic_energy())

    dyn.attach(record, interval=1)
    dyn.run(200)
    totals = np.array(totals)
    drift_per_atom = abs(totals[-1] - totals[0]) / len(md_atoms)
    fluctuation_per_atom = totals.std() / len(md_atoms)
    print(f"NVE 200 x 1 fs: drift {drift_per_atom:.3e} eV/atom, fluctuation {fluctuation_per_atom:.3e} eV/atom")
    assert np.isfinite(totals).all()
    assert drift_per_atom < 2e-4, drift_per_atom
    assert fluctuation_per_atom < 2e-4, fluctuation_per_atom


def test_nequip_package_of_the_checkpoint(run_attention_f64):
    run_dir, _ = run_attention_f64
    pkg = run_dir / "model.nequip.zip"
    run(["nequip-package", "build", run_dir / "best.ckpt", pkg], cwd=run_dir)
    calc_pkg = NequIPCalculator._from_saved_model(pkg, device="cpu", chemical_species_to_atom_type_map=True)
    calc_ckpt = NequIPCalculator._from_saved_model(run_dir / "best.ckpt", device="cpu", chemical_species_to_atom_type_map=True)
    _assert_calculators_agree(_test_frame(), calc_pkg, calc_ckpt, tol=1e-10)


def _pair_nequip_inputs(atoms, r_max, type_names):
    """What pair_style nequip passes: positions, edge index, types, cell, edge cell shifts."""
    data = compute_neighborlist_(from_ase(atoms), r_max=r_max)
    symbols = atoms.get_chemical_symbols()
    data[AtomicDataDict.ATOM_TYPE_KEY] = torch.tensor([type_names.index(s) for s in symbols], dtype=torch.long)
    if AtomicDataDict.CELL_KEY not in data:
        # LAMMPS always has a box; a non-periodic one gives zero image shifts
        data[AtomicDataDict.CELL_KEY] = torch.eye(3, dtype=torch.float64).unsqueeze(0) * 100.0
        data[AtomicDataDict.EDGE_CELL_SHIFT_KEY] = torch.zeros(
            data[AtomicDataDict.EDGE_INDEX_KEY].shape[1], 3, dtype=torch.float64
        )
    return {k: data[k] for k in PAIR_NEQUIP_INPUTS}


def _check_pair_nequip_replay(checkpoint, compiled, tol):
    model, metadata = load_aotinductor_model(str(compiled), "cpu", PAIR_NEQUIP_INPUTS, LMP_OUTPUTS)
    type_names = metadata["type_names"]
    r_max = metadata["r_max"]
    calc = NequIPCalculator._from_saved_model(checkpoint, device="cpu", chemical_species_to_atom_type_map=True)
    periodic = _test_frame()
    cluster = periodic[[i for i in range(len(periodic)) if np.linalg.norm(periodic.positions[i] - periodic.positions[0]) < 4.5]]
    cluster.pbc = False
    cluster.set_cell(None)
    worst = {}
    for name, atoms in (("periodic", periodic), ("cluster", cluster)):
        inputs = _pair_nequip_inputs(atoms, r_max, type_names)
        dtype = torch.float64
        out = model({k: v.clone() for k, v in inputs.items()})
        ref = atoms.copy()
        ref.calc = calc
        e_ref, f_ref, per_atom_ref = ref.get_potential_energy(), ref.get_forces(), ref.get_potential_energies()
        per_atom = out[AtomicDataDict.PER_ATOM_ENERGY_KEY].to(dtype).reshape(-1).numpy()
        forces = out[AtomicDataDict.FORCE_KEY].to(dtype).numpy()
        virial = out[AtomicDataDict.VIRIAL_KEY].to(dtype).reshape(3, 3).numpy()
        np.testing.assert_allclose(per_atom, per_atom_ref, atol=tol, rtol=0)
        assert abs(per_atom.sum() - e_ref) < tol * len(atoms)
        np.testing.assert_allclose(forces, f_ref, atol=tol, rtol=0)
        worst[name] = {"dE": abs(per_atom.sum() - e_ref), "dF": float(np.abs(forces - f_ref).max())}
        if atoms.pbc.all():
            # ASE stress = -virial / volume (Voigt xx yy zz yz xz xy)
            stress = -virial / atoms.get_volume()
            voigt = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
            np.testing.assert_allclose(voigt, ref.get_stress(), atol=tol, rtol=0)
            worst[name]["dstress"] = float(np.abs(voigt - ref.get_stress()).max())
    print(f"pair_nequip replay vs host ASE calculator: {worst}")


def test_pair_nequip_target_attention_float64(pair_nequip_attention_f64):
    _check_pair_nequip_replay(*pair_nequip_attention_f64, tol=1e-10)


def test_pair_nequip_target_backbone_float32(pair_nequip_backbone_f32):
    _check_pair_nequip_replay(*pair_nequip_backbone_f32, tol=1e-5)


def test_pair_allegro_target_refuses_message_passing_model(run_attention_f64):
    """A 2-layer model compiled for the ghost-atom layout would be silently wrong: refused."""
    run_dir, _ = run_attention_f64
    out = run_dir / "refused.nequip.pt2"
    cmd = ["nequip-compile", run_dir / "best.ckpt", out, "--mode", "aotinductor", "--device", "cpu", "--target", "pair_allegro"]
    proc = subprocess.run([str(c) for c in cmd], cwd=run_dir, capture_output=True, text=True, timeout=900)
    assert proc.returncode != 0
    assert not out.exists()
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("ValueError: ")]
    assert errors and "num_layers=2 is not strictly local" in errors[-1], proc.stderr[-3000:]
    assert "only num_layers=1 is allowed there" in errors[-1]


# ---------------------------------------------------------------- LAMMPS ML-IAP ----
# `nequip-prepare-lmp-mliap` builds the host's NequIPLAMMPSMLIAPWrapper, whose base
# class comes from LAMMPS' Python module (`lammps.mliap`). Where LAMMPS is not
# installed we provide that one abstract base class, so the host's real wrapper code
# (model loading, ghost-exchange modifier, energy-only model, edge forces) runs
# unchanged and is driven by an emulated LAMMPS data object.


@pytest.fixture(scope="module")
def lammps_mliap_base():
    import importlib.util
    import sys
    import types

    if importlib.util.find_spec("lammps") is not None:
        try:
            import lammps.mliap.mliap_unified_abc  # noqa: F401

            yield "lammps"
            return
        except Exception:
            pass
    stub = {name: types.ModuleType(name) for name in ("lammps", "lammps.mliap", "lammps.mliap.mliap_unified_abc")}

    class MLIAPUnified:  # the interface LAMMPS' ML-IAP "unified" base class declares
        def __init__(self, interface=None, element_types=None, ndescriptors=None, nparams=None, rcutfac=None):
            self.interface, self.element_types = interface, element_types
            self.ndescriptors, self.nparams, self.rcutfac = ndescriptors, nparams, rcutfac

    stub["lammps.mliap.mliap_unified_abc"].MLIAPUnified = MLIAPUnified
    with pytest.MonkeyPatch.context() as mp:
        for name, module in stub.items():
            mp.setitem(sys.modules, name, module)
        yield "stub"


class _LMPData:
    """Single-rank stand-in for LAMMPS' ML-IAP data: local atoms + periodic-image ghosts."""

    def __init__(self, domain, elems):
        self.nlocal = len(domain["local"])
        self.ntotal = self.nlocal + len(domain["ghost_atom"])
        self.npairs = len(domain["pair_i"])
        self.rij = np.ascontiguousarray(domain["rij"], dtype=np.float64)
        self.pair_i = domain["pair_i"].astype(np.int64)
        self.pair_j = domain["pair_j"].astype(np.int64)
        self.elems = np.asarray(elems, dtype=np.int64)
        self.eatoms = np.zeros(self.nlocal)
        self.energy = None
        self.pair_forces = None
        self._owner = [o for _, o in domain["ghost_owner"]]

    def forward_exchange(self, src, out, ncols):
        out[: self.nlocal] = src[: self.nlocal]
        for g, owner in enumerate(self._owner):
            out[self.nlocal + g] = src[owner]

    def reverse_exchange(self, grad, gout, ncols):
        gout.zero_()
        gout[: self.nlocal] = grad[: self.nlocal]
        for g, owner in enumerate(self._owner):
            gout[owner] += grad[self.nlocal + g]

    def update_pair_forces_gpu(self, edge_forces):
        self.pair_forces = edge_forces.numpy().copy()


def _check_mliap_artifact(artifact, reference_checkpoint, tol):
    from test_domain_decomposition import _decompose

    wrapper = torch.load(artifact, weights_only=False)
    calc = NequIPCalculator._from_saved_model(reference_checkpoint, device="cpu", chemical_species_to_atom_type_map=True)
    atoms = _test_frame()
    ref = atoms.copy()
    ref.calc = calc
    (domain,) = _decompose(atoms, 1, r_max=2 * wrapper.rcutfac)  # LAMMPS' pair cutoff is 2 x rcutfac
    symbols = np.array(atoms.get_chemical_symbols())
    owners = np.concatenate([domain["local"], domain["ghost_atom"]])
    elems = [wrapper.element_types.index(s) for s in symbols[owners]]
    lmp = _LMPData(domain, elems)
    wrapper.compute_forces(lmp)
    forces = np.zeros((len(atoms), 3))
    np.add.at(forces, owners[lmp.pair_i], lmp.pair_forces)
    np.add.at(forces, owners[lmp.pair_j], -lmp.pair_forces)
    de = abs(float(lmp.energy) - ref.get_potential_energy())
    df = np.abs(forces - ref.get_forces()).max()
    print(f"ML-IAP wrapper ({artifact.name}) vs ASE: |dE| {de:.2e} eV, max |dF| {df:.2e} eV/A")
    np.testing.assert_allclose(lmp.eatoms, ref.get_potential_energies(), atol=tol, rtol=0)
    assert de < tol * len(atoms)
    assert df < tol


def test_prepare_lmp_mliap_no_compile_checkpoint_and_package(run_attention_f64, lammps_mliap_base):
    from nequip.integrations.lammps_mliap.create_lmp_mliap_file import main as prepare

    run_dir, _ = run_attention_f64
    pkg = run_dir / "model.nequip.zip"
    if not pkg.exists():
        run(["nequip-package", "build", run_dir / "best.ckpt", pkg], cwd=run_dir)
    for source in (run_dir / "best.ckpt", pkg):
        out = run_dir / f"{source.name.split('.')[0]}_nocompile.nequip.lmp.pt"
        prepare([str(source), str(out), "--no-compile"])
        _check_mliap_artifact(out, run_dir / "best.ckpt", tol=1e-10)
