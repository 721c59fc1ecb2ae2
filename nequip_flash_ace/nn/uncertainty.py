"""Last-layer prediction-rigidity uncertainty of the energy (a Bayesian linear readout).

The site energy is linear in the features the readout's last linear map reads,

    e_i = shift_{z_i} + w · f_i,        f_i = scale_{z_i} · g_i,

with ``g_i`` the last hidden features of the readout MLP (concatenated with the scalars the
earlier layers read out linearly, in a model with more layers) and ``scale_{z_i}`` the
per-type energy scale. Treating ``w`` as the weights of a Bayesian linear regression on
the training structures' summed features ``F = Σ_i f_i`` gives the prediction variances

    σ²_E(x) = α² F(x)ᵀ Σ⁻¹ F(x),          σ²_i(x) = α² f_i(x)ᵀ Σ⁻¹ f_i(x),
    Σ = Σ_{train} F Fᵀ + ς² I,

(the last-layer prediction rigidity; Bigi et al., arXiv 2403.02251). ``Σ⁻¹`` and ``α²``
are fitted after training (``python -m nequip_flash_ace.uncertainty``) and held here as
buffers, so the model compiles and packages like any other. ``σ`` is invariant under
rotations and translations because the features are scalars.
"""

import torch

from nequip.data import AtomicDataDict
from nequip.nn import GraphModuleMixin, scatter

from .. import _keys


class LastLayerUncertainty(GraphModuleMixin, torch.nn.Module):
    """Writes ``total_energy_uncertainty`` (frames, 1) and ``atomic_energy_uncertainty``
    (atoms, 1), both standard deviations in energy units, from the readout features
    ``_keys.READOUT_FEATURES`` (atoms, ``num_features``) the layers leave in the data.

    Buffers (float64): ``inverse_covariance`` ``Σ⁻¹`` (num_features, num_features),
    ``variance_scale`` ``α²`` (scalar), ``type_scales`` (num_types,): the per-type
    energy scale that multiplies the readout (1 where the model has none). Until fitted
    ``α² = 0`` and every σ is 0.

    Args:
        num_features: width of the readout features
        num_types: number of atom types
    """

    def __init__(self, num_features: int, num_types: int, irreps_in=None) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.register_buffer("inverse_covariance", torch.zeros(num_features, num_features, dtype=torch.float64))
        self.register_buffer("variance_scale", torch.zeros((), dtype=torch.float64))
        self.register_buffer("type_scales", torch.ones(num_types, dtype=torch.float64))
        self._init_irreps(
            irreps_in=irreps_in,
            irreps_out={_keys.TOTAL_ENERGY_UNCERTAINTY: "0e", _keys.ATOMIC_ENERGY_UNCERTAINTY: "0e"},
        )

    def linear_features(self, data: AtomicDataDict.Type) -> torch.Tensor:
        """``f_i = scale_{z_i} g_i`` of the local atoms, float64, (atoms, num_features)."""
        features = data[_keys.READOUT_FEATURES].to(torch.float64)
        types = data[AtomicDataDict.ATOM_TYPE_KEY].view(-1)[: features.shape[0]]
        return features * torch.index_select(self.type_scales, 0, types).unsqueeze(-1)

    def structure_features(self, data: AtomicDataDict.Type, features: torch.Tensor) -> torch.Tensor:
        """``F = Σ_i f_i`` per frame, (frames, num_features)."""
        if AtomicDataDict.BATCH_KEY in data:
            batch = data[AtomicDataDict.BATCH_KEY].view(-1)[: features.shape[0]]
            return scatter(features, batch, dim=0, dim_size=AtomicDataDict.num_frames(data))
        return features.sum(dim=0, keepdim=True)

    def _std(self, x: torch.Tensor) -> torch.Tensor:
        # α² xᵀ Σ⁻¹ x, clamped at 0 against round-off (Σ⁻¹ is positive definite)
        variance = self.variance_scale * ((x @ self.inverse_covariance) * x).sum(dim=-1, keepdim=True)
        return torch.sqrt(torch.clamp(variance, min=0.0))

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        features = self.linear_features(data)
        # σ is a read-out of the prediction, not part of it: no gradient flows back
        features = features.detach()
        data[_keys.ATOMIC_ENERGY_UNCERTAINTY] = self._std(features)
        data[_keys.TOTAL_ENERGY_UNCERTAINTY] = self._std(self.structure_features(data, features))
        return data


class ShallowEnsembleEnergy(GraphModuleMixin, torch.nn.Module):
    """The energy and its spread from a shallow ensemble of readout heads.

    The last layer's readout ends in ``M`` linear heads that share everything before them,
    so each atom has ``M`` site energies ``e_i^(m)`` (after the per-type scale and shift)
    and each structure ``M`` energies ``E^(m) = Σ_i e_i^(m)``. The prediction is the
    ensemble mean and the uncertainty its spread (Kellner & Ceriotti, Mach. Learn.: Sci.
    Technol. 5, 035006, 2024):

        e_i = (1/M) Σ_m e_i^(m),       σ²_i = α² /(M-1) Σ_m (e_i^(m) - e_i)²,
        E   = Σ_i e_i,                 σ²_E = α² /(M-1) Σ_m (E^(m) - E)²,

    with ``α²`` (buffer ``variance_scale``, 1 until calibrated) one scale fitted on the
    validation split after training. The heads are trained with the rest of the model:
    the energy's Gaussian negative log-likelihood (``train.EnergyGaussianNLL``) shapes
    their spread, the usual losses their mean. Forces are ``-∇E`` of the mean, so they are
    those of one model. ``σ`` is invariant under rotations and translations because the
    site energies are.

    Reads ``_keys.ATOMIC_ENERGY_HEADS`` (atoms, M), unscaled; writes the site energy
    ``per_atom_energy`` (atoms, 1), ``atomic_energy_uncertainty`` (atoms, 1) and
    ``total_energy_uncertainty`` (frames, 1).

    Args:
        num_heads: ``M`` (at least 2)
        scale_shift: the model's per-type scale and shift of the site energy (the host's
            ``PerTypeScaleShift`` on ``per_atom_energy``), applied here to every head
    """

    def __init__(self, num_heads: int, scale_shift: torch.nn.Module, irreps_in=None) -> None:
        super().__init__()
        if num_heads < 2:
            raise ValueError(f"a shallow ensemble needs `num_energy_heads` >= 2, got {num_heads}")
        self.num_heads = int(num_heads)
        self.scale_shift = scale_shift
        self.register_buffer("variance_scale", torch.ones((), dtype=torch.float64))
        self._init_irreps(
            irreps_in=irreps_in,
            required_irreps_in=[_keys.ATOMIC_ENERGY_HEADS],
            irreps_out={
                AtomicDataDict.PER_ATOM_ENERGY_KEY: "0e",
                _keys.TOTAL_ENERGY_UNCERTAINTY: "0e",
                _keys.ATOMIC_ENERGY_UNCERTAINTY: "0e",
            },
        )

    def _std(self, heads: torch.Tensor) -> torch.Tensor:
        deviations = heads - heads.mean(dim=-1, keepdim=True)
        variance = self.variance_scale * deviations.square().sum(dim=-1, keepdim=True) / (self.num_heads - 1)
        # the floor keeps the gradient of the square root finite if every head agrees
        return torch.sqrt(torch.clamp(variance, min=1e-30))

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        # the host's per-type scale and shift takes one site energy (atoms, 1): each head in turn
        scaled = []
        for head in torch.unbind(data[_keys.ATOMIC_ENERGY_HEADS], dim=-1):
            data[AtomicDataDict.PER_ATOM_ENERGY_KEY] = head.unsqueeze(-1)
            data = self.scale_shift(data)
            scaled.append(data[AtomicDataDict.PER_ATOM_ENERGY_KEY])
        heads = torch.cat(scaled, dim=-1)
        data[_keys.ATOMIC_ENERGY_HEADS] = heads
        data[AtomicDataDict.PER_ATOM_ENERGY_KEY] = heads.mean(dim=-1, keepdim=True)
        data[_keys.ATOMIC_ENERGY_UNCERTAINTY] = self._std(heads)
        if AtomicDataDict.BATCH_KEY in data:
            batch = data[AtomicDataDict.BATCH_KEY].view(-1)[: heads.shape[0]]
            structure_heads = scatter(heads, batch, dim=0, dim_size=AtomicDataDict.num_frames(data))
        else:
            structure_heads = heads.sum(dim=0, keepdim=True)
        data[_keys.TOTAL_ENERGY_UNCERTAINTY] = self._std(structure_heads)
        return data
