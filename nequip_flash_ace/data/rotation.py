"""Random O(3)/SO(3) rotation of a whole data item, labels included."""

import hashlib
import os
from typing import Optional, Sequence

import torch

from nequip.data import AtomicDataDict
from nequip.data import _key_registry

K = AtomicDataDict

# fields that a rotation leaves unchanged (scalars, integers, topology)
_INVARIANT_FIELDS = {
    K.ATOM_TYPE_KEY,
    K.ATOMIC_NUMBERS_KEY,
    K.EDGE_INDEX_KEY,
    K.EDGE_CELL_SHIFT_KEY,  # integer image offsets: unchanged when pos and cell rotate together
    K.EDGE_TRANSPOSE_PERM_KEY,
    K.BATCH_KEY,
    K.NUM_NODES_KEY,
    K.DATASET_KEY,
    K.PBC_KEY,
    K.EDGE_LENGTH_KEY,
    K.NORM_LENGTH_KEY,
    K.EDGE_TYPE_KEY,
    K.EDGE_CUTOFF_KEY,
    K.TOTAL_ENERGY_KEY,
    K.FREE_ENERGY_KEY,
    K.PER_ATOM_ENERGY_KEY,
    K.EDGE_ENERGY_KEY,
    K.CHARGE_KEY,
    K.TOTAL_CHARGE_KEY,
    K.TOTAL_SPIN_KEY,
    K.NUM_LOCAL_GHOST_NODES_KEY,
}
# polar vectors (1o): rotate as g v
_VECTOR_FIELDS = {
    K.POSITIONS_KEY,
    K.FORCE_KEY,
    K.EDGE_VECTORS_KEY,
    K.EDGE_FORCE_KEY,
    K.DIPOLE_KEY,
    K.POLARIZATION_KEY,
}
# magnetic moments: invariant if collinear (one number per atom), axial (1e) if 3-vectors
_MAGNETIC_FIELDS = {K.MAGMOM_KEY, K.TOTAL_MAGMOM_KEY}


def haar_random_rotation(generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """A rotation matrix drawn uniformly (Haar measure) from SO(3).

    A normalised 4D Gaussian is a uniform unit quaternion, whose rotation matrix is
    Haar-distributed on SO(3).
    """
    q = torch.randn(4, generator=generator, dtype=torch.float64)
    q = q / q.norm()
    w, x, y, z = q.tolist()
    rot = torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ],
        dtype=torch.float64,
    )
    return rot.to(dtype)


def _process_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    # DataLoader workers and not-yet-initialised DDP processes: the launcher's variables
    for var in ("RANK", "GLOBAL_RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


class RandomRotation:
    r"""Rotate every item by an independent random rotation, labels included.

    Per item a rotation ``R`` is drawn from the Haar measure on SO(3) (with
    ``inversion=True``: ``g = ±R`` with equal probability, i.e. uniform on O(3)) and
    applied consistently:

    - positions, cell rows (so periodic images and ``edge_cell_shift`` stay valid),
      forces, dipoles and every other polar vector field: ``v -> g v``;
    - vector magnetic moments (axial): ``m -> det(g) g m``; collinear ones unchanged;
    - every field registered with the host as a Cartesian tensor (``stress``,
      ``virial``, ``born_effective_charges``, ...; see
      ``nequip.data.register_fields(cartesian_tensor_fields=...)``): ``g`` acts on each
      Cartesian index, e.g. ``σ -> g σ gᵀ`` — exact, and equivalent to rotating its
      irreps with Wigner-D matrices;
    - energies, types and other invariants: unchanged.

    A field it cannot classify raises an error naming it; declare such fields with
    ``invariant_fields`` or ``vector_fields``.

    Randomness: the rotation of each call is seeded from ``seed``, the process rank
    (DDP), the DataLoader worker's seed (which the host's seeded train generator
    makes different for every worker and every epoch) and a per-process call
    counter, so repeated runs with the same seed draw the same sequence while items,
    epochs, workers and ranks all get different rotations.

    Args:
        seed: base seed
        enabled: ``False`` makes the transform the identity (for a config switch)
        inversion: draw from O(3) instead of SO(3)
        invariant_fields, vector_fields: extra fields to leave alone / rotate as polar vectors
    """

    def __init__(
        self,
        seed: int = 0,
        enabled: bool = True,
        inversion: bool = False,
        invariant_fields: Optional[Sequence[str]] = None,
        vector_fields: Optional[Sequence[str]] = None,
    ) -> None:
        self.seed = int(seed)
        self.enabled = bool(enabled)
        self.inversion = bool(inversion)
        self.invariant_fields = set(invariant_fields or ())
        self.vector_fields = set(vector_fields or ())
        overlap = self.invariant_fields & self.vector_fields
        if overlap:
            raise ValueError(f"RandomRotation: fields {sorted(overlap)} are listed as both invariant and vector")
        self._calls = 0
        self.last_rotation: Optional[torch.Tensor] = None

    def _generator(self) -> torch.Generator:
        worker = torch.utils.data.get_worker_info()
        # inside a worker, torch.initial_seed() = loader base seed + worker id: new
        # every epoch and every worker, reproducible from the train generator
        stream = torch.initial_seed() if worker is not None else 0
        key = f"{self.seed}:{_process_rank()}:{stream}:{self._calls}".encode()
        self._calls += 1
        seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
        return torch.Generator().manual_seed(seed)

    def draw(self) -> torch.Tensor:
        """The next random element ``g`` (float64 3x3) of SO(3), or of O(3) with ``inversion``."""
        gen = self._generator()
        g = haar_random_rotation(gen)
        if self.inversion and torch.rand(1, generator=gen).item() < 0.5:
            g = -g
        return g

    def __call__(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        if not self.enabled:
            return data
        g = self.draw()
        self.last_rotation = g
        return rotate(data, g, self.invariant_fields, self.vector_fields)


def rotate(
    data: AtomicDataDict.Type,
    g: torch.Tensor,
    invariant_fields=frozenset(),
    vector_fields=frozenset(),
) -> AtomicDataDict.Type:
    """Apply the O(3) element ``g`` (3x3) to every field of ``data`` (see :class:`RandomRotation`)."""
    out = dict(data)
    det = torch.linalg.det(g).item()
    for key, value in data.items():
        if key in invariant_fields or key in _INVARIANT_FIELDS:
            continue
        if not torch.is_tensor(value):
            raise ValueError(f"RandomRotation: field `{key}` is not a tensor; cannot tell how it rotates")
        gt = g.to(dtype=value.dtype, device=value.device) if value.is_floating_point() else None
        if key in vector_fields or key in _VECTOR_FIELDS:
            out[key] = value @ gt.T
        elif key == K.CELL_KEY:
            # rows are lattice vectors: a = frac @ cell -> g a = frac @ (cell g^T)
            out[key] = value @ gt.T
        elif key in _MAGNETIC_FIELDS:
            if value.shape[-1] == 3 and value.dim() >= 2:
                out[key] = det * (value @ gt.T)
        elif key in _key_registry._CARTESIAN_TENSOR_FIELDS:
            formula = _key_registry._CARTESIAN_TENSOR_FIELDS[key]
            rank = len(formula.split("=")[0].strip())
            if value.shape[-rank:] != (3,) * rank:
                raise ValueError(
                    f"RandomRotation: Cartesian tensor field `{key}` ({formula}) should end in {rank} axes of size 3, got shape {tuple(value.shape)}"
                )
            rotated = value
            for axis in range(rank):
                # contract index `axis` (counted from the first Cartesian axis) with g
                dim = value.dim() - rank + axis
                rotated = torch.movedim(torch.tensordot(rotated, gt, dims=([dim], [1])), -1, dim)
            out[key] = rotated
        else:
            raise ValueError(
                f"RandomRotation: don't know how field `{key}` transforms under rotation; "
                f"register it as a Cartesian tensor with nequip.data.register_fields(cartesian_tensor_fields=...), "
                f"or pass it in `invariant_fields` or `vector_fields`"
            )
    return out
