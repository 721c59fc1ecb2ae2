"""Start-up warnings for knob values measured to train worse: warnings, not errors."""

import warnings

import pytest
from omegaconf import OmegaConf

from nequip_flash_ace.train import ConfigGuardrails, FlashACEConfigWarning, config_advice

from workflow_utils import CONFIG_DIR

SAFE = dict(l_max=2, num_radial=8, lr=1e-2)


def test_shipped_defaults_get_no_advice():
    assert config_advice(**SAFE) == []


@pytest.mark.parametrize(
    "update,needle",
    [
        (dict(l_max=1), "1.45x"),
        (dict(num_radial=4), "1.09-1.10x"),
        (dict(lr=1e-3), "3.3x"),
    ],
)
def test_each_measured_problem_is_named_with_its_measurement(update, needle):
    advice = config_advice(**dict(SAFE, **update))
    assert len(advice) == 1, advice
    assert needle in advice[0] and "docs/benchmarks.md" in advice[0]


def test_what_was_never_measured_to_hurt_gets_no_advice():
    # larger l_max, more radial functions, lr 5e-3 to 2e-2: measured within noise or better
    for update in (dict(l_max=3), dict(num_radial=12), dict(lr=5e-3), dict(lr=2e-2)):
        assert config_advice(**dict(SAFE, **update)) == [], update


def test_callback_warns_once_per_problem_at_construction():
    with pytest.warns(FlashACEConfigWarning) as record:
        cb = ConfigGuardrails(l_max=1, num_radial=4, lr=1e-3)
    messages = [str(r.message) for r in record if issubclass(r.category, FlashACEConfigWarning)]
    assert len(messages) == len(cb.advice) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlashACEConfigWarning)
        ConfigGuardrails(**SAFE)  # nothing to say: no warning


def test_shipped_configs_pass_their_own_guardrails():
    from hydra import compose, initialize_config_dir

    # composed as nequip-train composes them: a preset's knobs on the config it builds on
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        for name in ("flash_ace", "flash_ace_paracetamol", "flash_ace_silicon", "flash_ace_deep"):
            cfg = compose(config_name=name)
            advice = config_advice(l_max=cfg.l_max, num_radial=cfg.num_radial, lr=cfg.lr)
            assert advice == [], (name, advice)


def test_deep_preset_composes_with_hydra():
    """The hour's preset is the molecule's config (two layers, no attention) with l_max, schedule and stopping changed;
    the training knobs measured for that config (lr, batch, clip, loss weights, scheduler)
    and the rest of its model are inherited."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        base = compose(config_name="flash_ace_paracetamol")
        cfg = compose(config_name="flash_ace_deep")
    model = cfg.training_module.model
    assert (model.num_layers, model.num_heads) == (2, 0)
    assert cfg.trainer.max_time == "00:01:00:00" and cfg.trainer.max_epochs == 1000
    for key in ("lr", "batch_size", "gradient_clip_val", "energy_weight", "forces_weight", "chemical_symbols"):
        assert cfg[key] == base[key], key
    # the molecule's data (unresolved: it names the folder through hydra's runtime cwd)
    assert OmegaConf.to_container(cfg, resolve=False)["data_dir"].endswith("/data/paracetamol_gfn2")
    # l_max 3 and readout MLP 16, as the preset was measured; the rest is the molecule config's
    assert (model.l_max, model.readout_mlp_hidden_layers_width) == (3, 16)
    assert (model.num_radial, model.num_features) == (base.training_module.model.num_radial, base.training_module.model.num_features)
    assert [c._target_ for c in cfg.trainer.callbacks] == [c._target_ for c in base.trainer.callbacks]
    # the hour's slower schedule (lr halves after 10 stagnant epochs, stop after 25); the
    # scheduler is otherwise the molecule's
    assert (cfg.lr_patience, cfg.early_stopping_patience) == (10, 25)
    assert cfg.training_module.lr_scheduler.scheduler.patience == 10
    schedulers = [OmegaConf.to_container(c.training_module.lr_scheduler, resolve=True) for c in (cfg, base)]
    for scheduler in schedulers:
        del scheduler["scheduler"]["patience"]
    assert schedulers[0] == schedulers[1]
