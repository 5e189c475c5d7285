"""Support-column pruning under the accuracy constraint (on the validation split only)."""

import json

import numpy as np
import pytest
from conftest import SHARED_MNIST

from sbnn.cli import main
from sbnn.config import SbnnConfig
from sbnn.golden.hwpath import run_hw
from sbnn.golden.qmodel import QuantizedModel
from sbnn.studies.prune import (
    apply_pruning,
    hw_error,
    plane_codes,
    predict,
    prune,
    refit_thresholds,
    score_columns,
)

needs_mnist = pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="no shared MNIST folder")

CFG = SbnnConfig(layers=(64, 48, 24, 4), num_supports=1, macro_rows=4096)


def _case(seed: int = 0, noise: float = 0.2):
    """A random model, random images, and labels = its own answers with some label noise
    (so the unpruned error is about ``noise`` and columns matter for the rest)."""
    rng = np.random.default_rng(seed)
    model = QuantizedModel.random(CFG, rng, mask_keep=1.0)
    # thresholds near the middle of each neuron's accumulator range: neurons fire ~half
    pix = rng.integers(0, 256, (1200, 64)).astype(np.uint8)
    res = run_hw(model, pix[:300], keep_adc=False)
    thr = list(model.thresholds)
    x = res.inputs[(1, 0)]
    for layer in range(CFG.num_layers - 1):
        acc = plane_codes(model, layer, x).sum(0)
        thr[layer] = np.median(acc, axis=0).astype(np.int64)
        x = np.where(acc >= thr[layer], 1, -1)
    # half the hidden neurons get a support plane equal to their base plane: such a column
    # only rescales the neuron, so it is prunable (with a threshold re-fit)
    planes = [p.copy() for p in model.planes]
    for layer in range(CFG.num_layers - 1):
        half = planes[layer].shape[1] // 2
        planes[layer][1, :half] = planes[layer][0, :half]
    model = QuantizedModel(CFG, tuple(planes), tuple(thr), model.support_mask)
    labels = predict(model, pix)
    flip = rng.random(len(labels)) < noise
    labels[flip] = rng.integers(0, 4, flip.sum())
    calib, test = pix[:600], (pix[600:], labels[600:])
    return model, calib, test


def test_predict_is_run_hw():
    model, calib, test = _case()
    masked = apply_pruning(model, [(0, 3, 1), (1, 5, 1), (2, 1, 1)], calib, refit=True)
    for m in (model, masked):
        assert np.array_equal(predict(m, test[0]), run_hw(m, test[0]).classes)


def test_refit_thresholds_is_the_best_integer_threshold():
    rng = np.random.default_rng(1)
    acc = rng.integers(-6, 7, (40, 5))
    target = rng.random((40, 5)) < 0.5
    theta = refit_thresholds(acc, target)
    for j in range(5):
        agree = [((acc[:, j] >= t) == target[:, j]).sum() for t in range(-9, 11)]
        assert ((acc[:, j] >= theta[j]) == target[:, j]).sum() == max(agree)


def test_refit_recovers_a_rescaled_neuron_exactly():
    # support plane == base plane: the column only rescales the neuron (x1.5), so after
    # masking it a threshold re-fit gives back the same signs
    rng = np.random.default_rng(2)
    model, calib, _ = _case(2)
    planes = [p.copy() for p in model.planes]
    planes[0][1] = planes[0][0]
    model = QuantizedModel(CFG, tuple(planes), model.thresholds, model.support_mask)
    pruned = apply_pruning(model, [(0, j, 1) for j in range(48)], calib, refit=True)
    x = rng.integers(0, 256, (200, 64)).astype(np.uint8)
    ref = run_hw(model, x).inputs[(1, 1)]
    got = run_hw(pruned, x).inputs[(1, 1)]
    assert (ref == got).mean() > 0.97  # only ADC rounding can split a tie
    assert pruned.support_columns_kept < 1


def test_prune_keeps_error_within_tolerance():
    model, calib, test = _case(0)
    res = prune(model, calib, test, tolerance_pp=0.05, log=lambda m: None)
    assert res.error_pct <= res.base_error_pct + 0.05 + 1e-9
    # the reported error is the hardware-exact error of the returned model, recomputed
    assert hw_error(res.model, *test) == pytest.approx(res.error_pct)
    masked = sum(int((~m).sum()) for m in res.model.support_mask)
    assert masked == res.pruned and res.pruned > 0
    assert res.pruned_pct == pytest.approx(100 * res.pruned / res.total)
    # every trial above the limit prunes more than the answer: it is the largest found
    over = [t for t in res.trials if t["error_pct"] > res.base_error_pct + 0.05 + 1e-9]
    assert all(t["pruned"] > res.pruned for t in over)


def test_prune_with_loose_tolerance_removes_everything():
    model, calib, test = _case(0)
    res = prune(model, calib, test, tolerance_pp=100.0, log=lambda m: None)
    assert res.model.support_columns_kept == 0.0 and res.pruned == res.total


def test_scores_put_output_columns_last_and_skip_masked():
    model, calib, _ = _case(3)
    mask = [m.copy() for m in model.support_mask]
    mask[0][:10] = False
    model = model.with_mask(tuple(mask))
    cols = [c for _, c in score_columns(model, calib)]
    assert len(cols) == 48 - 10 + 24 + 4
    assert all(c[0] == 2 for c in cols[-4:])
    assert not any(c[0] == 0 and c[1] < 10 for c in cols)


@needs_mnist
def test_eval_and_prune_cli(tmp_path, capsys):
    cfg = SbnnConfig(layers=(784, 16, 10), num_supports=1)
    model = QuantizedModel.random(cfg, np.random.default_rng(0), mask_keep=1.0)
    path = model.save(tmp_path / "m.npz")
    pruned = tmp_path / "p" / "pruned.npz"
    assert main(["prune", "--model", str(path), "--out", str(pruned), "--tolerance", "100",
                 "--calib", "50", "--data-dir", str(SHARED_MNIST)]) == 0
    meta = json.loads(pruned.with_suffix(".json").read_text())
    assert meta["support_columns_pruned_pct"] == 100.0
    assert meta["command"].startswith("sbnn prune --model")
    assert main(["eval", "--baseline", str(path), "--case-i", str(path), "--pruned",
                 str(pruned), "--out", str(tmp_path / "docs"),
                 "--data-dir", str(SHARED_MNIST)]) == 0
    data = json.loads((tmp_path / "docs" / "results.json").read_text())
    assert data["test_images"] == 10000 and data["case_ii_error_pct"] is None
    assert data["support_columns_pruned_pct"] == 100.0


@pytest.mark.parametrize("argv, words", [
    (["prune", "--model", "nope.npz", "--out", "x.npz"], "does not exist"),
    (["prune", "--model", "{default}", "--out", "x.npz", "--tolerance", "-1"], "--tolerance"),
    (["prune", "--model", "{default}", "--out", "x.txt"], "--out must name a .npz"),
    (["prune", "--model", "{k0}", "--out", "x.npz"], "no support planes"),
    (["eval", "--case-i", "nope.npz"], "does not exist"),
    (["eval", "--case-i", "{default}", "--model", "{default}"], "one form or the other"),
])
def test_prune_eval_cli_errors(tmp_path, capsys, argv, words):
    from sbnn.cli import _default_model

    k0 = QuantizedModel.random(SbnnConfig(layers=(784, 8, 10), num_supports=0),
                               np.random.default_rng(0)).save(tmp_path / "k0.npz")
    argv = [a.format(default=_default_model(), k0=k0) for a in argv]
    assert main(argv + ["--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sbnn: error:") and words in err and "\n" not in err


def test_pruned_mask_and_thresholds_reach_the_hardware_image():
    from sbnn.gen.image import build_image

    model, calib, test = _case(0)
    res = prune(model, calib, test, tolerance_pp=100.0, log=lambda m: None)
    full, pruned = build_image(model), build_image(res.model)
    cfg, nt = CFG, CFG.neurons_per_tile
    # plane-1 columns (support) of every column block are all disabled; plane 0 untouched
    assert full.col_enables[:, nt:2 * nt].any() and not pruned.col_enables[:, nt:2 * nt].any()
    assert np.array_equal(full.col_enables[:, :nt], pruned.col_enables[:, :nt])
    assert not np.array_equal(full.thresholds, pruned.thresholds)  # re-fitted thresholds
    assert cfg.planes == 2


def _recording_mnist(monkeypatch, images: int = 10000):
    """Replace load_mnist with synthetic digits; returns the list of splits requested."""
    import sbnn.studies.mnist as mnist

    splits: list[str] = []

    def fake(split, data_dir=None, **kwargs):
        splits.append(split)
        rng = np.random.default_rng(len(splits))
        return (rng.integers(0, 256, (images, 28, 28)).astype(np.uint8),
                rng.integers(0, 10, images).astype(np.uint8))

    monkeypatch.setattr(mnist, "load_mnist", fake)
    return splits


def test_prune_cli_reads_only_the_validation_split(tmp_path, monkeypatch, capsys):
    from sbnn.cli.loaders import default_model_path

    splits = _recording_mnist(monkeypatch, images=300)
    out = tmp_path / "p.npz"
    assert main(["prune", "--model", str(default_model_path()), "--out", str(out),
                 "--calib", "200", "--tolerance", "100"]) == 0
    assert splits == ["val"]  # never "test", never "train"
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["split"] == "val" and meta["validation_images"] == 300
    assert "test_images" not in meta and "error_pct" not in meta
    assert meta["val_error_pct"] == pytest.approx(meta["trials"][-1]["val_error_pct"])
    assert "validation error" in capsys.readouterr().out


@pytest.mark.parametrize("calib", ["0", "10001"])
def test_prune_calib_is_bounded_by_the_validation_split(tmp_path, calib, capsys):
    from sbnn.cli.loaders import default_model_path

    assert main(["prune", "--model", str(default_model_path()), "--out",
                 str(tmp_path / "p.npz"), "--calib", calib]) == 2
    assert "--calib must be in 1..10000 validation images" in capsys.readouterr().err
