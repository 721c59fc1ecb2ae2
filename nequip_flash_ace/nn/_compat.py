"""Loading checkpoints written by nequip-flash-ace 0.1.x.

Every shim that adapts an older state dict lives here, called from the owning module's
``_load_from_state_dict``. They are removed in version 0.3.0; a 0.1 checkpoint can be
carried over by loading it with 0.2.x and saving it again (``nequip-package build``).
"""

import torch

REMOVED_IN = "0.3.0"


def drop_tensor_product_scatter_keys(state_dict: dict, prefix: str) -> None:
    """``FlashACELayer`` before ``AtomicBasis`` (0.1): the host's ``TensorProductScatter``
    held an empty weight and constant buffers (output mask, Wigner 3j) under
    ``tp_scatter.``; the function is the same, so they are dropped."""
    for key in [k for k in state_dict if k.startswith(prefix + "tp_scatter.")]:
        del state_dict[key]


def check_and_drop_dense_couplings(product_basis, state_dict: dict, prefix: str, error_msgs: list) -> None:
    """``ProductBasis`` before the sparse evaluation (0.1) saved its dense coupling tensors
    ``coupling_{irrep}_{order}``. They are fixed by the hyperparameters: compare them with
    the ones this version derives (a refusal names the key), then drop them."""
    from .coupling import symmetric_coupling_basis

    for i_out, (_, ir) in enumerate(product_basis.irreps_out):
        for k in range(1, product_basis.correlation_order + 1):
            key = f"{prefix}coupling_{i_out}_{k}"
            if key not in state_dict:
                continue
            saved = state_dict.pop(key)
            expected = symmetric_coupling_basis(product_basis.l_max, k, ir.l, ir.p)
            # a different basis (order, sign, mixing) differs by O(0.1); 1e-5 allows for
            # buffers that were float32 before the model was cast to float64
            if saved.shape != expected.shape or not torch.allclose(
                saved.to(torch.float64), expected, atol=1e-5, rtol=0.0
            ):
                error_msgs.append(
                    f"{key}: the saved coupling coefficients differ from the ones this version derives for "
                    f"l_max={product_basis.l_max}, order {k}, irrep {ir}; the checkpoint cannot be loaded with this code"
                )


def add_missing_coupling_fingerprint(product_basis, state_dict: dict, prefix: str) -> None:
    """Checkpoints of 0.1 have no ``coupling_fingerprint``; their couplings were checked
    by :func:`check_and_drop_dense_couplings` (dense) or are this version's (sparse 0.1),
    so the fingerprint of this version is put in."""
    key = prefix + "coupling_fingerprint"
    if key not in state_dict:
        state_dict[key] = product_basis.coupling_fingerprint.clone()


def default_attention_temperature(attention, state_dict: dict, prefix: str) -> None:
    """``NeighbourAttention`` before the learned temperature computed ``q·k/√d``: τ = 1."""
    key = prefix + "score_temperature"
    if key not in state_dict:
        state_dict[key] = torch.ones_like(attention.score_temperature)


def raw_attention_scores(attention, state_dict: dict, prefix: str) -> None:
    """``NeighbourAttention`` before the normalised scores (0.2.0) used the raw ``q · k``:
    such checkpoints have no ``normalized_scores`` buffer and load with it set to 0."""
    key = prefix + "normalized_scores"
    if key not in state_dict:
        state_dict[key] = torch.zeros_like(attention.normalized_scores)
