"""Flash-ACE in a real LAMMPS, as a user runs it.

LAMMPS 4 Jul 2026 with the host team's `pair_nequip_allegro` plugin, built by
`tools/build_lammps.sh` (`.ci/run` builds it or reuses the cached build and exports
FLASH_ACE_LMP). Outside CI the tests look for the cached build and skip, saying how to
build it, when there is none; in CI a missing LAMMPS fails.

- the shipped decks `examples/lammps/in.pair_nequip` and `in.pair_allegro` run
  unmodified (only `-var model` is passed);
- single points agree with the host's ASE calculator on the same checkpoint: energy,
  per-atom energies, forces and virial, float64 ≤ 1e-10, float32 ≤ 1e-5 relative;
- NVE in LAMMPS bounds the energy drift;
- `pair_style nequip` on 2 MPI ranks stops with the plugin's message;
- the strictly local preset through `pair_style allegro` on 1, 2 and 4 ranks equals
  1 rank and ASE (float64 ≤ 1e-10), also on a cell smaller than twice the cutoff.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read

from nequip.integrations.ase import NequIPCalculator

from workflow_utils import REPO

pytestmark = pytest.mark.slow

DECKS = REPO / "examples" / "lammps"
# metal units: pressure [bar] = virial [eV] / volume [Å^3] * nktv2p (LAMMPS' own
# constant, src/update.cpp); using LAMMPS' value keeps the conversion exact
NKTV2P_METAL = 1.6021765e6


def _find_lmp():
    path = os.environ.get("FLASH_ACE_LMP")
    if path:
        assert Path(path).is_file(), f"FLASH_ACE_LMP={path} is not a file"
        return path
    proc = subprocess.run(
        ["bash", str(REPO / "tools" / "build_lammps.sh"), "--find"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHON=sys.executable),  # the cache key needs this torch's version
    )
    if proc.returncode == 0:
        return proc.stdout.strip().splitlines()[-1]
    message = "no LAMMPS with pair_nequip_allegro: run tools/build_lammps.sh (docs/lammps.md) or set FLASH_ACE_LMP"
    if os.environ.get("CI"):
        pytest.fail(message + " — .ci/run must build it")
    pytest.skip(message)


@pytest.fixture(scope="module")
def lmp():
    return _find_lmp()


def _lmp_env(threads=1):
    env = dict(os.environ)
    # the cached build may have been linked against another venv's copy of this torch
    torch_lib = str(Path(torch.__file__).parent / "lib")
    env["LD_LIBRARY_PATH"] = torch_lib + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    env["OMP_NUM_THREADS"] = str(threads)
    # CI runs as root; Open MPI refuses root without these
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    return env


def run_lammps(lmp, deck: Path, cwd: Path, model: Path, ranks: int = 1, threads=None, check=True, timeout=900):
    """``lmp -var model MODEL -in DECK`` (under ``mpirun -np ranks``); OpenMP threads default
    to the cores per rank."""
    threads = threads or max(1, (os.cpu_count() or 1) // ranks)
    cmd = [lmp, "-nocite", "-var", "model", str(model), "-in", deck.name]
    if ranks > 1:
        cmd = ["mpirun", "--oversubscribe", "-np", str(ranks), *cmd]
    proc = subprocess.run(cmd, cwd=cwd, env=_lmp_env(threads), capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, (
            f"LAMMPS failed ({proc.returncode}): {' '.join(cmd)}\n--- stdout ---\n{proc.stdout[-5000:]}\n"
            f"--- stderr ---\n{proc.stderr[-3000:]}"
        )
    return proc


def _shipped_deck(name: str, tmp_path: Path) -> Path:
    """The deck and its data file, copied byte for byte into a scratch directory."""
    for f in (name, "cuau.data"):
        shutil.copy(DECKS / f, tmp_path / f)
    return tmp_path / name


def _thermo_table(log: str):
    """Thermo rows of the (last) run in a LAMMPS log as {column: np.array}."""
    lines = log.splitlines()
    start = max(i for i, line in enumerate(lines) if line.split()[:1] == ["Step"])
    header = lines[start].split()
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("Loop time"):
            break
        rows.append([float(x) for x in line.split()])
    return {h: np.array([r[k] for r in rows]) for k, h in enumerate(header)}


def cell_and_pair_style(pair_style: str, replicate: str) -> str:
    """Deck lines up to `pair_coeff`: the bundled Cu–Au cell replicated, the pair style with
    the newton setting it needs, and the model from `-var model`."""
    return f"""\
units           metal
atom_style      atomic
boundary        p p p
newton          {"off" if pair_style == "nequip" else "on"}
read_data       {DECKS / "cuau.data"}
replicate       {replicate}
pair_style      {pair_style}
pair_coeff      * * ${{model}} Cu Au
"""


SINGLE_POINT = """\
compute         peatom all pe/atom
compute         vir all pressure NULL virial
thermo_style    custom step pe c_vir[1] c_vir[2] c_vir[3] c_vir[4] c_vir[5] c_vir[6] vol
thermo_modify   format float %.17g
dump            d all custom 1 atoms.dump id type x y z fx fy fz c_peatom
dump_modify     d sort id format float %.17g
run             0
"""


def lammps_single_point(lmp, model, pair_style, tmp_path, ranks=1, replicate="1 1 1"):
    """Energy, per-atom energies, forces, ASE-convention stress and the atoms LAMMPS used."""
    work = tmp_path / f"{pair_style}_{ranks}_{replicate.replace(' ', 'x')}"
    work.mkdir()
    deck = work / "in.single_point"
    deck.write_text(cell_and_pair_style(pair_style, replicate) + SINGLE_POINT)
    proc = run_lammps(lmp, deck, work, model, ranks=ranks)
    thermo = _thermo_table(proc.stdout)
    pressure_virial = np.array([thermo[f"c_vir[{k}]"][0] for k in range(1, 7)])  # xx yy zz xy xz yz
    # ASE stress (Voigt xx yy zz yz xz xy) = -virial / V = -P_virial / nktv2p
    stress = -pressure_virial[[0, 1, 2, 5, 4, 3]] / NKTV2P_METAL
    dump = np.loadtxt(work / "atoms.dump", skiprows=9)
    atoms = _lammps_atoms(work / "atoms.dump")
    return {
        "energy": thermo["PotEng"][0],
        "per_atom": dump[:, 8],
        "forces": dump[:, 5:8],
        "stress": stress,
        "atoms": atoms,
    }


def _lammps_atoms(dump_path: Path):
    """The configuration LAMMPS evaluated (after replicate), as ASE atoms Cu/Au."""
    atoms = read(dump_path, format="lammps-dump-text", index=-1)
    types = atoms.get_atomic_numbers()  # ASE's reader puts LAMMPS types here
    atoms.set_chemical_symbols(["Cu" if t == 1 else "Au" for t in types])
    return atoms


def ase_reference(checkpoint, atoms):
    calc = NequIPCalculator._from_saved_model(checkpoint, device="cpu", chemical_species_to_atom_type_map=True)
    a = atoms.copy()
    a.calc = calc
    return {
        "energy": a.get_potential_energy(),
        "per_atom": a.get_potential_energies(),
        "forces": a.get_forces(),
        "stress": a.get_stress(),
    }


def assert_agree(got, ref, rtol, label):
    """Relative to the size of each quantity (float64: 1e-10, float32: 1e-5)."""
    worst = {}
    for key in ("energy", "per_atom", "forces", "stress"):
        a, b = np.asarray(got[key], dtype=np.float64), np.asarray(ref[key], dtype=np.float64)
        scale = max(1.0, float(np.abs(b).max()))
        worst[key] = float(np.abs(a - b).max())
        assert worst[key] <= rtol * scale, f"{label}: {key} differs by {worst[key]:.3e} (scale {scale:.3g}, rtol {rtol})"
    print(f"{label}: max |Δ| {worst}")
    return worst


# ------------------------------------------------------------ pair_style nequip ----
def test_pair_nequip_float64_equals_ase(lmp, pair_nequip_attention_f64, tmp_path):
    checkpoint, compiled = pair_nequip_attention_f64
    # the 32-atom cell (7.4 Å < 2 r_max) and a 2x2x2 replica
    for replicate in ("1 1 1", "2 2 2"):
        got = lammps_single_point(lmp, compiled, "nequip", tmp_path, replicate=replicate)
        assert_agree(got, ase_reference(checkpoint, got["atoms"]), 1e-10, f"pair_nequip f64 {replicate}")


def test_pair_nequip_float32_equals_ase(lmp, pair_nequip_backbone_f32, tmp_path):
    checkpoint, compiled = pair_nequip_backbone_f32
    got = lammps_single_point(lmp, compiled, "nequip", tmp_path, replicate="2 2 2")
    assert_agree(got, ase_reference(checkpoint, got["atoms"]), 1e-5, "pair_nequip f32")


def test_shipped_pair_nequip_deck_runs_and_conserves_energy(lmp, pair_nequip_attention_f64, tmp_path):
    _, compiled = pair_nequip_attention_f64
    deck = _shipped_deck("in.pair_nequip", tmp_path)
    proc = run_lammps(lmp, deck, tmp_path, compiled)
    thermo = _thermo_table(proc.stdout)
    n_atoms = 864
    assert thermo["Step"][-1] == 200
    np.testing.assert_allclose(thermo["c_pe"], thermo["PotEng"], rtol=0, atol=1e-9 * n_atoms)  # pe/atom sums to pe
    etotal = thermo["TotEng"] / n_atoms
    time_ps = thermo["Time"]
    drift = np.polyfit(time_ps, etotal, 1)[0] * 1e3  # meV/atom/ps
    spread = (etotal.max() - etotal.min()) * 1e3  # meV/atom
    print(f"in.pair_nequip NVE, 864 atoms, 0.2 ps: drift {drift:.3e} meV/atom/ps, spread {spread:.3e} meV/atom")
    assert np.isfinite(etotal).all()
    assert abs(drift) < 0.5, drift
    assert spread < 0.1, spread
    assert (tmp_path / "traj.lammpstrj").stat().st_size > 0


def test_pair_nequip_refuses_two_ranks(lmp, pair_nequip_attention_f64, tmp_path):
    _, compiled = pair_nequip_attention_f64
    deck = _shipped_deck("in.pair_nequip", tmp_path)
    proc = run_lammps(lmp, deck, tmp_path, compiled, ranks=2, check=False, timeout=300)
    assert proc.returncode != 0
    assert "pair_nequip only works with a single MPI rank" in proc.stdout + proc.stderr


# ----------------------------------------------------------- pair_style allegro ----
def test_local_preset_on_1_2_4_ranks_equals_ase(lmp, pair_allegro_local_f64, tmp_path):
    checkpoint, compiled = pair_allegro_local_f64
    for replicate in ("1 1 1", "2 2 2"):  # 7.4 Å cell (< 2 r_max = 10 Å) and 14.8 Å
        one_rank = None
        for ranks in (1, 2, 4):
            got = lammps_single_point(lmp, compiled, "allegro", tmp_path, ranks=ranks, replicate=replicate)
            label = f"pair_allegro local f64, {replicate}, {ranks} rank(s)"
            if one_rank is None:
                one_rank = got
                assert_agree(got, ase_reference(checkpoint, got["atoms"]), 1e-10, label + " vs ASE")
            else:
                np.testing.assert_array_equal(got["atoms"].positions, one_rank["atoms"].positions)
                assert_agree(got, one_rank, 1e-10, label + " vs 1 rank")


def test_shipped_pair_allegro_deck_runs_on_two_ranks(lmp, pair_allegro_local_f64, tmp_path):
    _, compiled = pair_allegro_local_f64
    deck = _shipped_deck("in.pair_allegro", tmp_path)
    proc = run_lammps(lmp, deck, tmp_path, compiled, ranks=2)
    thermo = _thermo_table(proc.stdout)
    assert thermo["Step"][-1] == 200
    etotal = thermo["TotEng"] / 864
    spread = (etotal.max() - etotal.min()) * 1e3
    print(f"in.pair_allegro NVE on 2 ranks, 864 atoms, 0.2 ps: spread {spread:.3e} meV/atom")
    assert np.isfinite(etotal).all() and spread < 0.1, spread


def test_atoms_on_top_of_each_other_stop_the_run(lmp, pair_allegro_local_f64, tmp_path):
    """Two atoms 0.05 Å apart (closer than the model's min_atom_distance): the compiled
    model answers NaN and the run stops before its first step, instead of running on with
    finite, meaningless energies (measured without the check: it ran, at 52 eV for the
    32-atom cell). What the user sees is the plugin's crash (a segmentation fault of
    plugin 2e19360b on NaN input), not a message: docs/lammps.md says so."""
    _, compiled = pair_allegro_local_f64
    deck = _shipped_deck("in.pair_allegro", tmp_path)
    data = (tmp_path / "cuau.data").read_text().splitlines()
    first = next(i for i, line in enumerate(data) if line.split()[:2] == ["1", "1"])
    second = next(i for i, line in enumerate(data) if line.split()[:1] == ["2"] and len(line.split()) == 5)
    x, y, z = (float(v) for v in data[first].split()[2:5])
    data[second] = f"     2   2   {x + 0.05!r}   {y!r}   {z!r}"
    (tmp_path / "cuau.data").write_text("\n".join(data) + "\n")
    text = deck.read_text().replace("replicate       3 3 3", "").replace("run             200", "run             5")
    text = text.replace("thermo          20", "thermo          1")
    assert "thermo          1" in text and "run             5" in text
    deck.write_text(text)
    proc = run_lammps(lmp, deck, tmp_path, compiled, check=False, timeout=300)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert not re.search(r"^\s+5\s+0\.005", proc.stdout, re.MULTILINE), "the run reached step 5"
