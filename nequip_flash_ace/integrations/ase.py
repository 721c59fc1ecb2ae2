"""The host's ASE calculator, plus a clear error where a compiled model can only answer NaN,
and a variant that reads the energy uncertainty of a model fitted by
``python -m nequip_flash_ace.uncertainty``."""

from typing import Dict

import numpy as np

from nequip.integrations.ase import NequIPCalculator

from .. import _keys


def describe_bad_geometry(atoms, min_distance: float = 0.1) -> str:
    """One line naming what makes ``atoms`` impossible to predict ("" if nothing does):
    a non-finite cell or position, or the closest pair if it is nearer than
    ``min_distance`` Å (minimum image in periodic directions)."""
    if atoms.pbc.any() and not np.isfinite(atoms.cell.array).all():
        return "the cell is not finite"
    positions = atoms.get_positions()
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        listed = bad[:10].tolist()
        return (f"atom(s) {listed}{' ...' if bad.size > 10 else ''} have a non-finite position "
                f"(atom {listed[0]}: {positions[listed[0]].tolist()})")
    if len(atoms) > 1:
        from ase.neighborlist import neighbor_list

        i, j, d = neighbor_list("ijd", atoms, cutoff=max(min_distance, 1e-6), self_interaction=False)
        # two atoms on one site are at distance 0, which the neighbour list may leave out
        _, site, count = np.unique(positions, axis=0, return_inverse=True, return_counts=True)
        same = np.flatnonzero(count[site.reshape(-1)] > 1)
        if same.size:
            return f"atoms {same[:10].tolist()} sit on the same site"
        if d.size:
            k = int(np.argmin(d))
            return f"atoms {int(i[k])} and {int(j[k])} are {d[k]:.3g} Å apart, closer than {min_distance:g} Å"
    return ""


class FlashACECalculator(NequIPCalculator):
    """``NequIPCalculator`` (build it the same ways: ``from_compiled_model``,
    ``from_checkpoint_model``, ...) that refuses a structure no model can describe.

    An eager Flash-ACE model raises on such a structure itself (``InputGeometryCheck``);
    a compiled one can only return NaN energies. Here a non-finite energy becomes a
    ``ValueError`` whose one line names the atoms (non-finite position or cell, two atoms
    on top of each other), instead of NaN results that an MD run would carry on with.
    """

    def save_extra_outputs(self, out) -> None:
        energy = self.results.get("energy")
        if energy is not None and not np.isfinite(energy):
            problem = describe_bad_geometry(self.atoms)
            raise ValueError(
                f"Flash-ACE input: {problem}; no energy can be right for this structure" if problem
                else "Flash-ACE: the model returned a non-finite energy for this structure"
            )


class FlashACEUncertaintyCalculator(FlashACECalculator):
    """:class:`FlashACECalculator` for a model with the last-layer uncertainty (a checkpoint
    written by ``python -m nequip_flash_ace.uncertainty``, or that checkpoint compiled with
    ``nequip-compile ... --target ase_uncertainty``). Besides the usual results:

    - ``results["energy_uncertainty"]``: standard deviation of the energy (eV, per structure);
    - ``results["energies_uncertainty"]``: standard deviation of each atom's energy (eV, per atom).
    """

    implemented_properties = FlashACECalculator.implemented_properties + ["energy_uncertainty", "energies_uncertainty"]

    @classmethod
    def _get_aoti_compile_target(cls) -> Dict:
        from nequip.scripts._compile_utils import COMPILE_TARGET_DICT

        from .._compile import ASE_UNCERTAINTY_TARGET_NAME

        return COMPILE_TARGET_DICT[ASE_UNCERTAINTY_TARGET_NAME]

    def save_extra_outputs(self, out) -> None:
        super().save_extra_outputs(out)
        if _keys.TOTAL_ENERGY_UNCERTAINTY not in out:
            raise ValueError(
                "FlashACEUncertaintyCalculator: the model has no energy uncertainty; fit one with "
                "`python -m nequip_flash_ace.uncertainty RUN_DIR` and load RUN_DIR/uncertainty.ckpt (or its "
                "`nequip-compile --target ase_uncertainty` file)"
            )
        self.results["energy_uncertainty"] = self.energy_units_to_eV * float(
            out[_keys.TOTAL_ENERGY_UNCERTAINTY].detach().cpu().reshape(()).item()
        )
        self.results["energies_uncertainty"] = self.energy_units_to_eV * (
            out[_keys.ATOMIC_ENERGY_UNCERTAINTY].detach().squeeze(-1).cpu().numpy()
        )
