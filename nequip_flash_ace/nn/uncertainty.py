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
