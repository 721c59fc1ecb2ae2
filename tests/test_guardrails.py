"""Start-up advice for risky knob combinations: warnings, not errors."""

import warnings

import pytest
from omegaconf import OmegaConf

from nequip_flash_ace.train import ConfigGuardrails, FlashACEConfigWarning, config_advice

from workflow_utils import CONFIG_DIR

SAFE = dict(num_layers=2, num_heads=4, l_max=2, num_radial=8, lr=1e-2, gradient_clip_val=None, batch_size=4)


def test_shallow_defaults_get_no_advice():
    assert config_advice(**SAFE) == []


@pytest.mark.parametrize(
    "update,needle",
    [
        (dict(num_layers=4, lr=5e-3, gradient_clip_val=None, batch_size=16), "gradient_clip_val"),
        (dict(num_layers=5, lr=1e-2, gradient_clip_val=0.0, batch_size=16), "lr between 1e-3 and 5e-4"),
        (dict(num_layers=4, lr=1e-3, num_radial=6, batch_size=16), "num_radial >= 8"),
        (dict(num_layers=4, lr=1e-3, l_max=1, batch_size=16), "l_max >= 2"),
        (dict(num_layers=4, lr=1e-3, batch_size=4), "accumulate_grad_batches"),
    ],
)
def test_each_risky_combination_is_named(update, needle):
    advice = config_advice(**dict(SAFE, **update))
    assert len(advice) == 1, advice
    assert needle in advice[0]


def test_the_suggested_fixes_silence_the_advice():
    assert config_advice(**dict(SAFE, num_layers=4, lr=1e-3, gradient_clip_val=5.0, batch_size=8)) == []
    # gradient accumulation counts towards the effective batch
    assert config_advice(**dict(SAFE, num_layers=4, lr=1e-3, gradient_clip_val=5.0, batch_size=4, accumulate_grad_batches=2)) == []
    # without attention the lr/clipping and batch rules do not apply
    assert config_advice(**dict(SAFE, num_layers=6, num_heads=0, lr=1e-2, batch_size=2)) == []


def test_callback_warns_once_per_problem_at_construction():
    with pytest.warns(FlashACEConfigWarning) as record:
        cb = ConfigGuardrails(num_layers=4, num_heads=2, l_max=1, num_radial=4, lr=1e-2, gradient_clip_val=None, batch_size=2)
    messages = [str(r.message) for r in record if issubclass(r.category, FlashACEConfigWarning)]
    assert len(messages) == len(cb.advice) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlashACEConfigWarning)
        ConfigGuardrails(**SAFE)  # nothing to say: no warning


def test_shipped_configs_pass_their_own_guardrails():
    from hydra import compose, initialize_config_dir

    # composed as nequip-train composes them: a preset's knobs on the config it builds on
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        for name in ("flash_ace", "flash_ace_paracetamol", "flash_ace_deep"):
            cfg = compose(config_name=name)
            advice = config_advice(
                num_layers=cfg.num_layers, num_heads=cfg.num_heads, l_max=cfg.l_max, num_radial=cfg.num_radial,
                lr=cfg.lr, gradient_clip_val=cfg.gradient_clip_val, batch_size=cfg.batch_size,
                accumulate_grad_batches=cfg.get("accumulate_grad_batches", 1),
            )
            assert advice == [], (name, advice)


def test_deep_preset_composes_with_hydra():
    """The deeper preset is the molecule's config with depth, attention and stopping changed;
    the training knobs measured for that config (lr, batch, clip, loss weights, scheduler)
    and the rest of its model are inherited."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        base = compose(config_name="flash_ace_paracetamol")
        cfg = compose(config_name="flash_ace_deep")
    model = cfg.training_module.model
    assert (model.num_layers, model.num_heads, model.attention_score_inputs) == (2, 4, "environment")
    assert cfg.trainer.max_time == "00:01:00:00" and cfg.trainer.max_epochs == 300
    for key in ("lr", "batch_size", "gradient_clip_val", "energy_weight", "forces_weight", "chemical_symbols"):
        assert cfg[key] == base[key], key
    # the molecule's data (unresolved: it names the folder through hydra's runtime cwd)
    assert OmegaConf.to_container(cfg, resolve=False)["data_dir"].endswith("/data/paracetamol_gfn2")
    # the rest of the model is the molecule config's (l_max 3, readout MLP 16)
    assert (model.l_max, model.readout_mlp_hidden_layers_width) == (3, 16)
    assert model.l_max == base.training_module.model.l_max
    assert [c._target_ for c in cfg.trainer.callbacks] == [c._target_ for c in base.trainer.callbacks]
    assert cfg.training_module.lr_scheduler == base.training_module.lr_scheduler
