"""The host's ASE calculator, plus a clear error where a compiled model can only answer NaN."""

import numpy as np

from nequip.integrations.ase import NequIPCalculator


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
