"""The seeded results table: manifest, per-row aggregation over seeds, paired McNemar
tests, the target check (never true without data) and the generated results.md."""

import json
import statistics

import numpy as np
import pytest

from sbnn.cli import main
from sbnn.config import SbnnConfig
from sbnn.golden.qmodel import QuantizedModel
from sbnn.studies.prune import predict
from sbnn.studies.results import build_seeded_results
from sbnn.studies.results_manifest import ManifestError, load_manifest
from sbnn.studies.results_report import BEGIN, END, splice_section
from sbnn.studies.stats import mcnemar_exact_p

CFG = SbnnConfig(layers=(784, 16, 10), num_supports=1)
IMAGES = 400


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (IMAGES, 28, 28)).astype(np.uint8),
            rng.integers(0, 10, IMAGES).astype(np.uint8))


def _model(seed: int) -> QuantizedModel:
    return QuantizedModel.random(CFG, np.random.default_rng(seed), mask_keep=1.0)


def _error(model: QuantizedModel, pixels, labels) -> float:
    """The test's own hardware-exact error (prune.predict, tested equal to run_hw)."""
    return float((predict(model, pixels.reshape(len(pixels), -1)) != labels).mean() * 100)


def _write_run(folder, name: str, seed: int, minutes: float | None,
               device: str | None = None) -> dict:
    model = _model(seed + 100 * len(name))
    model.save(folder / f"{name}_{seed}.npz")
    summary = {"settings": {"seed": seed}, "command": f"sbnn train {name} --seed {seed}"}
    if minutes is not None:
        summary["train_minutes"] = minutes
    if device is not None:
        summary["device"] = device
    (folder / f"{name}_{seed}.train_summary.json").write_text(json.dumps(summary))
    return {"model": model}


def _manifest(folder, rows: dict[str, list[tuple[int, float | None]]], extra: str = "") -> str:
    text = ""
    for name, runs in rows.items():
        text += f"[rows.{name}]\ndescription = \"{name} row\"\n"
        for seed, _ in runs:
            text += (f"[[rows.{name}.runs]]\nseed = {seed}\nmodel = \"{name}_{seed}.npz\"\n"
                     f"summary = \"{name}_{seed}.train_summary.json\"\n")
    (folder / "results.toml").write_text(text + extra)
    return str(folder / "results.toml")


@pytest.fixture
def table(tmp_path):
    """case (i) and its control with seeds 0, 1, 2; case (ii) with one seed and no
    train_minutes; no baseline, no case (ii) control, no pruned model."""
    rows = {"case_i": [(0, 30.0), (1, 31.0), (2, 29.0)],
            "case_i_control": [(0, 30.0), (1, 30.5), (2, 44.0)],
            "case_ii": [(0, None)]}
    models = {name: {seed: _write_run(tmp_path, name, seed, minutes)["model"]
                     for seed, minutes in runs} for name, runs in rows.items()}
    manifest = load_manifest(_manifest(tmp_path, rows))
    pixels, labels = _data()
    out = tmp_path / "docs"
    res = build_seeded_results(manifest, pixels, labels, out, eval_command="sbnn eval ...",
                               random_fractions=(), page=None, log=lambda m: None)
    return res, models, pixels, labels, out


def test_rows_are_means_over_seeds_with_every_seed(table):
    res, models, pixels, labels, _ = table
    per_seed = [_error(models["case_i"][s], pixels, labels) for s in (0, 1, 2)]
    assert res["seeds"]["case_i"] == [0, 1, 2]
    assert res["case_i_error_per_seed_pct"] == pytest.approx(per_seed)
    assert res["case_i_error_pct"] == pytest.approx(statistics.mean(per_seed), abs=1e-4)
    assert res["case_i_error_std_pct"] == pytest.approx(statistics.stdev(per_seed), abs=1e-4)
    # one seed: the mean is that seed, there is no spread
    assert res["case_ii_error_pct"] == pytest.approx(_error(models["case_ii"][0], pixels, labels))
    assert res["case_ii_error_std_pct"] is None
    # a row without runs is missing, not zero
    assert res["baseline_error_pct"] is None and res["seeds"]["baseline"] == []
    assert res["case_ii_control_error_pct"] is None
    assert res["validation_images"] == 10000 and res["test_images"] == IMAGES


def test_mcnemar_is_pooled_over_seed_pairs(table):
    res, models, pixels, labels, _ = table
    only_a = only_b = 0
    for s in (0, 1, 2):
        a = predict(models["case_i"][s], pixels.reshape(IMAGES, -1)) == labels
        b = predict(models["case_i_control"][s], pixels.reshape(IMAGES, -1)) == labels
        only_a += int((a & ~b).sum())
        only_b += int((b & ~a).sum())
    test = res["mcnemar"]["case_i_vs_case_i_control"]
    assert (test["pooled"]["only_a_right"], test["pooled"]["only_b_right"]) == (only_a, only_b)
    assert res["mcnemar_p"]["case_i_vs_case_i_control"] == pytest.approx(
        mcnemar_exact_p(only_a, only_b))
    assert set(test["per_seed_p"]) == {"0", "1", "2"}
    assert res["mcnemar_p"]["case_i_vs_baseline"] is None  # no baseline run
    assert "pooled" in res["mcnemar"]["pooling"]


def test_targets_are_never_met_without_data(table):
    res, *_ = table
    met, why = res["targets_met"], res["targets_reasons"]
    assert met["baseline_error_pct"] is None and "baseline" in why["baseline_error_pct"]
    # 400 images are not the full test set: the error targets are stated on 10,000
    assert met["case_i_error_pct"] is None and "full test set" in why["case_i_error_pct"]
    assert met["support_columns_pruned_pct"] is None
    # case (ii)'s summary has no train_minutes: unchecked, not passed
    assert met["train_minutes"] is None and "case_ii_0.npz" in why["train_minutes"]
    assert met["seeds_per_row"] is False and "baseline (0)" in why["seeds_per_row"]
    gain = res["case_i_control_error_pct"] - res["case_i_error_pct"]
    assert res["supports_gain_pp"] == pytest.approx(gain, abs=1e-4)
    assert all(v is not True for k, v in met.items() if k != "supports_gain_pp")


def test_a_run_over_45_minutes_fails_even_with_one_missing(tmp_path):
    rows = {"case_i": [(0, 30.0)], "case_ii": [(0, 46.0)], "baseline": [(0, None)]}
    for name, runs in rows.items():
        _write_run(tmp_path, name, 0, runs[0][1])
    res = build_seeded_results(load_manifest(_manifest(tmp_path, rows)), *_data(),
                               tmp_path / "docs", random_fractions=(), log=lambda m: None)
    assert res["targets_met"]["train_minutes"] is False
    assert "46.0 min" in res["targets_reasons"]["train_minutes"]


def test_gpu_runs_do_not_count_for_the_cpu_minutes_target(tmp_path):
    """The 45-minute target is stated for this CPU: a run trained on CUDA is shown, marked,
    and left out of it, in both directions (a slow GPU run cannot fail it either)."""
    rows = {"case_i": [(0, 30.0), (1, 50.0)], "case_ii": [(0, 40.0)]}
    _write_run(tmp_path, "case_i", 0, 30.0)
    _write_run(tmp_path, "case_i", 1, 50.0, device="cuda (NVIDIA H200)")
    _write_run(tmp_path, "case_ii", 0, 40.0)
    res = build_seeded_results(load_manifest(_manifest(tmp_path, rows)), *_data(),
                               tmp_path / "docs", random_fractions=(), log=lambda m: None)
    assert res["targets_met"]["train_minutes"] is True
    assert [r["train_device"] for r in res["runs"]["case_i"]] == ["cpu", "cuda (NVIDIA H200)"]
    assert "| 30, 50 (GPU) |" in (tmp_path / "docs" / "results.md").read_text()
    _write_run(tmp_path, "case_ii", 0, 46.0)  # now a CPU run is over: that still fails
    res = build_seeded_results(load_manifest(_manifest(tmp_path, rows)), *_data(),
                               tmp_path / "docs", random_fractions=(), log=lambda m: None)
    assert res["targets_met"]["train_minutes"] is False
    assert "case_ii_0.npz" in res["targets_reasons"]["train_minutes"]
    assert "case_i_1.npz" not in res["targets_reasons"]["train_minutes"]


def test_outputs_and_generated_section(table):
    res, _, _, _, out = table
    data = json.loads((out / "results.json").read_text())
    assert data["case_i_error_pct"] == res["case_i_error_pct"]
    page = (out / "results.md").read_text()
    assert BEGIN in page and END in page
    assert "std n/a: one seed" in page  # case (ii)
    assert "**missing** (no committed run)" in page  # baseline, controls, pruned
    for png in ("results_latency.png", "results_dropout.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_splice_keeps_the_prose():
    page = f"# T\n\nintro\n\n{BEGIN}\nold table\n{END}\n\n## prose\nkept\n"
    new = splice_section(page, f"{BEGIN}\nnew table\n{END}\n")
    assert new == f"# T\n\nintro\n\n{BEGIN}\nnew table\n{END}\n\n## prose\nkept\n"
    older = "<!-- results:begin (generated by `nox -s results` from models/results.toml) -->"
    assert splice_section(f"# T\n\n{older}\nold\n{END}\nkept\n", f"{BEGIN}\nnew\n{END}\n") \
        == f"# T\n\n{BEGIN}\nnew\n{END}\nkept\n"  # an older marker's wording is replaced
    fresh = splice_section("# T\n\nintro\n\nrest\n", f"{BEGIN}\nx\n{END}\n")
    assert fresh == f"# T\n\n{BEGIN}\nx\n{END}\n\nintro\n\nrest\n"
    # a page that lost one marker is refused (a second section would sit beside the stale)
    for broken in (f"# T\n\nold table\n{END}\nprose\n", f"# T\n\n{BEGIN}\nold table\n"):
        with pytest.raises(ValueError, match="put the marker back"):
            splice_section(broken, f"{BEGIN}\nnew\n{END}\n")


def test_eval_refuses_a_results_page_without_its_begin_marker(tmp_path, capsys):
    """Before any evaluation: one line naming the page and the fix, exit status 2, the
    page untouched."""
    from sbnn.cli import main

    rows = {"case_i": [(0, 30.0)]}
    _write_run(tmp_path, "case_i", 0, 30.0)
    manifest = _manifest(tmp_path, rows)
    out = tmp_path / "docs"
    out.mkdir()
    page = f"# R\n\nold table\n{END}\nprose\n"
    (out / "results.md").write_text(page)
    assert main(["eval", "--manifest", manifest, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "results.md" in err[0] and "put the marker back" in err[0]
    assert (out / "results.md").read_text() == page


def test_pruned_row_on_the_validation_split(tmp_path):
    """A pruned model checked on validation figures; the family is the case (i) model."""
    rows = {"case_i": [(0, 30.0)]}
    _write_run(tmp_path, "case_i", 0, 30.0)
    pruned = _model(7)
    pruned.save(tmp_path / "pruned.npz")
    (tmp_path / "pruned.json").write_text(json.dumps({
        "split": "val", "base_val_error_pct": 80.0, "val_error_pct": 80.04,
        "tolerance_pp": 0.05, "support_columns_total": 26,
        "trials": [{"pruned": 0, "val_error_pct": 80.0}, {"pruned": 20, "val_error_pct": 80.04}]}))
    extra = ("[rows.pruned]\n[[rows.pruned.runs]]\nseed = 0\nmodel = \"pruned.npz\"\n"
             "summary = \"case_i_0.train_summary.json\"\nprune_summary = \"pruned.json\"\n"
             "source_model = \"case_i_0.npz\"\n")
    res = build_seeded_results(load_manifest(_manifest(tmp_path, rows, extra)), *_data(),
                               tmp_path / "docs", random_fractions=(0.5,), log=lambda m: None)
    assert res["pruned_extra_error_pp"] == pytest.approx(0.04)
    assert res["pruned_from_case_i_model"] is True
    # 100 % of the columns are kept in this model: far from the 60 % target, so not met
    assert res["targets_met"]["support_columns_pruned_pct"] is False
    curve = res["dropout_curve"]
    assert curve["ranked_split"] == "val"
    assert [p["error_pct"] for p in curve["ranked"]] == [80.0, 80.04]
    assert curve["random_no_refit"][0]["pruned_pct"] == 0.0  # the unpruned source model


def test_old_protocol_pruning_is_unchecked(tmp_path):
    rows = {"case_i": [(0, 30.0)]}
    _write_run(tmp_path, "case_i", 0, 30.0)
    _model(7).save(tmp_path / "pruned.npz")
    (tmp_path / "pruned.json").write_text(json.dumps({  # written before the val split
        "base_error_pct": 80.0, "error_pct": 80.04, "tolerance_pp": 0.05,
        "trials": [{"pruned": 0, "error_pct": 80.0}]}))
    extra = ("[rows.pruned]\n[[rows.pruned.runs]]\nseed = 0\nmodel = \"pruned.npz\"\n"
             "prune_summary = \"pruned.json\"\nsource_model = \"case_i_0.npz\"\n")
    res = build_seeded_results(load_manifest(_manifest(tmp_path, rows, extra)), *_data(),
                               tmp_path / "docs", random_fractions=(), log=lambda m: None)
    assert res["runs"]["pruned"][0]["prune_split"] == "test"
    assert res["targets_met"]["support_columns_pruned_pct"] is None
    assert "test set" in res["targets_reasons"]["support_columns_pruned_pct"]


@pytest.mark.parametrize("text, words", [
    ("[rows.case_iii]\n", "unknown field 'case_iii'"),
    ("[rows.case_i]\n[[rows.case_i.runs]]\nseed = 0\nmodel = \"nope.npz\"\n", "does not exist"),
    ("[rows.case_i]\n[[rows.case_i.runs]]\nseed = 0\n", "needs its model"),
    ("[[variants]]\nname = \"v\"\nrow = \"case_i\"\n", "recorded_hw_error_pct"),
    ("rows = 3 3\n", "not valid TOML"),
    ("[table]\ntargets = \"no\"\n", "table.targets must be true or false"),
    ("[table]\ntitle = \"x\"\n", "unknown field 'title'"),
])
def test_manifest_errors(tmp_path, text, words):
    (tmp_path / "m.toml").write_text(text)
    with pytest.raises(ManifestError, match=words):
        load_manifest(tmp_path / "m.toml")


def test_a_study_manifest_checks_no_targets(tmp_path):
    """[table] targets = false: a side study (another design) gets the seeded table and the
    paired tests, but none of the table of record's targets."""
    rows = {"case_i": [(0, 30.0), (1, 30.0)], "case_i_control": [(0, 30.0), (1, 30.0)]}
    for name, runs in rows.items():
        for seed, minutes in runs:
            _write_run(tmp_path, name, seed, minutes)
    manifest = load_manifest(_manifest(tmp_path, rows, "[table]\ntargets = false\n"))
    assert manifest.targets is False
    res = build_seeded_results(manifest, *_data(), tmp_path / "docs", random_fractions=(),
                               log=lambda m: None)
    assert res["targets"] is None and res["targets_met"] == {}
    assert res["mcnemar_p"]["case_i_vs_case_i_control"] is not None
    page = (tmp_path / "docs" / "results.md").read_text()
    assert "### Targets" not in page and "### Supports against their controls" in page


def test_committed_manifest_names_existing_files():
    from conftest import ROOT

    manifest = load_manifest(ROOT / "models" / "results.toml")
    assert [len(manifest.rows[r].runs) >= 1 for r in ("baseline", "case_i", "case_ii",
                                                      "pruned")] == [True] * 4
    assert all(v.run.model is None or v.run.model.is_file() for v in manifest.variants)


def test_eval_manifest_reads_only_the_test_set(tmp_path, monkeypatch, capsys):
    import sbnn.studies.mnist as mnist

    splits = []

    def fake(split, data_dir=None, **kwargs):
        splits.append(split)
        return _data()

    monkeypatch.setattr(mnist, "load_mnist", fake)
    rows = {"case_i": [(0, 30.0)], "baseline": [(0, 20.0)]}
    for name in rows:
        _write_run(tmp_path, name, 0, 30.0)
    manifest = _manifest(tmp_path, rows)
    out = tmp_path / "docs"
    assert main(["eval", "--manifest", manifest, "--out", str(out),
                 "--data-dir", "/some/machine/folder"]) == 0
    assert splits == ["test"]
    data = json.loads((out / "results.json").read_text())
    assert "--data-dir" not in data["eval_command"] and "/some/machine" not in data["eval_command"]
    assert data["mcnemar_p"]["case_i_vs_baseline"] is not None
    assert (out / "results.md").is_file()
    assert main(["eval", "--manifest", manifest, "--case-i", manifest]) == 2
    assert "drop --manifest" in capsys.readouterr().err


def _anytime_results(folder, extra: str):
    """results of a manifest with case (i) seed 0 (its exit ``exit.json`` and ``extra``
    manifest lines) and its baseline, on the toy test images."""
    text = ('[rows.case_i]\n[[rows.case_i.runs]]\nseed = 0\nmodel = "case_i_0.npz"\n'
            'summary = "case_i_0.train_summary.json"\nexit = "exit.json"\n' + extra +
            '[rows.baseline]\n[[rows.baseline.runs]]\nseed = 0\nmodel = "baseline_0.npz"\n'
            'summary = "baseline_0.train_summary.json"\n')
    (folder / "results.toml").write_text(text)
    pixels, labels = _data()
    res = build_seeded_results(load_manifest(folder / "results.toml"), pixels, labels,
                               folder / "docs", random_fractions=(), log=lambda m: None)
    return res, pixels, labels


def test_anytime_entries_per_budget_and_calibrated_exit(tmp_path):
    """results.json ``anytime``: every budget without exit and the calibrated exit, each
    equal to a rerun of the hardware-exact path, with the RTL runs the manifest names."""
    from sbnn.golden.hwpath import run_hw, schedule

    model = _write_run(tmp_path, "case_i", 0, 30.0)["model"]
    _write_run(tmp_path, "baseline", 0, 20.0)
    (tmp_path / "exit.json").write_text(json.dumps({
        "exit_margin": 3, "budget": 1, "split": "val", "tolerance_pp": 0.05,
        "chosen": {"error_pct": 50.0}, "no_exit": {"error_pct": 49.0}}))
    (tmp_path / "sim.json").write_text(json.dumps({"exit_margin": None, "runs": [
        {"run": "budget", "budget": 1, "images": 1000, "agree": 1000},
        {"run": "budget", "budget": 0, "images": 1000, "agree": 999}]}))
    (tmp_path / "sim_exit.json").write_text(json.dumps({"exit_margin": 3, "runs": [
        {"run": "budget", "budget": 1, "images": 1000, "agree": 1000},
        {"run": "random", "budget": None, "images": 50, "agree": 0}]}))
    res, pixels, labels = _anytime_results(tmp_path, 'rtl = ["sim.json", "sim_exit.json"]\n')
    flat = pixels.reshape(IMAGES, -1)
    entries = res["anytime"]
    assert [(e["model"], e["budget"], e["exit_margin"]) for e in entries] == [
        ("case_i", 0, None), ("case_i", 1, None), ("case_i", 1, 3)]
    for e in entries:
        hw = run_hw(model, flat, e["budget"], e["exit_margin"])
        sched = schedule(model, e["budget"])
        assert e["error_pct"] == pytest.approx((hw.classes != labels).mean() * 100, abs=1e-3)
        cycles = [sched.total_cycles(p) for p in hw.exit_pass]
        assert e["mean_cycles"] == pytest.approx(np.mean(cycles), abs=0.01)
    assert [(e["rtl_images"], e["rtl_mismatches"]) for e in entries] == [
        (1000, 1), (1000, 0), (1000, 0)]
    assert entries[2]["calibration"]["split"] == "val"
    met, why = res["targets_met"], res["targets_reasons"]
    assert met["anytime_rtl"] is False and "case_i s0 b0" in why["anytime_rtl"]
    assert met["anytime_exit"] is None  # case (ii) has no calibrated exit
    assert res["anytime_exit"]["case_i"]["seeds"] == [0]
    assert met["anytime_budgets"] is not True  # random models: 90 % error


def test_exit_variants_are_measured_and_listed_apart(tmp_path):
    """A run's ``exit_variants``: each calibration measured on the test set like the chosen
    one, listed in ``anytime_exit_variants`` and the report, never in a target."""
    from sbnn.golden.hwpath import run_hw

    model = _write_run(tmp_path, "case_i", 0, 30.0)["model"]
    _write_run(tmp_path, "baseline", 0, 20.0)
    for name, margin, rule in (("exit.json", 7, "agreement"), ("old.exit.json", 2, None)):
        record = {"exit_margin": margin, "budget": 1, "split": "val", "tolerance_pp": 0.0,
                  "chosen": {"error_pct": 50.0}, "no_exit": {"error_pct": 49.0}}
        if rule:
            record["criterion"] = rule
        (tmp_path / name).write_text(json.dumps(record))
    (tmp_path / "old.sim.json").write_text(json.dumps({"exit_margin": 2, "runs": [
        {"run": "budget", "budget": 1, "images": 1000, "agree": 1000}]}))
    res, pixels, labels = _anytime_results(
        tmp_path, 'exit_variants = ["old.exit.json"]\nrtl = ["old.sim.json"]\n')
    flat = pixels.reshape(IMAGES, -1)
    chosen = [e for e in res["anytime"] if e["exit_margin"] is not None]
    assert [e["exit_margin"] for e in chosen] == [7]
    assert chosen[0]["calibration"]["criterion"] == "agreement"
    (tried,) = res["anytime_exit_variants"]
    assert (tried["exit_margin"], tried["exit_variant"]) == (2, True)
    assert tried["calibration"]["criterion"] == "error"  # a file from before the rule
    assert (tried["rtl_images"], tried["rtl_mismatches"]) == (1000, 0)
    full = run_hw(model, flat, 1, None).classes
    hw = run_hw(model, flat, 1, 2)
    assert tried["error_pct"] == pytest.approx((hw.classes != labels).mean() * 100, abs=1e-3)
    assert tried["changed_pct"] == pytest.approx((hw.classes != full).mean() * 100, abs=1e-3)
    assert res["anytime_exit"]["case_i"]["seeds"] == [0]  # the target reads the chosen one
    from sbnn.studies.results_report import results_section

    section = results_section(res)
    assert "Exit calibrations tried" in section and "--criterion error" in section
    assert "| case_i | `--criterion agreement --tolerance-pp 0`" in section


def test_exit_variants_need_the_chosen_exit(tmp_path):
    (tmp_path / "m.npz").write_bytes(b"")
    (tmp_path / "v.json").write_text("{}")
    (tmp_path / "results.toml").write_text(
        '[rows.case_i]\n[[rows.case_i.runs]]\nseed = 0\nmodel = "m.npz"\n'
        'exit_variants = ["v.json"]\n')
    with pytest.raises(ManifestError, match="exit_variants needs the chosen calibration"):
        load_manifest(tmp_path / "results.toml")
