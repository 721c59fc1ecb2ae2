"""Model builders for Flash-ACE. Builders only validate arguments and wire modules."""

from typing import Dict, Optional, Sequence, Union

from e3nn.o3._irreps import Irreps

from nequip.data import AtomicDataDict
from nequip.model import model_builder
from nequip.model.energy_modules import _append_energy_modules
from nequip.nn import ForceStressOutput, PerTypeScaleShift, SequentialGraphNetwork
from nequip.nn.embedding import (
    AddRadialCutoffToData,
    BesselEdgeLengthEncoding,
    EdgeLengthNormalizer,
    NodeTypeEmbed,
    PolynomialCutoff,
    SphericalHarmonicEdgeAttrs,
)

from nequip_flash_ace.nn import FlashACELayer, InputGeometryCheck, LastLayerUncertainty, MessagePassingLocalityGuard


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _feature_irreps(num_features: int, l_max: int) -> Irreps:
    return Irreps([(num_features, (l, (-1) ** l)) for l in range(l_max + 1)])


@model_builder
def FlashACEModel(
    r_max: float,
    type_names: Sequence[str],
    num_layers: int = 1,
    l_max: int = 2,
    feature_l_max: int = 1,
    num_features: int = 32,
    num_radial: int = 8,
    correlation_order: int = 3,
    neighbour_normalization: str = "average",
    num_heads: int = 0,
    attention_head_dim: int = 8,
    attention_temperature_init: float = 0.0,
    attention_score_inputs: str = "descriptor",
    attention_normalized_scores: bool = True,
    radial_mlp_depth: int = 2,
    radial_mlp_width: int = 64,
    readout_mlp_hidden_layers_depth: int = 1,
    readout_mlp_hidden_layers_width: int = 16,
    readout_mlp_nonlinearity: Optional[str] = "silu",
    bessel_trainable: bool = False,
    polynomial_cutoff_p: int = 6,
    per_edge_type_cutoff: Optional[Dict[str, Union[float, Dict[str, float]]]] = None,
    avg_num_neighbors: Optional[Union[float, Dict[str, float]]] = None,
    per_type_energy_scales: Optional[Union[float, Dict[str, float]]] = None,
    per_type_energy_shifts: Optional[Union[float, Dict[str, float]]] = None,
    per_type_energy_scales_trainable: bool = False,
    per_type_energy_shifts_trainable: bool = False,
    pair_potential: Optional[Dict] = None,
    min_atom_distance: float = 0.1,
    last_layer_uncertainty: bool = False,
    do_derivatives: bool = True,
):
    """Flash-ACE: an Atomic Cluster Expansion message-passing potential with smooth neighbour attention.

    Args:
        seed (int): seed for reproducibility
        model_dtype (str): ``float32`` or ``float64``
        compile_mode (str): ``eager`` or ``compile`` (train-time ``torch.compile``)
        r_max (float): cutoff radius (Å)
        type_names (Sequence[str]): atom type names (alphanumeric)
        num_layers (int): ACE layers (default ``1``: strictly local, receptive field ``r_max``; more layers pass messages)
        l_max (int): highest angular momentum of the spherical harmonics and of the atomic basis ``A`` (default ``2``)
        feature_l_max (int): highest ``l`` of the node features passed between layers, ``<= l_max`` (default ``1``); the last layer outputs scalars only
        num_features (int): channels of every irrep (default ``32``)
        num_radial (int): number of Bessel radial basis functions (default ``8``)
        correlation_order (int): ACE correlation order ν, 1 to 4; each layer is (ν+1)-body in its inputs (default ``3``)
        neighbour_normalization (str): what the atomic-basis sum is divided by: ``average`` (default), the constant ``avg_num_neighbors``; ``coordination``, each atom's smooth coordination ``1 + Σ_j f_c(r_ij)``, which keeps the product basis's inputs the same size at every density
        num_heads (int): attention heads; ``0`` (default) is the plain ACE backbone, ``> 0`` reweights the neighbour sum
        attention_head_dim (int): query/key width per head (default ``8``)
        attention_temperature_init (float): initial score temperature of every head; ``0`` (default) starts every head uniform, ``w_ij = f_c(r_ij)``, i.e. from the plain backbone
        attention_score_inputs (str): what the attention query sees: ``descriptor`` (default; the centre's scalars and the invariants of a small 8-channel ACE descriptor of its neighbourhood, computed first, so the query reads the many-body environment and the layer's atomic and product basis run once; strictly local in one layer); ``pair``, the centre's scalar features (the type embedding in the first layer); ``environment``, also the centre's smooth coordination and mean radial embedding of its neighbourhood (strictly local, bounded)
        attention_normalized_scores (bool): scores from unit-RMS queries and keys, ``|s| <= sqrt(d) τ`` (default ``True``); ``False`` is the raw ``q · k`` of versions up to 0.2.0, kept for old checkpoints and the stability study's comparison
        radial_mlp_depth (int), radial_mlp_width (int): radial MLP size (default ``2``, ``64``)
        readout_mlp_hidden_layers_depth (int), readout_mlp_hidden_layers_width (int): last layer's readout MLP (default ``1``, ``16``); the other layers read out linearly
        readout_mlp_nonlinearity (str): readout MLP nonlinearity (default ``silu``)
        bessel_trainable (bool): trainable Bessel roots (default ``False``)
        polynomial_cutoff_p (int): exponent of the host's polynomial cutoff (default ``6``)
        per_edge_type_cutoff (dict): optional per-edge-type cutoffs ``<= r_max``, as in NequIP
        avg_num_neighbors (float/dict): the atomic-basis sum is divided by it (global or per type) when ``neighbour_normalization`` is ``average``
        per_type_energy_scales, per_type_energy_shifts (float/list): per-type scale and shift of the site energy (the shift is the isolated-atom energy)
        per_type_energy_scales_trainable, per_type_energy_shifts_trainable (bool)
        pair_potential (dict): optional pair potential, e.g. ``nequip.nn.pair_potential.ZBL``
        min_atom_distance (float): two atoms closer than this (Å) stop the model with an error naming them, as does a non-finite position or cell (default ``0.1``; ``0`` switches the distance check off)
        last_layer_uncertainty (bool): add ``LastLayerUncertainty`` (energy standard deviations per frame and per atom); set by ``python -m nequip_flash_ace.uncertainty``, which fits it after training (default ``False``)
        do_derivatives (bool): compute forces and stress by autograd (default ``True``)
    """
    # === validation: one clear message per bad argument ===
    _check(len(type_names) > 0, "`type_names` must contain at least one type")
    _check(
        all(isinstance(t, str) and t.isalnum() for t in type_names),
        f"`type_names` must be alphanumeric strings, got {list(type_names)}",
    )
    _check(len(set(type_names)) == len(type_names), f"`type_names` has duplicates: {list(type_names)}")
    _check(float(r_max) > 0, f"`r_max` must be positive, got {r_max}")
    _check(int(num_layers) >= 1, f"`num_layers` must be >= 1, got {num_layers}")
    _check(int(l_max) >= 0, f"`l_max` must be >= 0, got {l_max}")
    _check(
        0 <= int(feature_l_max) <= int(l_max),
        f"`feature_l_max` must be between 0 and `l_max` ({l_max}), got {feature_l_max}",
    )
    _check(int(num_features) >= 1, f"`num_features` must be >= 1, got {num_features}")
    _check(int(num_radial) >= 1, f"`num_radial` must be >= 1, got {num_radial}")
    # `correlation_order` (ProductBasis), `num_features` vs `num_heads`,
    # `neighbour_normalization` and `avg_num_neighbors` (FlashACELayer) are validated by
    # the modules that need them, with the same one-line errors
    _check(int(num_heads) >= 0, f"`num_heads` must be >= 0 (0 = no attention), got {num_heads}")
    if num_heads > 0:
        _check(attention_head_dim >= 1, f"`attention_head_dim` must be >= 1, got {attention_head_dim}")
    _check(radial_mlp_depth >= 0, f"`radial_mlp_depth` must be >= 0, got {radial_mlp_depth}")
    _check(radial_mlp_width >= 1, f"`radial_mlp_width` must be >= 1, got {radial_mlp_width}")
    _check(
        readout_mlp_hidden_layers_depth >= 0,
        f"`readout_mlp_hidden_layers_depth` must be >= 0, got {readout_mlp_hidden_layers_depth}",
    )
    if per_edge_type_cutoff is not None:
        unknown = set(per_edge_type_cutoff) - set(type_names)
        _check(not unknown, f"`per_edge_type_cutoff` names unknown type(s) {sorted(unknown)}; `type_names` is {list(type_names)}")
    for name, value in (("per_type_energy_scales", per_type_energy_scales), ("per_type_energy_shifts", per_type_energy_shifts)):
        if isinstance(value, dict) or hasattr(value, "keys"):
            unknown = set(value.keys()) - set(type_names)
            missing = set(type_names) - set(value.keys())
            _check(
                not unknown and not missing,
                f"`{name}` must map every type in {list(type_names)} to a number; unknown {sorted(unknown)}, missing {sorted(missing)}",
            )

    # === embeddings (host modules) ===
    type_embed = NodeTypeEmbed(type_names=type_names, num_features=num_features)
    spharm = SphericalHarmonicEdgeAttrs(
        irreps_edge_sh=Irreps.spherical_harmonics(lmax=l_max),
        irreps_in=type_embed.irreps_out,
    )
    edge_norm = EdgeLengthNormalizer(
        r_max=r_max,
        type_names=type_names,
        per_edge_type_cutoff=per_edge_type_cutoff,
        irreps_in=spharm.irreps_out,
    )
    radial_encode = BesselEdgeLengthEncoding(
        num_bessels=num_radial,
        trainable=bessel_trainable,
        cutoff=PolynomialCutoff(polynomial_cutoff_p),
        edge_invariant_field=AtomicDataDict.EDGE_EMBEDDING_KEY,
        irreps_in=edge_norm.irreps_out,
    )
    modules = {}
    if num_layers > 1:
        # message passing is not strictly local: refuse the ghost-atom (pair_allegro) layout
        modules["locality_guard"] = MessagePassingLocalityGuard(num_layers=num_layers)
    modules.update({
        "type_embed": type_embed,
        "spharm": spharm,
        "edge_norm": edge_norm,
        "radial_encode": radial_encode,
    })
    prev_irreps = radial_encode.irreps_out
    if num_heads > 0 or neighbour_normalization == "coordination":
        # the envelope f_c(r_ij) (attention, coordination) is the cutoff the radial basis uses
        envelope = AddRadialCutoffToData(
            cutoff=PolynomialCutoff(polynomial_cutoff_p), irreps_in=prev_irreps
        )
        modules["attention_envelope"] = envelope
        prev_irreps = envelope.irreps_out

    # === ACE layers ===
    for layer_i in range(num_layers):
        is_last = layer_i == num_layers - 1
        layer = FlashACELayer(
            irreps_in=prev_irreps,
            feature_irreps_out=_feature_irreps(num_features, 0 if is_last else feature_l_max),
            type_names=type_names,
            l_max=l_max,
            num_features=num_features,
            correlation_order=correlation_order,
            neighbour_normalization=neighbour_normalization,
            avg_num_neighbors=avg_num_neighbors,
            radial_mlp_depth=radial_mlp_depth,
            radial_mlp_width=radial_mlp_width,
            num_heads=num_heads,
            attention_head_dim=attention_head_dim,
            attention_temperature_init=attention_temperature_init,
            attention_score_inputs=attention_score_inputs,
            attention_normalized_scores=attention_normalized_scores,
            readout_mlp_hidden_layers_depth=readout_mlp_hidden_layers_depth if is_last else 0,
            readout_mlp_hidden_layers_width=readout_mlp_hidden_layers_width if is_last else None,
            readout_mlp_nonlinearity=readout_mlp_nonlinearity,
            is_first_layer=layer_i == 0,
        )
        modules[f"layer{layer_i}"] = layer
        prev_irreps = layer.irreps_out

    modules["per_type_energy_scale_shift"] = PerTypeScaleShift(
        type_names=type_names,
        field=AtomicDataDict.PER_ATOM_ENERGY_KEY,
        out_field=AtomicDataDict.PER_ATOM_ENERGY_KEY,
        scales=per_type_energy_scales,
        shifts=per_type_energy_shifts,
        scales_trainable=per_type_energy_scales_trainable,
        shifts_trainable=per_type_energy_shifts_trainable,
        irreps_in=prev_irreps,
    )
    prev_irreps = modules["per_type_energy_scale_shift"].irreps_out
    if last_layer_uncertainty:
        layers = [modules[f"layer{i}"] for i in range(num_layers)]
        for layer in layers:
            layer.store_readout_features = True
        modules["uncertainty"] = LastLayerUncertainty(
            num_features=sum(layer.readout_feature_dim for layer in layers),
            num_types=len(type_names),
            irreps_in=prev_irreps,
        )
        prev_irreps = modules["uncertainty"].irreps_out
    # last, so that the edge lengths it checks are already computed
    modules["geometry_check"] = InputGeometryCheck(min_distance=min_atom_distance, irreps_in=prev_irreps)

    energy_model = SequentialGraphNetwork(modules)
    energy_model = _append_energy_modules(
        model=energy_model, type_names=type_names, pair_potential=pair_potential
    )
    return ForceStressOutput(energy_model, do_derivatives)
