"""The confidence exit's calibration: every candidate margin's outcome equals a rerun of the
hardware-exact path with that EXIT_MARGIN, the choice follows the rule, and the command
reads only the validation split."""

import json

import numpy as np
import pytest
from conftest import SHARED_MNIST

from sbnn.cli import main
from sbnn.config import SbnnConfig
from sbnn.golden.hwpath import run_hw, schedule
from sbnn.golden.qmodel import QuantizedModel
from sbnn.studies.exit_calibration import (
    ExitCriterion,
    ExitPoint,
    choose_exit_margin,
    exit_curve,
)

CFG = SbnnConfig(layers=(30, 16, 5), num_supports=2, active_rows=8, macro_cols=12,
                 macro_rows=1024, adc_bits=6, gain_bits=3)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(3)
    model = QuantizedModel.random(CFG, rng, mask_keep=1.0)
    pixels = rng.integers(0, 256, (80, 30), dtype=np.uint8)
    return model, pixels, rng.integers(0, 5, 80)


@pytest.mark.parametrize("budget", [1, 2])
def test_every_point_equals_a_rerun_with_that_margin(setup, budget):
    model, pixels, labels = setup
    curve = exit_curve(model, pixels, labels, budget)
    assert curve[0].exit_margin is None and len(curve) > 5
    sched = schedule(model, budget)
    full = run_hw(model, pixels, budget, None).classes
    for point in curve:
        res = run_hw(model, pixels, budget, point.exit_margin)
        cycles = np.array([sched.total_cycles(p) for p in res.exit_pass])
        assert point.error_pct == pytest.approx((res.classes != labels).mean() * 100, abs=1e-3)
        assert point.mean_cycles == pytest.approx(cycles.mean(), abs=0.01)
        assert point.exit_early_pct == pytest.approx((res.exit_pass < budget).mean() * 100,
                                                     abs=1e-3)
        assert point.changed_pct == pytest.approx((res.classes != full).mean() * 100,
                                                  abs=1e-3)
        # an exit cannot cost more error than the share of answers it changes
        assert point.error_pct - curve[0].error_pct <= point.changed_pct + 1e-9
    # margin 0 exits every image after pass 0; the no-exit point exits none
    zero = next(p for p in curve if p.exit_margin == 0)
    assert zero.exit_early_pct == 100 and curve[0].exit_early_pct == 0
    assert zero.mean_cycles == sched.total_cycles(sched.passes[0])


def test_choice_is_the_cheapest_point_within_tolerance():
    curve = [ExitPoint(None, 1.00, 100.0, 0.0), ExitPoint(5, 1.20, 55.0, 90.0),
             ExitPoint(9, 1.04, 60.0, 80.0), ExitPoint(12, 1.05, 60.0, 80.0),
             ExitPoint(20, 1.00, 80.0, 40.0)]
    err = ExitCriterion.ERROR
    assert choose_exit_margin(curve, 0.05, err).exit_margin == 12  # tie: the safer margin
    assert choose_exit_margin(curve, 0.03, err).exit_margin == 20
    assert choose_exit_margin(curve, 0.0, err).exit_margin == 20
    assert choose_exit_margin(curve, 0.5, err).exit_margin == 5
    assert choose_exit_margin(curve[:1], 0.05, err).exit_margin is None


def test_agreement_bounds_the_changed_answers_not_the_error():
    # margin 9 trades two errors for two others (same error, 0.4 % of answers changed):
    # the error rule takes it, the agreement rule does not
    curve = [ExitPoint(None, 1.00, 100.0, 0.0, 0.0), ExitPoint(5, 1.20, 55.0, 90.0, 0.6),
             ExitPoint(9, 1.00, 60.0, 80.0, 0.4), ExitPoint(14, 1.01, 70.0, 70.0, 0.05),
             ExitPoint(30, 1.00, 85.0, 30.0, 0.0)]
    assert choose_exit_margin(curve, 0.0).exit_margin == 30  # agreement is the default
    assert choose_exit_margin(curve, 0.05, "agreement").exit_margin == 14
    assert choose_exit_margin(curve, 0.5).exit_margin == 9
    assert choose_exit_margin(curve, 1.0).exit_margin == 5
    assert choose_exit_margin(curve, 0.0, ExitCriterion.ERROR).exit_margin == 9


@pytest.mark.parametrize("extra, words", [
    (["--budget", "0"], "--budget must be in 1..1"),
    (["--tolerance-pp", "-1"], "--tolerance-pp must be in 0..100"),
])
def test_bad_options_are_one_line(tmp_path, capsys, extra, words):
    assert main(["exit-margin", "--out", str(tmp_path / "e.json"),
                 "--data-dir", str(tmp_path)] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err
    assert not (tmp_path / "e.json").exists()


def test_unknown_criterion_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["exit-margin", "--out", str(tmp_path / "e.json"), "--criterion", "errors"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exc.value.code == 2 and "--criterion" in err and "'agreement'" in err
    assert not (tmp_path / "e.json").exists()


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="no shared MNIST folder")
def test_command_calibrates_on_the_validation_split(tmp_path, monkeypatch, capsys):
    import sbnn.studies.mnist as mnist

    read = []
    real = mnist.load_mnist
    monkeypatch.setattr(mnist, "load_mnist",
                        lambda split, *a, **k: read.append(split) or real(split, *a, **k))
    out = tmp_path / "e.json"
    assert main(["exit-margin", "--data-dir", str(SHARED_MNIST), "--out", str(out),
                 "--criterion", "error", "--tolerance-pp", "0.1"]) == 0
    assert read[0] == "val" and "test" not in read  # never the test set
    record = json.loads(out.read_text())
    assert record["split"] == "val" and record["validation_images"] == 10000
    assert (record["criterion"], record["tolerance_pp"]) == ("error", 0.1)
    chosen, full = record["chosen"], record["no_exit"]
    assert chosen["error_pct"] <= full["error_pct"] + 0.1 + 1e-9
    assert chosen["mean_cycles"] <= full["mean_cycles"]
    assert record["exit_margin"] == chosen["exit_margin"]
    # the recorded choice is what the golden path gives at that margin on those images
    from sbnn.cli.loaders import default_model_path

    model = QuantizedModel.load(default_model_path())
    images, labels = real("val", SHARED_MNIST)
    res = run_hw(model, images.reshape(len(images), -1), None, chosen["exit_margin"])
    assert chosen["error_pct"] == pytest.approx((res.classes != labels).mean() * 100,
                                                abs=1e-3)
    assert "--data-dir" not in record["command"]


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="no shared MNIST folder")
def test_default_rule_keeps_every_validation_answer(tmp_path):
    out = tmp_path / "e.json"
    assert main(["exit-margin", "--data-dir", str(SHARED_MNIST), "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert (record["criterion"], record["tolerance_pp"]) == ("agreement", 0.0)
    from sbnn.cli.loaders import default_model_path
    from sbnn.studies.mnist import load_mnist

    model = QuantizedModel.load(default_model_path())
    images, _ = load_mnist("val", SHARED_MNIST)
    pixels = images.reshape(len(images), -1)
    full = run_hw(model, pixels, None, None).classes
    res = run_hw(model, pixels, None, record["exit_margin"])
    assert (res.classes == full).all()  # not one validation answer changed
    # and the margin is the cheapest such: one below it changes some answer or saves nothing
    if record["exit_margin"] is not None and record["exit_margin"] > 0:
        below = run_hw(model, pixels, None, record["exit_margin"] - 1)
        assert (below.classes != full).any() or (below.exit_pass == res.exit_pass).all()
