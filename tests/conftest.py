# the host's shared fixtures (molecules, bulk carbon, Cu bulk, float64 default dtype, ...)
from nequip.utils.unittests.conftest import *  # noqa: F401,F403

# ------------------------------------------------------------------------------------
# Trained and compiled models shared by the workflow and real-LAMMPS tests: each
# `nequip-train` / `nequip-compile` runs once per session (a compile takes minutes).
import pytest  # noqa: E402

from workflow_utils import nequip_compile, nequip_train, write_data_subset  # noqa: E402


@pytest.fixture(scope="session")
def data_subset(tmp_path_factory):
    return write_data_subset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def run_attention_f64(tmp_path_factory, data_subset):
    """The 2-layer (message-passing) attention model, float64: (run_dir, nequip-train process)."""
    run_dir = tmp_path_factory.mktemp("train") / "run_attention_f64"
    proc = nequip_train(
        run_dir, data_subset, "max_epochs=2", "model_dtype=float64", "num_features=16", "num_layers=2", "num_heads=4"
    )
    return run_dir, proc


@pytest.fixture(scope="session")
def run_backbone_f32(tmp_path_factory, data_subset):
    """The 2-layer backbone without attention, float32: run_dir."""
    run_dir = tmp_path_factory.mktemp("train") / "run_backbone_f32"
    nequip_train(run_dir, data_subset, "max_epochs=1", "model_dtype=float32", "num_heads=0", "num_features=16", "num_layers=2")
    return run_dir


@pytest.fixture(scope="session")
def run_local_f64(tmp_path_factory, data_subset):
    """The strictly local preset (configs/flash_ace_local.yaml, one layer), float64, with
    attention whose query reads the centre's many-body descriptor (the option that reads
    most of an atom's surroundings, so the one a domain split would break first; its
    temperature starts at 1, not 0, so that the scores matter from the first step): run_dir."""
    run_dir = tmp_path_factory.mktemp("train") / "run_local_f64"
    nequip_train(
        run_dir, data_subset, "max_epochs=1", "model_dtype=float64", "num_features=16",
        "num_heads=4", "attention_score_inputs=descriptor", "+training_module.model.attention_temperature_init=1.0",
        config_name="flash_ace_local",
    )
    return run_dir


@pytest.fixture(scope="session")
def ase_artifact(run_attention_f64):
    """(run_dir, AOTInductor artefact for the ASE calculator) of the float64 attention model."""
    run_dir, _ = run_attention_f64
    out = run_dir / "model_ase.nequip.pt2"
    nequip_compile(run_dir / "best.ckpt", out, "ase")
    return run_dir, out


@pytest.fixture(scope="session")
def pair_nequip_attention_f64(run_attention_f64):
    """(checkpoint, AOTInductor artefact for pair_style nequip) of the float64 attention model."""
    run_dir, _ = run_attention_f64
    out = run_dir / "model_lmp.nequip.pt2"
    nequip_compile(run_dir / "best.ckpt", out, "pair_nequip")
    return run_dir / "best.ckpt", out


@pytest.fixture(scope="session")
def pair_nequip_backbone_f32(run_backbone_f32):
    out = run_backbone_f32 / "model_lmp.nequip.pt2"
    nequip_compile(run_backbone_f32 / "best.ckpt", out, "pair_nequip")
    return run_backbone_f32 / "best.ckpt", out


@pytest.fixture(scope="session")
def pair_allegro_local_f64(run_local_f64):
    """(checkpoint, AOTInductor artefact for pair_style allegro) of the one-layer float64 model."""
    out = run_local_f64 / "model_local.nequip.pt2"
    nequip_compile(run_local_f64 / "best.ckpt", out, "pair_allegro")
    return run_local_f64 / "best.ckpt", out
