"""Checks of the labelled frames before the first epoch: errors name the file and frame."""

import logging
import warnings
from typing import List

import numpy as np
import torch
from ase.data import chemical_symbols as SYMBOLS

from nequip.data import AtomicDataDict
from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper

logger = logging.getLogger(__name__)

# a frame's force RMS above this multiple of the set's median is reported (it may be real)
FORCE_OUTLIER_FACTOR = 100.0


class TrainingDataWarning(UserWarning):
    """A frame that is legal but suspicious (e.g. forces far larger than the rest)."""


def _frames(dataset):
    """(source name, frame index in its file, raw frame) of a host dataset whose frames
    are held in memory (``ASEDataset`` and others with ``data_list``), also through a
    ``torch.utils.data.Subset``; nothing for datasets that read frames lazily."""
    indices = None
    while isinstance(dataset, torch.utils.data.Subset):
        indices = dataset.indices if indices is None else [dataset.indices[i] for i in indices]
        dataset = dataset.dataset
    frames = getattr(dataset, "data_list", None)
    if frames is None:
        return dataset, []
    source = str(getattr(dataset, "file_path", type(dataset).__name__))
    chosen = range(len(frames)) if indices is None else indices
    return dataset, [(source, int(k), frames[int(k)]) for k in chosen]


def _known_atomic_numbers(dataset):
    """Atomic numbers the dataset's species mapper knows (None if it has none)."""
    for t in getattr(dataset, "transforms", []) or []:
        if isinstance(t, ChemicalSpeciesToAtomTypeMapper):
            return set(torch.nonzero(t.lookup_table >= 0).view(-1).tolist())
    return None


def check_frames(dataset, split: str) -> List[str]:
    """Raise ``ValueError`` on the first frame no model can be trained or scored on
    (non-finite positions, energy, forces or stress; forces of the wrong shape; a
    species the config's ``chemical_symbols`` do not list), naming file, frame and
    field; warn (:class:`TrainingDataWarning`) about frames whose force RMS exceeds
    ``FORCE_OUTLIER_FACTOR`` times the median of the split. Returns the warnings."""
    base, frames = _frames(dataset)
    known = _known_atomic_numbers(base)
    force_rms = []
    for source, k, frame in frames:
        where = f"{split} data {source}, frame {k}"
        pos = frame[AtomicDataDict.POSITIONS_KEY]
        n = pos.shape[0]
        if not torch.isfinite(pos).all():
            raise ValueError(f"{where}: non-finite positions (atom {int((~torch.isfinite(pos)).any(-1).nonzero()[0])})")
        if known is not None and AtomicDataDict.ATOMIC_NUMBERS_KEY in frame:
            unknown = sorted(set(frame[AtomicDataDict.ATOMIC_NUMBERS_KEY].view(-1).tolist()) - known)
            if unknown:
                names = [SYMBOLS[z] for z in unknown]
                raise ValueError(f"{where}: species {names} not in the config's chemical_symbols; add them or drop the frame")
        for key in (AtomicDataDict.TOTAL_ENERGY_KEY, AtomicDataDict.FORCE_KEY, AtomicDataDict.STRESS_KEY):
            if key in frame and not torch.isfinite(frame[key]).all():
                raise ValueError(f"{where}: `{key}` is not finite; fix the label or leave the field out of the frame")
        if AtomicDataDict.FORCE_KEY in frame:
            forces = frame[AtomicDataDict.FORCE_KEY]
            if tuple(forces.shape) != (n, 3):
                raise ValueError(f"{where}: `forces` has shape {tuple(forces.shape)}, expected ({n}, 3) for {n} atoms")
            force_rms.append((where, float(forces.double().square().mean().sqrt())))
    messages = []
    if force_rms:
        median = float(np.median([r for _, r in force_rms]))
        for where, rms in force_rms:
            if median > 0 and rms > FORCE_OUTLIER_FACTOR * median:
                messages.append(f"{where}: force RMS {rms:.3g} eV/Å is {rms / median:.0f}x the split's median "
                                f"({median:.3g}); check the label (it may be real)")
    for message in messages:
        warnings.warn(message, TrainingDataWarning, stacklevel=2)
        logger.warning(message)
    return messages
