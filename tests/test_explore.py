"""sbnn explore: the space file, point ids, the Pareto front, resuming, and the errors."""

import json

import numpy as np
import pytest
from conftest import SHARED_MNIST

from sbnn.cli import main
from sbnn.config import SbnnConfig
from sbnn.golden.qmodel import QuantizedModel
from sbnn.studies.explore import (
    PointJob,
    confirm_point,
    finished_point,
    pareto_front,
    point_file,
)
from sbnn.studies.explore_space import SpaceError, load_space
from sbnn.studies.recipe import TrainSettings
from sbnn.studies.train import steps_from_data

SPACE = """
[design]
layers = [784, 32, 10]
[recipe]
joint_epochs = 1
[vary]
num_supports = [0, 1]
adc_bits = {from = 4, to = 8, step = 2}
active_rows = [48]
"""


def _space(tmp_path, text=SPACE):
    path = tmp_path / "space.toml"
    path.write_text(text)
    return load_space(path)


def test_points_are_the_product_with_fitted_macros(tmp_path):
    space = _space(tmp_path)
    assert space.varied_fields == ("num_supports", "adc_bits", "active_rows")
    assert [(p.varied["num_supports"], p.varied["adc_bits"]) for p in space.points] == [
        (0, 4), (0, 6), (0, 8), (1, 4), (1, 6), (1, 8)]
    for p in space.points:
        cfg = SbnnConfig.from_dict(p.design)
        assert cfg.macro_cols == 32 * (cfg.num_supports + 1)
        # the fewest rows: every tile fits and one word-line group less would not
        assert cfg.macro_rows == cfg.total_tiles * cfg.active_rows
        assert p.recipe == {"joint_epochs": 1} and p.case == "ii"
        assert "adc_steps" not in p.design  # left to the data
        assert steps_from_data(cfg, TrainSettings())
    assert len({p.id for p in space.points}) == 6
    assert [p.id for p in _space(tmp_path).points] == [p.id for p in space.points]  # stable


def test_point_ids_hash_the_recipe_with_its_defaults(tmp_path):
    """A recipe field left out and the same field at its default are one point; another
    value is another point (so a changed default never reads a stale point back)."""
    ids = [p.id for p in _space(tmp_path).points]
    default = TrainSettings().adc_finetune_epochs
    same = SPACE.replace("joint_epochs = 1", f"joint_epochs = 1\nadc_finetune_epochs = {default}")
    assert [p.id for p in _space(tmp_path, same).points] == ids
    other = SPACE.replace("joint_epochs = 1", f"joint_epochs = 1\nadc_finetune_epochs = "
                                              f"{default + 1}")
    assert not set(p.id for p in _space(tmp_path, other).points) & set(ids)


def test_a_point_the_config_rejects_is_kept_with_its_reason(tmp_path):
    space = _space(tmp_path, SPACE.replace("adc_bits = {from = 4, to = 8, step = 2}",
                                           "adc_bits = [1, 8]"))
    bad = [p for p in space.points if p.invalid]
    assert len(bad) == 2 and all(p.design is None for p in bad)
    assert all("adc_bits" in p.invalid for p in bad)


@pytest.mark.parametrize("text, words", [
    ("[vary]\nadc_bits = []\n", "an empty list gives no point"),
    ("[vary]\nadc_bits = {from = 8, to = 4}\n", "needs from <= to"),
    ("[vary]\nadc_bit = [4]\n", "[vary]: unknown field 'adc_bit'"),
    ("[design]\nadc_bits = 4\n[vary]\nadc_bits = [4]\n", "both fixed and varied"),
    ("[explore]\ncase = 'iii'\n", "case: 'i' or 'ii'"),
    ("[recipe]\nlr = -1\n", "[recipe]: training option 'lr'"),
    ("[other]\n", "unknown table [other]"),
    ("[vary\n", "not valid TOML"),
])
def test_space_errors_name_the_table_and_field(tmp_path, text, words):
    with pytest.raises(SpaceError, match=None) as exc:
        _space(tmp_path, text)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_front_keeps_the_non_dominated_valid_points():
    rec = [{"status": "ok", "val_error_pct": 2.0, "cycles": 100, "energy_pj": 5, "area": 10},
           {"status": "ok", "val_error_pct": 1.0, "cycles": 200, "energy_pj": 6, "area": 12},
           {"status": "ok", "val_error_pct": 2.5, "cycles": 150, "energy_pj": 6, "area": 12},
           {"status": "ok", "val_error_pct": 2.0, "cycles": 100, "energy_pj": 5, "area": 10},
           {"status": "invalid"}]
    # point 2 is worse than point 0 in everything; equal points do not dominate each other
    assert pareto_front(rec) == [True, True, False, True, False]


def test_finished_points_are_read_back_not_recomputed(tmp_path):
    space = _space(tmp_path)
    job = PointJob(space.points[0], str(tmp_path / "work"), None, None)
    assert finished_point(job) is None
    path = point_file(job.work, job.point.id)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"id": job.point.id, "status": "ok"}))
    assert finished_point(job) == {"id": job.point.id, "status": "ok"}


def test_rtl_confirmation_runs_the_trained_models_config(tmp_path, monkeypatch):
    # the point's design leaves adc_steps to the training; the model holds the chosen ones
    import sbnn.cosim.fast as fast
    import sbnn.studies.explore as explore

    point = _space(tmp_path).points[0]
    default = SbnnConfig.from_dict(point.design)
    trained = SbnnConfig.from_dict({**point.design,
                                    "adc_steps": [2 * s for s in default.adc_steps]})
    assert trained.adc_steps != default.adc_steps
    job = PointJob(point, str(tmp_path / "work"), None, None)
    folder = point_file(job.work, point.id).parent
    QuantizedModel.random(trained, np.random.default_rng(0)).save(
        folder / "train" / "model.npz")
    monkeypatch.setattr(explore, "_data", lambda data_dir: {
        "val": (np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8))})
    seen = []

    class Report:
        def to_dict(self):
            return {"runs": [{"run": "budget", "images": 2, "agree": 2}],
                    "first_mismatch": None}

    def fake_run_fast(cos, build_root, workers=None):
        QuantizedModel.load(cos.model, cos.config)  # raises on a config mismatch
        seen.append(cos.config)
        return Report()

    monkeypatch.setattr(fast, "run_fast", fake_run_fast)
    assert confirm_point(job, 2) == {"rtl_images": 2, "rtl_mismatches": 0,
                                     "rtl_first_mismatch": None}
    assert seen == [trained]
    assert json.loads((folder / "rtl.json").read_text())["rtl_images"] == 2


@pytest.mark.parametrize("extra, words", [
    (["--point", "nope"], "--point 'nope' is not a point"),
    (["--threads", "0"], "--threads must be in 1..64"),
    (["--workers", "0"], "--workers must be in 1.."),
])
def test_cli_errors_are_one_line(tmp_path, capsys, extra, words):
    (tmp_path / "s.toml").write_text(SPACE)
    assert main(["explore", "--space", str(tmp_path / "s.toml"), "--out",
                 str(tmp_path / "o")] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err


def test_cli_bad_space_is_one_line(tmp_path, capsys):
    (tmp_path / "s.toml").write_text("[vary]\nadc_bits = []\n")
    assert main(["explore", "--space", str(tmp_path / "s.toml")]) == 2
    assert "empty list" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="no shared MNIST folder")
def test_explore_runs_resumes_and_reruns_one_point(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(
        "[design]\nlayers = [784, 16, 10]\n[recipe]\njoint_epochs = 1\nhw_val_every = 0\n"
        "[vary]\nnum_supports = [0, 1]\n[explore]\nconfirm_images = 3\n")
    out = tmp_path / "o"
    args = ["explore", "--space", str(tmp_path / "s.toml"), "--out", str(out), "--workers",
            "1", "--data-dir", str(SHARED_MNIST)]
    assert main(args) == 0
    summary = json.loads((out / "explore.json").read_text())
    points = summary["points"]
    assert [p["num_supports"] for p in points] == [0, 1]
    for p in points:
        assert p["status"] == "ok" and p["lint_ok"] is True
        assert len(p["val_error_pct_by_budget"]) == p["num_supports"] + 1
        assert p["cycles"] == p["cycles_by_budget"][-1] and p["area"] > 0
        if p["on_front"]:
            assert p["rtl_images"] == 3 * (p["num_supports"] + 1)
            assert p["rtl_mismatches"] == 0
    assert any(p["on_front"] for p in points)
    assert (out / "explore.csv").read_text().startswith("num_supports,id,status")
    assert (out / "explore.png").stat().st_size > 1000
    # resumed: nothing is recomputed (the records are read back as they are)
    stamp = point_file(out, points[0]["id"]).stat().st_mtime_ns
    assert main(args) == 0
    assert point_file(out, points[0]["id"]).stat().st_mtime_ns == stamp
    # --point reruns that point alone
    assert main(args + ["--point", points[1]["id"]]) == 0
    assert point_file(out, points[0]["id"]).stat().st_mtime_ns == stamp
    assert "1 point(s)" in capsys.readouterr().out
