"""Training recipe pieces: case (ii), support-column dropout, augmentation, settings/CLI errors."""

import json

import numpy as np
import pytest
import torch
from conftest import SHARED_MNIST

from sbnn.cli import main
from sbnn.config import SbnnConfig
from sbnn.golden.hwpath import run_hw
from sbnn.golden.model import SupportedBNN, SupportedLinear
from sbnn.golden.qmodel import QuantizedModel
from sbnn.studies.train import (
    TrainSettings,
    TrainSettingsError,
    shift_images,
    train_case_i,
    train_case_ii,
)

needs_mnist = pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="no shared MNIST folder")


def _toy_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28x28 uint8 'digits': class c lights a bar at row 2c..2c+2 (plus noise)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    img = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        img[i, 4 + 2 * c: 6 + 2 * c, 4:24] = 255
    return img, labels


def test_case_ii_trains_jointly_on_a_tiny_config(tmp_path):
    cfg = SbnnConfig(layers=(784, 32, 10), num_supports=1)
    train, test = _toy_digits(600, 0), _toy_digits(200, 1)
    settings = TrainSettings(joint_epochs=2, batch_size=50, threads=1, support_drop=0.2,
                             shift=1, lr=1e-2, lr_final=3e-3)
    torch.manual_seed(0)
    init = SupportedBNN(cfg).linears[0].supports.detach().clone()
    summary = train_case_ii(cfg, train, test, tmp_path, settings, log=lambda m: None)
    assert summary["case"] == "ii"
    assert summary["hw_error_pct"] < 30  # chance is 90 %
    assert len(summary["hw_error_pct_by_budget"]) == 2
    q = QuantizedModel.load(tmp_path / "model.npz")
    # base and supports were both learned: the support plane is no copy of its init signs
    flipped = (np.where(init.numpy() >= 0, 1, -1) != q.planes[0][1]).mean()
    assert flipped > 0.01
    state = torch.load(tmp_path / "ckpt_joint.pt", weights_only=False)
    assert state["epoch"] == 2
    # hw-exact path and summary agree
    pred = run_hw(q, test[0].reshape(200, -1)).classes
    assert abs((pred != test[1]).mean() * 100 - summary["hw_error_pct"]) < 1e-9


def test_case_i_writes_baseline_and_stage_time(tmp_path):
    cfg = SbnnConfig(layers=(784, 16, 10), num_supports=1)
    settings = TrainSettings(base_epochs=1, support_epochs=1, batch_size=100, threads=1)
    summary = train_case_i(cfg, _toy_digits(300, 2), _toy_digits(100, 3), tmp_path, settings,
                           log=lambda m: None)
    assert 0 <= summary["base_train_minutes"] <= summary["train_minutes"]
    base = QuantizedModel.load(tmp_path / "baseline.npz")
    assert base.support_columns_kept == 0.0
    assert (tmp_path / "baseline_float.pt").is_file() and (tmp_path / "model_float.pt").is_file()


def test_support_dropout_masks_whole_columns_in_training_only():
    torch.manual_seed(0)
    lin = SupportedLinear(20, 64, [0.5, 0.25])
    lin.support_drop = 0.5
    lin.train()
    mask = lin.column_mask()
    assert mask.shape == (64, 2)
    assert 0.3 < (mask == 0).float().mean() < 0.7  # about half the columns dropped
    # a dropped column contributes nothing: its plane weights are zero for that neuron
    torch.manual_seed(1)
    planes = lin.plane_weights()
    torch.manual_seed(1)
    drawn = lin.column_mask()
    for k in (1, 2):
        dropped = drawn[:, k - 1] == 0
        assert dropped.any()
        assert (planes[k][dropped] == 0).all()
        assert (planes[k][~dropped].abs() > 0).all()
    # no gradient reaches the latent weights of a dropped column
    x = torch.randn(8, 20)
    torch.manual_seed(2)
    lin(x).sum().backward()
    torch.manual_seed(2)
    drawn = lin.column_mask()
    grad = lin.supports.grad
    assert (grad[0][drawn[:, 0] == 0] == 0).all()
    # inference uses the deployed mask only
    lin.eval()
    assert torch.equal(lin.column_mask(), lin.mask)


def test_adc_aware_first_layer_matches_plain_matmul_when_nothing_clips():
    cfg = SbnnConfig(layers=(784, 16, 10), num_supports=1)
    net = SupportedBNN(cfg).eval()
    codes = torch.zeros(4, 784)
    codes[:, :5] = 3.0  # tiny sums: far inside the ADC range
    plain = net(codes)
    net.adc_aware = True
    assert torch.allclose(net(codes), plain, atol=1e-5)
    # a saturating block is clipped to the ADC range, as the macro does
    lin = net.linears[0]
    with torch.no_grad():
        lin.base.fill_(0.5)
        lin.supports.fill_(0.5)
    full = torch.full((1, 784), 15.0)
    y = net._first_layer_adc(full, None).detach()
    g0, step = cfg.plane_gains[0], cfg.adc_steps[0]
    most = cfg.row_blocks(0) * cfg.adc_max * step / g0 * cfg.planes
    assert float(y.max()) <= most + 1e-3
    assert float(y.max()) < float(lin(full).detach().max())


def test_shift_images_moves_without_wrapping():
    img = np.zeros((50, 28, 28), dtype=np.uint8)
    img[:, 10:14, 10:14] = 200
    out = shift_images(img, 2, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out.reshape(50, -1).sum(1) == img.reshape(50, -1).sum(1)).all()  # nothing lost
    moved = [np.argwhere(o)[0] - (10, 10) for o in out]
    assert all(abs(dy) <= 2 and abs(dx) <= 2 for dy, dx in moved)
    assert len({tuple(m) for m in moved}) > 5
    assert np.array_equal(shift_images(img, 0, np.random.default_rng(0)), img)


@pytest.mark.parametrize("field, value", [
    ("shift", 20), ("support_drop", 1.0), ("batch_size", 0), ("lr", -1.0),
    ("adc_aware", "yes"), ("support_lr", 0.0)])
def test_settings_errors_name_the_option(field, value):
    with pytest.raises(TrainSettingsError, match=f"'{field}'"):
        TrainSettings(**{field: value})


def test_settings_unknown_option():
    with pytest.raises(TrainSettingsError, match="'epochs'.*allowed"):
        TrainSettings.from_dict({"epochs": 3})


@pytest.mark.parametrize("extra, words", [
    (["--shift", "20"], "training option 'shift'"),
    (["--support-drop", "1.5"], "--support-drop"),
    (["--layers", "784,x,10"], "--layers must be comma-separated"),
    (["--layers", "784,4096,4096,10"], "config field 'macro_rows'"),
    (["--supports", "9"], "config field 'num_supports'"),
])
def test_train_cli_errors_are_one_line(tmp_path, capsys, extra, words):
    assert main(["train", "--out", str(tmp_path / "r"), "--data-dir", str(tmp_path)]
                + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sbnn: error:") and words in err and "\n" not in err
    assert "Traceback" not in err


def test_train_cli_bad_case_is_rejected(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--case", "iii"])
    assert exc.value.code == 2
    assert "invalid choice: 'iii'" in capsys.readouterr().err


def test_train_config_table_is_validated(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[sbnn]\nlayers = [784, 16, 10]\n[train]\nbase_epoch = 3\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "training option 'base_epoch': unknown option" in err


@pytest.mark.slow
@needs_mnist
def test_train_cli_case_ii_and_eval_float_beside_hw(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[sbnn]\nlayers = [784, 32, 10]\n[train]\njoint_epochs = 1\nthreads = 1\n")
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--case", "ii", "--out", str(run),
                 "--data-dir", str(SHARED_MNIST), "--shift", "1"]) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["settings"]["joint_epochs"] == 1 and summary["settings"]["shift"] == 1
    assert summary["command"].startswith("sbnn train --config")
    assert main(["eval", "--model", str(run / "model.npz"), "--data-dir", str(SHARED_MNIST),
                 "--json", str(tmp_path / "e.json")]) == 0
    rows = json.loads((tmp_path / "e.json").read_text())
    assert rows[-1]["float_error_pct"] is not None
    assert abs(rows[-1]["error_pct"] - summary["hw_error_pct"]) < 0.01
