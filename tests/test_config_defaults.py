"""One source of truth for the model's defaults: the builder's signature.

The shipped configs repeat the model knobs at the top (so that ``num_heads=4`` is a
command-line override); a value that differs from ``FlashACEModel``'s default must carry a
comment on its line, or on the comment lines right above it, saying why."""

import inspect
import re

import pytest
from omegaconf import OmegaConf

from nequip_flash_ace.model import FlashACEModel

from workflow_utils import CONFIG_DIR

BUILDER_DEFAULTS = {
    name: p.default for name, p in inspect.signature(FlashACEModel).parameters.items()
    if p.default is not inspect.Parameter.empty
}
# model arguments every config derives from its data, never a choice of model
FROM_DATA = {"seed", "model_dtype", "type_names", "r_max", "avg_num_neighbors", "per_type_energy_shifts",
             "per_type_energy_scales", "_target_"}
SHIPPED = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _model_knobs(config: dict) -> dict:
    """builder argument -> the top-level knob its model-block entry interpolates (``${knob}``),
    or ``None`` for an entry written as a literal value."""
    block = config.get("training_module", {}).get("model", {})
    out = {}
    for arg, value in block.items():
        match = re.fullmatch(r"\$\{(\w+)\}", str(value))
        out[arg] = match.group(1) if match else None
    return out


def _is_commented(lines, key) -> bool:
    """Whether the line setting top-level ``key`` has a comment, or a comment block sits
    right above it."""
    for i, line in enumerate(lines):
        if re.match(rf"{re.escape(key)}\s*:", line):
            return "#" in line or (i > 0 and lines[i - 1].lstrip().startswith("#"))
    return False


def undocumented_differences(text: str, base_text: str = None) -> list:
    """``(knob, value, builder default)`` for every model knob the config ``text`` sets
    to a value other than the builder's default without a comment; a preset (a config
    with ``defaults``) is read through the model block of the config it builds on."""
    config = OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    mapping_source = config if base_text is None else OmegaConf.to_container(OmegaConf.create(base_text), resolve=False)
    lines = text.splitlines()
    bad = []
    for arg, knob in _model_knobs(mapping_source).items():
        if arg in FROM_DATA or arg not in BUILDER_DEFAULTS:
            continue
        if knob is None:  # a literal in the model block
            value = config.get("training_module", {}).get("model", {}).get(arg)
            key = arg
        elif knob in config:
            value, key = config[knob], knob
        else:
            continue
        if value is not None and value != BUILDER_DEFAULTS[arg] and not _is_commented(lines, key):
            bad.append((key, value, BUILDER_DEFAULTS[arg]))
    return bad


def _base_of(config_text: str):
    defaults = OmegaConf.create(config_text).get("defaults")
    return None if not defaults else (CONFIG_DIR / f"{defaults[0]}.yaml").read_text()


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_differ_from_builder_defaults_only_with_a_reason(name):
    text = (CONFIG_DIR / f"{name}.yaml").read_text()
    assert undocumented_differences(text, _base_of(text)) == []


def test_the_quick_start_config_trains_the_builders_default_model():
    """``flash_ace.yaml`` is the model a user gets from ``FlashACEModel(r_max, type_names)``."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        model = compose(config_name="flash_ace").training_module.model
    for arg in model:
        if arg not in FROM_DATA:
            assert model[arg] == BUILDER_DEFAULTS[arg], (arg, model[arg], BUILDER_DEFAULTS[arg])


def test_the_check_catches_an_uncommented_difference():
    base = "l_max: 2\nnum_heads: 0\ntraining_module:\n  model:\n    l_max: ${l_max}\n    num_heads: ${num_heads}\n    num_radial: 8\n"
    assert undocumented_differences(base) == []
    assert undocumented_differences(base.replace("l_max: 2", "l_max: 3")) == [("l_max", 3, 2)]
    assert undocumented_differences(base.replace("l_max: 2", "l_max: 3  # measured on this set")) == []
    assert undocumented_differences(base.replace("num_radial: 8", "num_radial: 4")) == [("num_radial", 4, 8)]
    # a preset is read through its base's model block
    preset = "defaults: [base, _self_]\n# why\nnum_heads: 4\nl_max: 1\n"
    assert undocumented_differences(preset, base) == [("l_max", 1, 2)]


@pytest.mark.parametrize("name", SHIPPED)
def test_schedule_knobs_reach_the_scheduler_and_the_early_stopping(name):
    """``lr_patience`` and ``early_stopping_patience`` are what the learning-rate scheduler
    and the early-stopping callback of every shipped config read."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        cfg = compose(config_name=name, overrides=["lr_patience=11", "early_stopping_patience=27"])
    assert cfg.training_module.lr_scheduler.scheduler.patience == 11
    stoppers = [c for c in cfg.trainer.callbacks if c["_target_"].endswith("EarlyStopping")]
    assert len(stoppers) == 1 and stoppers[0].patience == 27
