"""Training stability on diverse structures, as a property: the shipped silicon config
(random, relaxed and distorted Si crystals, 11–52 Å³/atom) trains for a few epochs with
the shipped optimiser settings without diverging or rebounding.

The full study (10 epochs, 2 seeds, attention on/off, ν = 2, NequIP, Allegro) is
``python benchmarks/accuracy_budget.py --study stability --data silicon --max-epochs 10``;
two layers at lr 1e-2 with and without attention: ``--study divergence``.
"""

import math
import sys

import pytest

from workflow_utils import REPO, nequip_train, validation_force_mae, write_data_subset

sys.path.insert(0, str(REPO / "benchmarks"))
from accuracy_budget import worst_rebound  # noqa: E402

EPOCHS = 6


# two_layer_attention: the attention issue's case (two layers, 4 heads, the config's lr 1e-2,
# the builder's attention defaults). Its divergence did not reproduce on the bundled set nor
# on unshipped diverse alloys (docs/benchmarks.md), so this guards the property, it was never
# seen failing
@pytest.mark.parametrize("overrides", [(), ("num_heads=4",), ("num_layers=2", "num_heads=4")],
                         ids=["default", "attention", "two_layer_attention"])
def test_model_trains_stably_on_diverse_silicon(tmp_path, overrides):
    run_dir = tmp_path / "silicon"
    # every second training frame (343 of 687, all kinds, all densities), the whole
    # validation split; the model, loss, optimiser, clipping and scheduler as shipped
    data = write_data_subset(tmp_path / "data", n_train=343, n_val=86, n_test=5, source=REPO / "data" / "silicon_gfn1")
    nequip_train(
        run_dir, data, f"max_epochs={EPOCHS}", "max_time=00:00:30:00", "run=[train]", *overrides,
        config_name="flash_ace_silicon",
    )
    curve = validation_force_mae(run_dir)
    assert len(curve) >= EPOCHS, curve  # the sanity-check epoch 0 of Lightning may add one
    curve = curve[-EPOCHS:]
    assert all(math.isfinite(v) for v in curve), curve
    # learns: the last epoch is clearly better than the first
    assert curve[-1] < 0.9 * curve[0], curve
    # no rebound: after epoch 3, never worse than 1.3x the best epoch so far (the study's measure)
    assert worst_rebound(curve, after_epoch=3) <= 1.3, curve
