"""MD above the training temperatures stays physical (the short version of
``benchmarks/long_md.py``): the quick-start config, trained for a few epochs on the full
Cu–Au training set, runs 1 ps of Langevin at 1200 K and 1 ps of NVE in ASE; no pair comes
closer than 1.5 Å, everything stays finite and the NVE energy does not drift."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import long_md  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cuau_checkpoint(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("long_md") / "run"
    return long_md.train_shipped("flash_ace", "float32", run_dir, "max_epochs=5")


def test_cuau_at_1200k_stays_physical(cuau_checkpoint):
    config, frames, temperature, timestep = long_md.CASES["cuau"]
    r = long_md.run_md(cuau_checkpoint, frames, temperature, timestep, ps=2.0, every=10)
    assert r["finite"]
    assert r["min_dist_overall"] > 1.5, r["min_dist_overall"]
    # the thermostat holds the temperature (32 atoms: large fluctuations)
    assert 800 < r["mean_temperature_langevin_k"] < 1600, r["mean_temperature_langevin_k"]
    # float32, 1 fs: the total energy in NVE moves by rounding only
    assert abs(r["nve_drift_mev_per_atom_ps"]) < 1.0, r["nve_drift_mev_per_atom_ps"]
    assert np.ptp(np.array(r["etot_ev"])[np.array(r["phase"]) == "nve"]) / r["atoms"] < 5e-3


def test_bond_bookkeeping_sees_a_broken_and_a_new_bond():
    from ase import Atoms

    h2o = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    bonded = long_md.bonds(h2o, 1.2)
    assert bonded == {(0, 1), (0, 2)}
    stretched = h2o.copy()
    stretched.positions[1] = [3.0, 0, 0]
    assert bonded - long_md.bonds(stretched, 1.5) == {(0, 1)}
    squeezed = h2o.copy()
    squeezed.positions[2] = [0.9, 0.2, 0]
    assert long_md.bonds(squeezed, 1.0) - bonded == {(1, 2)}
