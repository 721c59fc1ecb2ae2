"""Smoke checks of the benchmark entry points at tiny sizes: the machinery that produces
the benchmark tables of docs/benchmarks.md (side-by-side timing, per-work peak memory, in-process
AOTInductor compile, Hydra-composed peer runs with measured time curves) must keep
working. The full runs are in docs/benchmarks.md."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import _harness  # noqa: E402
import accuracy_budget  # noqa: E402
import speed_vs_peers  # noqa: E402

WIDTHS = {"nequip": 16, "allegro": 32}  # small peers keep the smoke test quick


def test_peak_memory_isolates_each_piece_of_work():
    with _harness.PeakMemory() as big:
        x = torch.ones(50_000_000)  # 200 MB
        x += 1
        del x
    with _harness.PeakMemory() as small:
        y = torch.ones(1_000_000)  # 4 MB
        del y
    assert 180 < big.peak_mb < 400, big.peak_mb
    # the high-water mark of the first block must not leak into the second
    assert small.peak_mb < 50, small.peak_mb


def test_param_matched_widths_match_flash_ace():
    types = ["Cu", "Au"]
    # a 2-layer model: the shipped 1-layer one (19k) is below the smallest 4-layer NequIP
    flash = dict(_harness.FLASH_ACE, num_layers=2, num_heads=4)
    target = _harness.count_params(flash, types)
    widths = _harness.param_matched_widths(types, flash)
    for family, kwargs in (("nequip", _harness.nequip_kwargs), ("allegro", _harness.allegro_kwargs)):
        n = _harness.count_params(kwargs(widths[family]), types)
        assert abs(n - target) / target < 0.15, (family, widths[family], n, target)


@pytest.mark.slow
def test_speed_side_by_side_with_compile(tmp_path, monkeypatch):
    monkeypatch.setattr(speed_vs_peers, "RESULTS", tmp_path)
    monkeypatch.setattr(speed_vs_peers, "COMPILED_DIR", tmp_path / "compiled")
    compiled = speed_vs_peers.compile_case("allegro", WIDTHS)
    assert Path(compiled["path"]).is_file() and compiled["compile_s"] > 0
    rows = []
    for system in ("molecule21", "bulk_32", "bulk_108", "bulk_256"):
        rows += speed_vs_peers.system_case(system, WIDTHS, {"allegro": compiled["path"]}, repeats=1)
    models = set(_harness.peer_models(WIDTHS))
    for system in ("molecule21", "bulk_32", "bulk_108", "bulk_256"):
        here = [r for r in rows if r["system"] == system]
        assert {r["model"] for r in here if r["backend"] == "eager" and r["mode"] == "ef"} == models
        assert all(r["seconds"] > 0 and r["peak_mb"] >= 0 for r in here)
    # training steps only where asked; compiled artefacts only for the bulk type set
    assert {r["system"] for r in rows if r["mode"] == "train"} == {"molecule21", "bulk_108"}
    assert {r["system"] for r in rows if r["backend"] == "aotinductor"} == {"bulk_32", "bulk_108", "bulk_256"}
    # the scaling fit works for every model (its sign is a timing, which tests do not
    # judge: with one repeat and a busy machine it can come out negative)
    for model in models:
        exponent = speed_vs_peers.scaling(rows, model, "eager", "seconds")
        assert exponent is not None and np.isfinite(exponent), (model, exponent)
    speed_vs_peers.write_report(rows, [dict(compiled, model="allegro")], WIDTHS, "smoke")
    text = (tmp_path / "smoke.md").read_text()
    assert "Scaling exponents" in text and "aotinductor" in text
    assert (tmp_path / "smoke.png").stat().st_size > 10_000
    assert len(json.loads((tmp_path / "smoke.json").read_text())["results"]) == len(rows)


def test_preset_must_build_on_a_data_set_config(tmp_path, monkeypatch):
    """A preset's knobs are what it sets on top of one data set's config; one built on
    anything else would be put on the study's data set with knobs missing, so it stops."""
    monkeypatch.setattr(accuracy_budget, "BENCH_CONFIGS", tmp_path)
    (tmp_path / "on_deep.yaml").write_text("defaults:\n  - flash_ace_deep\n  - _self_\nnum_layers: 3\n")
    with pytest.raises(ValueError, match=r"defaults \['flash_ace_deep', '_self_'\]; a preset must build on one data set's config"):
        accuracy_budget.preset_changes("on_deep")
    (tmp_path / "on_silicon.yaml").write_text("defaults:\n  - flash_ace_silicon\n  - _self_\nnum_layers: 3\nmax_time: 1\n")
    assert accuracy_budget.preset_changes("on_silicon") == ({"num_layers": 3}, {})


def test_study_settings_compose(tmp_path):
    expected = {"peers": 5, "long": 4, "defaults": 8, "attention": 7, "scores": 3, "knobs": 18, "depth": 8, "ablation": 6, "local": 2, "stability": 5, "divergence": 3, "attention_knobs": 5, "attention_check": 3}
    for study, count in expected.items():
        settings = accuracy_budget.settings_for(study)
        assert len(settings) == count, (study, sorted(settings))
    from omegaconf import OmegaConf

    ablation = accuracy_budget.settings_for("ablation")
    config_name, knobs, _ = ablation["4L_att_lr_1e-2"]
    cfg = OmegaConf.load(accuracy_budget.write_run_config(tmp_path, config_name, knobs, None, 3, 2.0) / "bench.yaml")
    assert cfg.lr == 0.01 and cfg.num_layers == 4 and cfg.gradient_clip_val == 5.0  # one knob moved, the rest of the preset kept
    assert cfg.max_time == "00:00:02:00" and cfg.seed == 3
    assert [d.file_path.split("/")[-1] for d in cfg.data.val_dataset] == ["val.xyz", "test.xyz"]
    # the replaced deep preset, kept in benchmarks/configs/ for these studies, as it was
    assert cfg.batch_size == 8 and cfg.trainer.accumulate_grad_batches == 2 and cfg.energy_warmup_weight == 10.0
    assert cfg.training_module.lr_scheduler.scheduler.patience == 2
    # a preset of configs/ put on another data set's config; the study's budget beats the preset's
    config_name, knobs, _ = accuracy_budget.settings_for("long", "paracetamol")["flash_ace_deep"]
    cfg = OmegaConf.load(
        accuracy_budget.write_run_config(tmp_path / "deep", config_name, knobs, None, 0, 15, "paracetamol") / "bench.yaml"
    )
    assert cfg.chemical_symbols == ["H", "C", "N", "O"] and cfg.data_dir.endswith("data/paracetamol_gfn2")
    model = accuracy_budget.flash_model_kwargs(cfg)
    assert (model["num_layers"], model["num_heads"]) == (2, 0)
    assert (model["l_max"], model["readout_mlp_hidden_layers_width"]) == (3, 16)  # the molecule config's, not Cu-Au's
    assert cfg.max_time == "00:00:15:00" and cfg.max_epochs == 1000
    # the same preset (built on the molecule's config) put on Cu-Au's: its knobs only, the rest Cu-Au's
    config_name, knobs, _ = accuracy_budget.settings_for("long", "cuau")["flash_ace_deep"]
    cfg = OmegaConf.load(accuracy_budget.write_run_config(tmp_path / "deep_cuau", config_name, knobs, None, 0, 60) / "bench.yaml")
    model = accuracy_budget.flash_model_kwargs(cfg)
    assert cfg.chemical_symbols == ["Cu", "Au"] and cfg.max_time == "00:01:00:00"
    assert (model["num_layers"], model["num_heads"], model["l_max"], model["readout_mlp_hidden_layers_width"]) == (2, 0, 3, 16)
    config_name, knobs, _ = accuracy_budget.settings_for("local")["flash_ace_local_1L"]
    cfg = OmegaConf.load(accuracy_budget.write_run_config(tmp_path / "local", config_name, knobs, None, 0, 2.5) / "bench.yaml")
    assert cfg.num_layers == 1 and cfg.training_module.model.num_layers == 1
    # another data set: its own config, data folder and types
    config_name, knobs, _ = accuracy_budget.settings_for("stability", "silicon")["flash_ace_attention"]
    cfg = OmegaConf.load(
        accuracy_budget.write_run_config(tmp_path / "si", config_name, knobs, None, 0, 2.5, "silicon", 10) / "bench.yaml"
    )
    assert cfg.chemical_symbols == ["Si"] and cfg.num_heads == 4 and cfg.max_epochs == 10
    assert cfg.data_dir.endswith("data/silicon_gfn1")
    # a generated data set (not shipped): its folder under runs/ and its own species on the silicon config
    config_name, knobs, _ = accuracy_budget.settings_for("attention_check", "alloy_emt")["flash_ace_attention_defaults"]
    cfg = OmegaConf.load(
        accuracy_budget.write_run_config(tmp_path / "alloy", config_name, knobs, None, 0, 60, "alloy_emt", 10) / "bench.yaml"
    )
    assert cfg.chemical_symbols == ["Al", "Ni", "Cu", "Pd"] and cfg.data_dir == str(accuracy_budget.GENERATED_DATA["alloy_emt"])
    assert cfg.forces_weight == 10.0 and cfg.num_heads == 4 and cfg.training_module.model.type_names == ["Al", "Ni", "Cu", "Pd"]
    # the parameter count follows the model the run trains, knobs outside the top level included
    assert accuracy_budget.flash_model_kwargs(cfg)["num_heads"] == 4
    # model-block knobs that are not top-level config keys reach the builder (the 0.1.x attention)
    config_name, knobs, _ = accuracy_budget.settings_for("divergence", "alloy_emt")["flash_ace_2L_attention_raw"]
    cfg = OmegaConf.load(
        accuracy_budget.write_run_config(tmp_path / "raw", config_name, knobs, None, 0, 60, "alloy_emt", 10) / "bench.yaml"
    )
    block = cfg.training_module.model
    assert cfg.num_layers == 2 and block.num_heads == 4 and block.attention_score_inputs == "pair"
    assert block.attention_normalized_scores is False and block.attention_temperature_init == 1.0
    config_name, knobs, _ = accuracy_budget.settings_for("knobs")["flash_ace_radial_mlp_128"]
    cfg = OmegaConf.load(accuracy_budget.write_run_config(tmp_path / "knob", config_name, knobs, None, 0, 2.5) / "bench.yaml")
    model = accuracy_budget.flash_model_kwargs(cfg)
    assert model["radial_mlp_width"] == 128 and model["num_layers"] == 1 and model["num_heads"] == 0
    assert accuracy_budget.default_flash_kwargs("cuau") == accuracy_budget.flash_model_kwargs(
        OmegaConf.load(accuracy_budget.write_run_config(tmp_path / "default", "flash_ace", {}, None, 0, 2.5) / "bench.yaml")
    )
    with pytest.raises(ValueError, match="choose peers, long, defaults, attention, scores, knobs, depth, ablation, local, stability, divergence, attention_knobs or attention_check"):
        accuracy_budget.settings_for("width")


def test_stability_report_measures_rebounds_and_spread():
    """The diverse-structures checks: worst ratio to the best-so-far after epoch 3, seed spread."""
    assert accuracy_budget.worst_rebound([0.5, 0.4, 0.3, 0.2, 0.1]) == 1.0
    # epochs 1-3 may wobble freely; epoch 5 is 1.5x the best so far (0.2 at epoch 4)
    assert accuracy_budget.worst_rebound([0.5, 0.9, 0.3, 0.2, 0.3, 0.19]) == pytest.approx(1.5)
    assert accuracy_budget.worst_rebound([0.5, 0.9, 0.3]) == 1.0
    runs = [{"name": "a", "seed": s, "test_force_mae": 0.1, "curve_val_force_mae": [0.4, best, best + 0.05, best]}
            for s, best in ((0, 0.30), (1, 0.36))]
    text = accuracy_budget.stability_table(runs)
    assert "| a | 0 | 0.400 | 0.300 | 0.350 | 0.300 | 1.00 |" in text
    # the spread is the validation one (the test split reports, it never selects)
    assert "validation force MAE 0.3000–0.3600 eV/Å, spread (max − min) / mean = 18 %" in text


def _fake_run(name, seed, val, test):
    return {"name": name, "seed": seed, "params": 1, "epochs": 3, "test_force_mae": test, "test_force_rmse": test,
            "test_energy_mae": 0.001, "curve_s": [1.0, 2.0, 3.0], "curve_val_force_mae": [2 * val, val, 1.5 * val],
            "curve_val_energy_mae": [0.01] * 3}


def test_selection_reads_validation_only(tmp_path, monkeypatch):
    """On a table where validation and test disagree, the harness picks (and reports as
    chosen) the setting best on validation, shows test errors only for it and the peers,
    and its ratios are validation ratios."""
    results = [_fake_run("flash_ace_a", s, val=0.10, test=0.50) for s in (0, 1)]
    results += [_fake_run("flash_ace_b", s, val=0.20, test=0.05) for s in (0, 1)]  # best on test, worse on validation
    results += [_fake_run("nequip", 0, val=0.05, test=0.01)]  # a peer is compared, never chosen
    assert accuracy_budget.select(results) == "flash_ace_a"
    assert accuracy_budget.best_validation(results[0]) == 0.10
    monkeypatch.setattr(accuracy_budget, "RESULTS", tmp_path)
    accuracy_budget.write_report(results, "knobs", "fake", 2.5, [0, 1])
    text = (tmp_path / "fake.md").read_text()
    assert "Chosen on validation: **flash_ace_a**" in text
    row_b = next(line for line in text.splitlines() if line.startswith("| flash_ace_b "))
    assert "0.0500" not in row_b and "–" in row_b  # the unchosen setting's test error is not shown
    assert "0.5000" in next(line for line in text.splitlines() if line.startswith("| flash_ace_a (chosen)"))
    # cross-data-set decision: geometric mean of validation ratios to the baseline
    for stem, ratio in (("set1", 0.5), ("set2", 2.0)):
        runs = [_fake_run("flash_ace_default", 0, 0.1, 0.1), _fake_run("flash_ace_x", 0, 0.1 * ratio, 9.9)]
        (tmp_path / f"{stem}.json").write_text(json.dumps({"results": runs}))
    decided = accuracy_budget.decide_across(["set1", "set2"])
    assert decided["flash_ace_x"][0] == pytest.approx(1.0)
    assert decided["flash_ace_x"][1] == {"set1": pytest.approx(0.5), "set2": pytest.approx(2.0)}


def test_runs_at_once_only_for_equal_epoch_studies(tmp_path, monkeypatch, capsys):
    """--jobs > 1 shares the cores, so a time budget would mean nothing: refused without
    --max-epochs, and a report of such runs says its wall times are not comparable."""
    monkeypatch.setattr(sys, "argv", ["accuracy_budget.py", "--study", "stability", "--jobs", "2"])
    with pytest.raises(SystemExit) as refused:
        accuracy_budget.main()
    assert refused.value.code == 2
    assert "use --jobs > 1 only with --max-epochs" in capsys.readouterr().err
    monkeypatch.setattr(accuracy_budget, "RESULTS", tmp_path)
    run = {"name": "a", "seed": 0, "params": 1, "epochs": 2, "test_force_mae": 0.3, "test_force_rmse": 0.4,
           "test_energy_mae": 0.01, "curve_s": [1.0, 2.0], "curve_test_force_mae": [0.4, 0.3], "curve_val_force_mae": [0.4, 0.3]}
    prov = dict(_harness.provenance(), torch_threads=1, runs_at_once=2)
    accuracy_budget.write_report([run], "stability", "jobs", 60, [0], "silicon", 10, {}, prov)
    assert "2 runs at a time: wall times are not comparable" in (tmp_path / "jobs.md").read_text()


@pytest.mark.slow
def test_peer_training_run_at_budget(tmp_path, monkeypatch):
    """One real run of a peer through our config (model block swapped), stopped by its
    epoch limit: a fixed amount of work, so a busy machine changes its wall time only."""
    monkeypatch.setattr(accuracy_budget, "RESULTS", tmp_path)
    setting = ("flash_ace", {}, _harness.allegro_kwargs(WIDTHS["allegro"]))
    result = accuracy_budget.train("allegro_small", setting, 0, 10.0, tmp_path / "runs", max_epochs=3)
    assert "error" not in result, result.get("error")
    assert result["params"] == _harness.count_params(setting[2], ["Cu", "Au"])
    # learned something in 3 epochs: well below the zero-force baseline (mean |F| ~ 0.75 eV/Å)
    assert math.isfinite(result["test_force_mae"]) and result["test_force_mae"] < 0.5
    assert result["epochs"] == 3
    assert all(m is not None and math.isfinite(m) for m in result["curve_test_force_mae"])
    assert np.all(np.diff(result["curve_s"]) > 0) and result["curve_s"][-1] < 10.0 * 60
    accuracy_budget.write_report([result], "peers", "smoke", 10.0, [0], max_epochs=3)
    assert "allegro_small" in (tmp_path / "smoke.md").read_text()
    assert (tmp_path / "smoke.png").is_file()


def test_product_basis_bench_runs_sparse_and_dense():
    import product_basis_bench

    row = product_basis_bench.bench_setting(1, 2, num_atoms=20, repeats=1, dense_limit_gb=1.0)
    for key in ("sparse_forward_ms", "dense_forward_ms", "sparse_fwd+bwd_ms", "dense_fwd+bwd_ms"):
        assert row[key] > 0, key
    skipped = product_basis_bench.bench_setting(1, 2, num_atoms=20, repeats=1, dense_limit_gb=0.0)
    assert "dense_forward_ms" not in skipped and "dense_skipped" in skipped


def test_profile_charges_backward_to_the_modules():
    import profile_layer

    # 4 heads of pair scores: every part of the layer runs, attention included
    model = _harness.build_peer(dict(_harness.FLASH_ACE, num_features=8, num_layers=2, num_heads=4, attention_score_inputs="pair"),
                                ["Cu", "Au"], 5.0)
    profile_layer.instrument(model)
    data = _harness.atoms_to_data(_harness.bulk_cuau(32), 5.0)
    per_module = profile_layer.profile(model, data, "train", repeats=1)
    for part in ("layer0.product_basis", "layer1.atomic_basis", "layer1.attention"):
        assert per_module.get(f"{part}|forward", 0) > 0, part
        assert per_module.get(f"{part}|backward", 0) > 0, part
    # the autograd work is charged to modules, not left unattributed
    backward = {k: v for k, v in per_module.items() if k.endswith("|backward")}
    assert backward.get("other|backward", 0) < 0.2 * sum(backward.values())


def test_acac_selection_reads_validation_only(tmp_path, monkeypatch):
    """The acetylacetone benchmark chooses by validation force and energy RMSE (in units of
    the published MACE errors), never by the test sets; peers are never chosen; the report
    holds the published rows beside ours."""
    import acac_benchmark

    def run(name, val_f, val_e, test_f):
        errors = {"energy_rmse_mev": 1.0, "energy_mae_mev": 1.0, "force_rmse_mev": test_f, "force_mae_mev": test_f, "frames": 650}
        profile = {"dft_ev": [0.0, 0.1], "model_ev": [0.0, 0.1], "rmse_mev": 0.0, "dft_barrier_ev": 0.1, "model_barrier_ev": 0.1}
        return {"name": name, "seed": 0, "params": 10, "epochs": 3, "budget_min": 1.0, "curve_s": [20.0, 40.0, 60.0],
                "curve_val_force_rmse": [2 * val_f, val_f, val_f], "curve_val_total_energy_rmse": [val_e, val_e, val_e],
                "test300": errors, "test600": errors, "h_transfer": profile, "dihedral": profile,
                "last_quarter_gain": 1.0, "early_stopped": False}

    results = [run("flash_ace", 0.010, 0.002, test_f=50.0),  # score 10/5.1 + 2/0.9 = 4.2
               run("flash_ace_deep", 0.005, 0.004, test_f=5.0),  # score 0.98 + 4.4 = 5.4: best test, worse validation
               run("nequip", 0.001, 0.0005, test_f=1.0)]  # a peer: compared, never chosen
    assert acac_benchmark.select_on_validation(results) == "flash_ace"
    monkeypatch.setattr(acac_benchmark, "RESULTS", tmp_path)
    acac_benchmark.write_report(results, 1.0, "fake_acac", _harness.provenance())
    text = (tmp_path / "fake_acac.md").read_text()
    assert "Chosen on validation: **flash_ace**" in text
    assert "| MACE (published, to convergence, GPU) |" in text and "22.40 (1.00×)" in text
    assert "50.00 (9.80×)" in text  # our 300 K force RMSE as a ratio to MACE's 5.1


def test_alloy_emt_data_is_diverse_periodic_and_labelled():
    """The unshipped check set: periodic 8/16-atom cells of the four metals, every frame
    with energy, forces and stress, a relaxation's two frames kept together."""
    import alloy_emt_data

    groups, _ = alloy_emt_data.generate(seed=1, n_random=3, n_relaxed=1, per_prototype=1)
    assert len(groups) == 3 + 1 + len(alloy_emt_data.PROTOTYPES)
    assert [f.info["source"] for f in groups[3]] == ["relaxed", "relaxed"]
    for group in groups:
        for frame in group:
            assert frame.pbc.all() and len(frame) in (8, 16)
            assert set(frame.get_chemical_symbols()) <= set(alloy_emt_data.SPECIES)
            assert np.isfinite(frame.get_forces()).all() and frame.get_stress().shape == (6,)
            # the minimum-distance placement (random) and the mild rattles (prototypes) keep atoms apart
            assert frame.get_all_distances(mic=True)[np.triu_indices(len(frame), 1)].min() > 1.0


def test_attention_check_table_flags_each_seed_against_the_limit():
    runs = [{"name": "flash_ace_attention_defaults", "seed": 0, "test_force_mae": 0.08},
            {"name": "nequip", "seed": 0, "test_force_mae": 0.10},
            {"name": "flash_ace_attention_defaults", "seed": 1, "test_force_mae": 0.09},
            {"name": "nequip", "seed": 1, "test_force_mae": 0.10},
            {"name": "flash_ace", "seed": 1, "test_force_mae": 0.01}]
    rows = [line for line in accuracy_budget.seed_ratio_table(runs).splitlines() if line.startswith("| 0") or line.startswith("| 1")]
    assert "0.80" in rows[0] and "| yes |" in rows[0]
    assert "0.90" in rows[1] and "**no**" in rows[1]


def test_nll_heads_recovers_a_heteroscedastic_variance():
    """The shallow-ensemble variant of the uncertainty study: errors drawn with variance
    ``(φ·w)² + s²`` must give back that variance (up to the validation rescaling) and rank
    the drawn variances far better than the Bayesian ``energy`` variant, which cannot see
    where residuals are large."""
    from scipy.stats import spearmanr

    import uncertainty_variants

    rng = np.random.default_rng(0)
    d, w, noise = 6, np.array([0.0, 2.0, 0.0, 0.0, -1.0, 0.0]), 0.05
    phi = rng.normal(size=(3000, d))
    true_variance = (phi @ w) ** 2 + noise
    errors = rng.normal(size=3000) * np.sqrt(true_variance)
    fit = uncertainty_variants.nll_heads(phi[:2000], errors[:2000], phi[2000:2500], errors[2000:2500])
    test_phi = phi[2500:]
    variance = fit["variance_scale"] * (np.einsum("vi,ij,vj->v", test_phi, fit["inverse_covariance"], test_phi) + fit["noise"])
    assert spearmanr(variance, true_variance[2500:]).statistic > 0.95
    assert np.median(variance / true_variance[2500:]) == pytest.approx(1.0, abs=0.15)
    bayes = np.einsum("vi,ij,vj->v", test_phi, np.linalg.inv(phi[:2000].T @ phi[:2000]), test_phi)
    assert spearmanr(bayes, true_variance[2500:]).statistic < 0.5


def test_reports_call_shipped_what_each_data_sets_config_ships():
    """The attention study's "(shipped)" label (and so which test errors a report shows)
    follows the config: one layer on the periodic sets, two on the molecules."""
    assert "flash_ace_1L_no_attention" in accuracy_budget.shipped_names("cuau")
    assert "flash_ace_1L_no_attention" in accuracy_budget.shipped_names("silicon")
    for molecule in ("paracetamol", "acac"):
        names = accuracy_budget.shipped_names(molecule)
        assert "flash_ace_2L_no_attention" in names and "flash_ace_1L_no_attention" not in names
