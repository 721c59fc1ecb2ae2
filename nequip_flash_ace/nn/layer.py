"""One Flash-ACE message-passing layer: atomic basis (with attention) → product basis → update → readout."""

from typing import Dict, Optional, Sequence, Union

import torch
from e3nn.o3._irreps import Irreps
from e3nn.o3._linear import Linear
from e3nn.o3._tensor_product._sub import FullyConnectedTensorProduct

from nequip.data import AtomicDataDict
from nequip.nn import GraphModuleMixin, scatter
from nequip.nn.mlp import ScalarMLPFunction
from nequip.nn._ghost_exchange_base import NoOpGhostExchangeModule

from .. import _keys
from . import _compat
from .atomic_basis import AtomicBasis
from .attention import NeighbourAttention
from .descriptor import EnvironmentDescriptor
from .product_basis import ProductBasis, atomic_basis_irreps
from .radial import SpeciesPairRadialWeights


def _inverse_neighbour_counts(
    avg_num_neighbors: Optional[Union[float, Dict[str, float]]], type_names: Sequence[str]
) -> torch.Tensor:
    """``1 / avg_num_neighbors`` as a ``(1,)`` or per-type ``(num_types,)`` tensor."""
    if avg_num_neighbors is None:
        return torch.ones(1)
    if hasattr(avg_num_neighbors, "keys"):  # dict, or a DictConfig from Hydra
        missing = set(type_names) - set(avg_num_neighbors.keys())
        unknown = set(avg_num_neighbors.keys()) - set(type_names)
        if missing or unknown:
            raise ValueError(
                f"`avg_num_neighbors` must map every type in {list(type_names)} to a number; "
                f"missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        values = [float(avg_num_neighbors[t]) for t in type_names]
    else:
        values = [float(avg_num_neighbors)]
    if any(v <= 0 for v in values):
        raise ValueError(f"`avg_num_neighbors` must be positive, got {avg_num_neighbors}")
    return 1.0 / torch.tensor(values)


class FlashACELayer(GraphModuleMixin, torch.nn.Module):
    r"""A Flash-ACE message-passing layer.

    With ``h`` the incoming node features (irreps ``irreps_in[node_features]``):

    1. ``h' = Linear(h)``; neighbours' ``h'`` go through the ghost-exchange hook
       (all layers but the first, whose features are the type embedding and so are
       already known for ghosts);
    2. atomic basis ``A_i = (1/N_i) Σ_j w_ij R(r_ij; z_i, z_j) [Y(r̂_ij) ⊗ h'_j]``,
       then a linear map to ``num_features x (l, (-1)^l)``, ``l <= l_max``; ``w_ij``
       are the attention weights of :class:`NeighbourAttention` (``w = 1`` without
       attention), applied per head to that head's group of channels. The
       normaliser ``N_i`` is set by ``neighbour_normalization``:

       - ``"average"``: ``N_i = N_avg``, the training set's mean neighbour count (a
         constant, as in MACE and NequIP);
       - ``"coordination"``: ``N_i = 1 + Σ_j f_c(r_ij)``, the atom's own smooth
         coordination. ``A_i`` is then a weighted mean of its neighbours' messages
         and stays the same size from a vacuum cluster to a compressed crystal, so
         the ν-fold products of the product basis do not grow as ``n_i^ν`` with
         density. With attention, ``w_ij = (1 + Σ_k f_c(r_ik)) a_ij`` and the
         normalised sum is exactly the attention average ``Σ_j a_ij (...)``.
         ``f_c`` vanishes smoothly at the cutoff, so ``N_i`` is as smooth as the
         sum it divides; ``N_i >= 1`` and an isolated atom keeps ``A_i = 0``.
    3. ``B = ProductBasis(A)`` up to ``correlation_order``;
    4. ``h_new = Linear(B) + SelfConnection(h, node_attrs)`` (no self-connection in the
       first layer, so an isolated atom has exactly zero features and energy);

       with ``attention_score_inputs = "descriptor"`` the query reads the centre's
       scalars and ``D_i``, the invariants of a small :class:`EnvironmentDescriptor`
       (its own ``attention_descriptor_channels``-channel atomic and product basis over
       ``i``'s edges, computed before step 2): the query sees the centre's many-body
       environment, the weights are known before the sum, and steps 2–4 run once.
       Only ``i``'s own edges enter, so one layer stays strictly local.
    5. a scalar readout of ``h_new`` is added to the per-atom energy.

    Outputs ``node_features`` with irreps ``feature_irreps_out`` (rows: local atoms)
    and ``atomic_energy`` ``(num_local, 1)``.
    """

    is_first_layer: bool
    normalize_by_coordination: bool
    num_heads: int

    def __init__(
        self,
        irreps_in,
        feature_irreps_out,
        type_names: Sequence[str],
        l_max: int,
        num_features: int,
        correlation_order: int,
        avg_num_neighbors: Optional[Union[float, Dict[str, float]]] = None,
        radial_mlp_depth: int = 2,
        radial_mlp_width: int = 64,
        neighbour_normalization: str = "average",
        num_heads: int = 0,
        attention_head_dim: int = 8,
        attention_temperature_init: float = 0.0,
        attention_score_inputs: str = "descriptor",
        attention_normalized_scores: bool = True,
        attention_descriptor_channels: int = 8,
        readout_mlp_hidden_layers_depth: int = 0,
        readout_mlp_hidden_layers_width: Optional[int] = None,
        readout_mlp_nonlinearity: Optional[str] = "silu",
        is_first_layer: bool = False,
    ) -> None:
        super().__init__()
        required = [
            AtomicDataDict.NODE_FEATURES_KEY,
            AtomicDataDict.NODE_ATTRS_KEY,
            AtomicDataDict.EDGE_ATTRS_KEY,
            AtomicDataDict.EDGE_EMBEDDING_KEY,
        ]
        if neighbour_normalization not in ("average", "coordination"):
            raise ValueError(
                f"`neighbour_normalization` must be 'average' or 'coordination', got {neighbour_normalization!r}"
            )
        self.normalize_by_coordination = neighbour_normalization == "coordination"
        if num_heads > 0 or self.normalize_by_coordination:
            required.append(AtomicDataDict.EDGE_CUTOFF_KEY)
        self._init_irreps(
            irreps_in=irreps_in,
            required_irreps_in=required,
            irreps_out={
                AtomicDataDict.NODE_FEATURES_KEY: feature_irreps_out,
                AtomicDataDict.PER_ATOM_ENERGY_KEY: Irreps("0e"),
            },
        )
        self.is_first_layer = is_first_layer
        self.num_heads = num_heads
        self.num_features = num_features
        num_types = len(type_names)

        feature_irreps_in = self.irreps_in[AtomicDataDict.NODE_FEATURES_KEY]
        feature_irreps_out = self.irreps_out[AtomicDataDict.NODE_FEATURES_KEY]
        edge_sh_irreps = self.irreps_in[AtomicDataDict.EDGE_ATTRS_KEY]
        num_radial = self.irreps_in[AtomicDataDict.EDGE_EMBEDDING_KEY].num_irreps
        irreps_a = atomic_basis_irreps(num_features, l_max)
        for mul, ir in feature_irreps_in:
            if mul != num_features:
                raise ValueError(
                    f"FlashACELayer needs every input feature irrep with multiplicity {num_features}, got {feature_irreps_in}"
                )
        if feature_irreps_in[0].ir != (0, 1):
            raise ValueError(f"input features must start with scalars 0e, got {feature_irreps_in}")

        # === 1. linear + ghost exchange ===
        self.linear_up = Linear(feature_irreps_in, feature_irreps_in)
        self.ghost_exchange = NoOpGhostExchangeModule(
            field=AtomicDataDict.NODE_FEATURES_KEY, irreps_in=self.irreps_in
        )

        # === 2. atomic basis: Y(r_ij) ⊗ h_j, one weight per (path, channel) ===
        self.atomic_basis = AtomicBasis(feature_irreps_in, edge_sh_irreps, irreps_a)
        self.num_paths = self.atomic_basis.num_paths
        self.radial = SpeciesPairRadialWeights(
            num_radial=num_radial,
            num_types=num_types,
            num_weights=self.atomic_basis.num_weights,
            mlp_depth=radial_mlp_depth,
            mlp_width=radial_mlp_width,
        )
        self.register_buffer(
            "inverse_avg_num_neighbors",
            _inverse_neighbour_counts(avg_num_neighbors, type_names).reshape(-1, 1),
        )
        self.linear_atomic_basis = Linear(self.atomic_basis.irreps_out.simplify(), irreps_a)

        self.attention = None
        self.descriptor = None
        if num_heads > 0:
            if num_features % num_heads != 0:
                raise ValueError(
                    f"`num_features` ({num_features}) must be divisible by `num_heads` ({num_heads})"
                )
            # the query reads the centre's scalars, then (descriptor) the descriptor's invariants
            descriptor_channels = attention_descriptor_channels if attention_score_inputs == "descriptor" else 0
            self.attention = NeighbourAttention(
                num_scalar_features=num_features,
                num_radial=num_radial,
                num_heads=num_heads,
                head_dim=attention_head_dim,
                num_types=num_types,
                initial_temperature=attention_temperature_init,
                score_inputs=attention_score_inputs,
                normalized_scores=attention_normalized_scores,
                num_query_features=num_features + descriptor_channels,
            )
            if attention_score_inputs == "descriptor":
                self.descriptor = EnvironmentDescriptor(
                    num_scalar_features=num_features,
                    num_channels=attention_descriptor_channels,
                    num_radial=num_radial,
                    edge_sh_irreps=edge_sh_irreps,
                    l_max=l_max,
                    correlation_order=correlation_order,
                    num_types=num_types,
                )

        # === 3. product basis ===
        self.product_basis = ProductBasis(
            num_features=num_features,
            l_max=l_max,
            irreps_out=Irreps([(num_features, ir) for _, ir in feature_irreps_out]),
            correlation_order=correlation_order,
            num_types=num_types,
        )

        # === 4. update ===
        self.linear_out = Linear(self.product_basis.irreps_out, feature_irreps_out)

        self.self_connection = None
        if not is_first_layer:
            self.self_connection = FullyConnectedTensorProduct(
                feature_irreps_in,
                self.irreps_in[AtomicDataDict.NODE_ATTRS_KEY],
                feature_irreps_out,
            )

        # === 5. readout of this layer's scalars into the site energy ===
        num_scalars_out = feature_irreps_out.count("0e")
        if feature_irreps_out[0].ir != (0, 1):
            raise ValueError(f"output features must start with scalars 0e, got {feature_irreps_out}")
        self.readout = ScalarMLPFunction(
            input_dim=num_scalars_out,
            output_dim=1,
            hidden_layers_depth=readout_mlp_hidden_layers_depth,
            hidden_layers_width=readout_mlp_hidden_layers_width,
            nonlinearity=readout_mlp_nonlinearity,
            bias=False,
            forward_weight_init=True,
        )
        self.num_scalars_out = num_scalars_out
        # set by the builder for a model with LastLayerUncertainty: leave the readout's
        # features in the data (`_keys.READOUT_FEATURES`)
        self.store_readout_features = False

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        _compat.drop_tensor_product_scatter_keys(state_dict, prefix)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    @property
    def readout_feature_dim(self) -> int:
        """Width of the features the readout's last linear map reads (:meth:`_readout_with_features`)."""
        mlp = self.readout.mlp
        if isinstance(mlp, torch.nn.Sequential) and len(mlp) > 1:
            return mlp[-1].weight.shape[0]
        return self.num_scalars_out

    def _readout_with_features(self, scalars: torch.Tensor):
        """(features the last linear map of the readout reads, the site energy): the same
        site energy as ``self.readout(scalars)``, split before its last linear map (a
        linear readout reads the scalars themselves)."""
        mlp = self.readout.mlp
        if isinstance(mlp, torch.nn.Sequential) and len(mlp) > 1:
            features = mlp[:-1](scalars)
            return features, mlp[-1](features)
        return scalars, self.readout(scalars)

    def _attention_weights(self, data, center_scalars, neighbour_scalars, pair_embedding, coordination, num_local: int):
        """``w_ij`` of :class:`NeighbourAttention`, ``(E, H)``."""
        atom_types = data[AtomicDataDict.ATOM_TYPE_KEY].view(-1)
        return self.attention(
            center_scalars=center_scalars,
            neighbour_scalars=neighbour_scalars,
            edge_radial=pair_embedding,
            edge_envelope=data[AtomicDataDict.EDGE_CUTOFF_KEY],
            edge_center=data[AtomicDataDict.EDGE_INDEX_KEY][0],
            edge_neighbour=data[AtomicDataDict.EDGE_INDEX_KEY][1],
            center_types=atom_types[:num_local],
            center_coordination=coordination,
        )

    def _weighted(self, edge_weight: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The radial edge weights times the attention weights: every head owns a
        contiguous group of channels (``(E, H)`` spread to ``(E, C)``), and the weights are
        laid out as (path, channel), so a head's weight broadcasts over paths."""
        w = w.repeat_interleave(self.num_features // self.num_heads, dim=1)
        return (edge_weight.view(-1, self.num_paths, self.num_features) * w.unsqueeze(1)).reshape(edge_weight.shape)

    def _neighbour_normaliser(self, coordination: Optional[torch.Tensor], local_types: torch.Tensor) -> torch.Tensor:
        """``1 / N_i`` of step 2, ``(num_local, 1)`` or ``(1, 1)``."""
        if self.normalize_by_coordination:
            assert coordination is not None
            return 1.0 / coordination
        if self.inverse_avg_num_neighbors.numel() == 1:
            return self.inverse_avg_num_neighbors
        return torch.index_select(self.inverse_avg_num_neighbors, 0, local_types)

    @torch.jit.unused
    def _get_mliap_num_local(self, data: AtomicDataDict.Type) -> int:
        return data[AtomicDataDict.LMP_MLIAP_DATA_KEY].nlocal

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        if AtomicDataDict.LMP_MLIAP_DATA_KEY in data:
            num_local = self._get_mliap_num_local(data)
        else:
            num_local = AtomicDataDict.num_nodes(data)

        h = data[AtomicDataDict.NODE_FEATURES_KEY]
        node_attrs = data[AtomicDataDict.NODE_ATTRS_KEY]
        atom_types = data[AtomicDataDict.ATOM_TYPE_KEY].view(-1)
        local_types = atom_types[:num_local]
        edge_center = data[AtomicDataDict.EDGE_INDEX_KEY][0]
        edge_neighbour = data[AtomicDataDict.EDGE_INDEX_KEY][1]

        if not self.is_first_layer:
            # previous layers only produced local rows
            h = h[:num_local]

        # === 1. ===
        x = self.linear_up(h)
        if not self.is_first_layer:
            data[AtomicDataDict.NODE_FEATURES_KEY] = x
            data = self.ghost_exchange(data, ghost_included=False)
            x = data[AtomicDataDict.NODE_FEATURES_KEY]

        # === 2. ===
        pair_embedding = self.radial.pair_embedding(
            data[AtomicDataDict.EDGE_EMBEDDING_KEY],
            torch.index_select(atom_types, 0, edge_center),
            torch.index_select(atom_types, 0, edge_neighbour),
        )
        edge_weight = self.radial(pair_embedding)
        coordination = None
        if self.attention is not None or self.normalize_by_coordination:
            # smooth coordination c_i = 1 + Σ_j f_c(r_ij), (num_local, 1): shared by
            # the attention (its rescaling) and the coordination normalisation
            coordination = 1.0 + scatter(
                data[AtomicDataDict.EDGE_CUTOFF_KEY].reshape(-1, 1), edge_center, dim=0, dim_size=num_local
            )
        scalars = x.narrow(1, 0, self.num_features)
        edge_sh = data[AtomicDataDict.EDGE_ATTRS_KEY]
        # 1 / N_i, shared by the descriptor's sum and the layer's
        normaliser = self._neighbour_normaliser(coordination, local_types)
        if self.attention is not None:
            # the query sees the centre's scalars (and, for "environment", two-body
            # summaries; for "descriptor", many-body invariants); the weights are known
            # before the sum, so they go into the edge weights and the messages stream
            # path by path
            center_scalars = scalars[:num_local]
            if self.descriptor is not None:
                descriptor = self.descriptor(
                    scalars, pair_embedding, edge_sh, edge_center, edge_neighbour, normaliser, local_types
                )
                center_scalars = torch.cat([center_scalars, descriptor], dim=1)
            w = self._attention_weights(data, center_scalars, scalars, pair_embedding, coordination, num_local)
            edge_weight = self._weighted(edge_weight, w)
        # edges start at local atoms only: the sum is sized to them (ghosts get no rows)
        a = self.atomic_basis(x, edge_sh, edge_weight, edge_center, edge_neighbour, num_local)
        a = self.linear_atomic_basis(a * normaliser)

        # === 3. + 4. ===
        h_new = self.linear_out(self.product_basis(a, local_types))
        if self.self_connection is not None:
            h_new = h_new + self.self_connection(h, node_attrs[:num_local])
        data[AtomicDataDict.NODE_FEATURES_KEY] = h_new

        # === 5. ===
        readout_inputs = h_new.narrow(1, 0, self.num_scalars_out)
        if self.store_readout_features:
            features, site_energy = self._readout_with_features(readout_inputs)
            if self.is_first_layer:
                data[_keys.READOUT_FEATURES] = features
            else:
                data[_keys.READOUT_FEATURES] = torch.cat([data[_keys.READOUT_FEATURES], features], dim=-1)
        else:
            site_energy = self.readout(readout_inputs)
        if self.is_first_layer:
            data[AtomicDataDict.PER_ATOM_ENERGY_KEY] = site_energy
        else:
            data[AtomicDataDict.PER_ATOM_ENERGY_KEY] = (
                data[AtomicDataDict.PER_ATOM_ENERGY_KEY] + site_energy
            )
        return data
