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
    adopt_base,
    shift_images,
    train_case_i,
    train_case_ii,
)
from sbnn.studies.train_loop import resolve_device

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
    fit, val = _toy_digits(600, 0), _toy_digits(200, 1)
    settings = TrainSettings(joint_epochs=2, batch_size=50, threads=1, support_drop=0.2,
                             shift=1, lr=1e-2, lr_final=3e-3)
    torch.manual_seed(0)
    init = SupportedBNN(cfg).linears[0].supports.detach().clone()
    summary = train_case_ii(cfg, fit, val, tmp_path, settings, log=lambda m: None)
    assert summary["case"] == "ii" and summary["device"] == "cpu"
    # the machine it trained on: runs on another CPU or torch build need not agree bitwise
    machine = summary["machine"]
    assert machine["torch"] == torch.__version__ and machine["cores"] >= 1
    assert isinstance(machine["cpu"], str) and machine["cpu"]
    assert summary["validation_images"] == 200 and summary["fit_images"] == 600
    assert summary["val_hw_error_pct"] < 30  # chance is 90 %
    assert len(summary["val_hw_error_pct_by_budget"]) == 2
    assert not any("test" in key for key in summary)  # training never reads a test set
    q = QuantizedModel.load(tmp_path / "model.npz")
    # base and supports were both learned: the support plane is no copy of its init signs
    flipped = (np.where(init.numpy() >= 0, 1, -1) != q.planes[0][1]).mean()
    assert flipped > 0.01
    state = torch.load(tmp_path / "ckpt_joint.pt", weights_only=False)
    assert state["epoch"] == 2
    # hw-exact path and summary agree, at every budget
    for budget in (0, 1):
        pred = run_hw(q, val[0].reshape(200, -1), budget).classes
        assert (pred != val[1]).mean() * 100 == pytest.approx(
            summary["val_hw_error_pct_by_budget"][budget])
    # both budgets' norms were trained: they differ
    net = SupportedBNN(cfg)
    net.load_state_dict(torch.load(tmp_path / "model_float.pt", weights_only=True))
    assert not torch.equal(net.budgets[0].norms[0].running_mean,
                           net.budgets[1].norms[0].running_mean)


def test_case_i_keeps_budget_0_as_the_stage_1_bnn(tmp_path):
    cfg = SbnnConfig(layers=(784, 16, 10), num_supports=1)
    settings = TrainSettings(base_epochs=1, support_epochs=2, batch_size=100, threads=1)
    summary = train_case_i(cfg, _toy_digits(300, 2), _toy_digits(100, 3), tmp_path, settings,
                           log=lambda m: None)
    assert 0 <= summary["base_train_minutes"] <= summary["train_minutes"]
    base = QuantizedModel.load(tmp_path / "baseline.npz")
    assert base.support_columns_kept == 0.0
    assert (tmp_path / "baseline_float.pt").is_file() and (tmp_path / "model_float.pt").is_file()
    model = QuantizedModel.load(tmp_path / "model.npz")
    for layer in range(cfg.num_layers):
        np.testing.assert_array_equal(model.planes[layer][0], base.planes[layer][0])
        np.testing.assert_array_equal(model.thresholds[layer][0], base.thresholds[layer][0])
        # the baseline answers with budget 0's thresholds in every pass
        np.testing.assert_array_equal(base.thresholds[layer][1], base.thresholds[layer][0])
    stage1 = torch.load(tmp_path / "baseline_float.pt", weights_only=True)
    final = torch.load(tmp_path / "model_float.pt", weights_only=True)
    budget0 = [k for k in final if k.startswith("budgets.0.")]
    assert budget0 and all(torch.equal(final[k], stage1[k]) for k in budget0)
    assert summary["val_hw_error_pct_by_budget"][0] == summary["baseline_val_hw_error_pct"]
    # the steps come from data: an ADC fine-tune of stage 2's parameters and budgets ends it
    assert [s["stage"] for s in summary["stages"]] == ["base", "supports", "adc"]
    assert summary["stages"][1]["budgets"] == summary["stages"][2]["budgets"] == [1]


def test_supports_off_control_shares_stage_1_and_trains_only_norms(tmp_path):
    """The case (i) control adopts the case (i) run's stage 1 and trains budget 1's norms
    and output with every support column masked: its planes equal the base run's stage 1,
    its budget 1 differs from budget 0 only in thresholds and output affine."""
    cfg = SbnnConfig(layers=(784, 16, 10), num_supports=1)
    fit, val = _toy_digits(300, 4), _toy_digits(100, 5)
    settings = TrainSettings(base_epochs=1, support_epochs=2, batch_size=100, threads=1)
    train_case_i(cfg, fit, val, tmp_path / "a", settings, log=lambda m: None)
    control = settings.replace(supports_off=True)
    adopt_base(tmp_path / "a", tmp_path / "b", cfg, control)
    logs = []
    summary = train_case_i(cfg, fit, val, tmp_path / "b", control, log=logs.append)
    assert any("base: resumed" in m and "after epoch 1" in m for m in logs)  # no retraining
    assert summary["base_from"] == str(tmp_path / "a")
    base = QuantizedModel.load(tmp_path / "a" / "baseline.npz")
    model = QuantizedModel.load(tmp_path / "b" / "model.npz")
    assert model.support_columns_kept == 0.0  # the supports are off
    for layer in range(cfg.num_layers):
        np.testing.assert_array_equal(model.planes[layer][0], base.planes[layer][0])
    moved = [not np.array_equal(model.thresholds[layer][1], model.thresholds[layer][0])
             for layer in range(cfg.num_layers - 1)]
    assert any(moved)  # budget 1's norms were retrained
    assert summary["base_train_minutes"] <= summary["train_minutes"]


@pytest.mark.parametrize("change, words", [
    ({"seed": 1}, "another seed"),
    ({"base_epochs": 2}, "another base_epochs"),
    ({"shift": 1}, "another shift"),
])
def test_adopt_base_refuses_another_stage_1_recipe(tmp_path, change, words):
    cfg = SbnnConfig(layers=(784, 8, 10), num_supports=1)
    settings = TrainSettings(base_epochs=1, support_epochs=0, batch_size=100, threads=1)
    train_case_i(cfg, _toy_digits(200, 6), _toy_digits(100, 7), tmp_path / "a", settings,
                 log=lambda m: None)
    with pytest.raises(TrainSettingsError, match=words):
        adopt_base(tmp_path / "a", tmp_path / "b", cfg, settings.replace(**change))
    with pytest.raises(TrainSettingsError, match="another design"):
        adopt_base(tmp_path / "a", tmp_path / "c",
                   SbnnConfig(layers=(784, 8, 10), num_supports=2), settings)
    with pytest.raises(TrainSettingsError, match="another design"):  # the base plane's gain
        adopt_base(tmp_path / "a", tmp_path / "e", cfg.replace(plane_gains=(4, 1)), settings)
    with pytest.raises(TrainSettingsError, match="has not finished"):
        adopt_base(tmp_path / "nothing", tmp_path / "d", cfg, settings)
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_a_support_gain_variant_shares_stage_1(tmp_path):
    """Designs that differ only in the support gains share one stage 1: a run at a_1 = 1
    adopts an a_1 = 1/2 run's stage 1, and its baseline (budget 0) is that run's exactly."""
    half = SbnnConfig(layers=(784, 16, 10), num_supports=1, plane_gains=(2, 1))
    one = half.replace(plane_gains=(2, 2))
    fit, val = _toy_digits(300, 4), _toy_digits(100, 5)
    settings = TrainSettings(base_epochs=1, support_epochs=1, batch_size=100, threads=1)
    train_case_i(half, fit, val, tmp_path / "a", settings, log=lambda m: None)
    adopt_base(tmp_path / "a", tmp_path / "b", one, settings)
    logs = []
    summary = train_case_i(one, fit, val, tmp_path / "b", settings, log=logs.append)
    assert any("base: resumed" in m for m in logs)  # stage 1 not trained again
    assert summary["config"]["plane_gains"] == [2, 2]
    a = QuantizedModel.load(tmp_path / "a" / "baseline.npz")
    b = QuantizedModel.load(tmp_path / "b" / "baseline.npz")
    for layer in range(half.num_layers):
        np.testing.assert_array_equal(a.planes[layer][0], b.planes[layer][0])
        np.testing.assert_array_equal(a.thresholds[layer][0], b.thresholds[layer][0])
    assert summary["baseline_val_hw_error_pct"] == json.loads(
        (tmp_path / "a" / "train_summary.json").read_text())["baseline_val_hw_error_pct"]
    # stage 2 trained at this design's a_1 = 1, not the adopted run's 1/2
    state = torch.load(tmp_path / "b" / "model_float.pt", map_location="cpu")
    assert all(state[f"linears.{i}.scales"].tolist() == [1.0] for i in range(half.num_layers))
    start = torch.load(tmp_path / "b" / "ckpt_base.pt", map_location="cpu", weights_only=False)
    assert start["model"]["linears.0.scales"].tolist() == [1.0]
    assert start["kept"]["model"]["linears.0.scales"].tolist() == [1.0]


def _best_epoch(history: list[dict]) -> int:
    """Lowest mean float validation error; ties go to the later epoch."""
    scores = [np.mean(e["float_val_error_pct"]) for e in history]
    return max(i + 1 for i, s in enumerate(scores) if s == min(scores))


@pytest.mark.parametrize("case", ["i", "ii"])
def test_two_supports_train_end_to_end(tmp_path, case):
    cfg = SbnnConfig(layers=(784, 24, 10), num_supports=2)
    settings = TrainSettings(base_epochs=1, support_epochs=2, joint_epochs=3, batch_size=50,
                             threads=1, lr=1e-2, budget_loss_weights=(1, 1, 2),
                             hw_val_every=2, adc_finetune_epochs=0)  # the stages alone
    train = train_case_i if case == "i" else train_case_ii
    summary = train(cfg, _toy_digits(400, 4), _toy_digits(150, 5), tmp_path, settings,
                    log=lambda m: None)
    assert len(summary["val_hw_error_pct_by_budget"]) == 3
    assert max(summary["val_hw_error_pct_by_budget"]) < 60  # chance is 90 %
    q = QuantizedModel.load(tmp_path / "model.npz")
    assert all(t.shape == (3, m) for t, m in zip(q.thresholds, cfg.layers[1:]))
    last = summary["stages"][-1]
    assert last["budgets"] == ([1, 2] if case == "i" else [0, 1, 2])
    assert last["kept_epoch"] == _best_epoch(last["epochs"])
    assert summary["checkpoint_rule"] == "best_val"
    # hardware-exact validation every 2nd epoch and at the last only
    ran = [e["epoch"] for e in last["epochs"] if e["hw_val_error_pct"] is not None]
    assert ran == ([2] if case == "i" else [2, 3])


def test_rerun_resumes_to_the_same_model_and_last_rule_keeps_the_last_epoch(tmp_path):
    cfg = SbnnConfig(layers=(784, 16, 10), num_supports=1)
    data = _toy_digits(300, 6), _toy_digits(100, 7)
    settings = TrainSettings(joint_epochs=3, batch_size=50, threads=1, support_drop=0.2,
                             keep_checkpoint="last")
    whole = train_case_ii(cfg, *data, tmp_path / "whole", settings, log=lambda m: None)
    assert whole["stages"][0]["kept_epoch"] == 3

    def interrupt(line: str) -> None:
        if "epoch 1/3" in line:  # logged once epoch 1 is checkpointed
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_case_ii(cfg, *data, tmp_path / "cut", settings, log=interrupt)
    logs = []
    again = train_case_ii(cfg, *data, tmp_path / "cut", settings, log=logs.append)
    assert any("resumed" in line and "after epoch 1" in line for line in logs)
    assert again["val_hw_error_pct_by_budget"] == whole["val_hw_error_pct_by_budget"]
    a = QuantizedModel.load(tmp_path / "whole" / "model.npz")
    b = QuantizedModel.load(tmp_path / "cut" / "model.npz")
    assert all(np.array_equal(x, y) for x, y in zip(a.thresholds, b.thresholds))
    assert all(np.array_equal(x, y) for x, y in zip(a.planes, b.planes))


def test_loss_weights_one_per_budget():
    settings = TrainSettings(budget_loss_weights=(1, 3))
    assert settings.loss_weights(range(2), 1) == (0.25, 0.75)
    assert settings.loss_weights(range(1, 2), 1) == (1.0,)
    assert TrainSettings().loss_weights(range(3), 2) == pytest.approx((1 / 3,) * 3)
    with pytest.raises(TrainSettingsError, match="'budget_loss_weights': needs one weight "
                                                 "per budget 0..2 \\(3\\), got 2"):
        settings.loss_weights(range(3), 2)
    with pytest.raises(TrainSettingsError, match="all 0"):
        TrainSettings(budget_loss_weights=(1, 0)).loss_weights(range(1, 2), 1)


def test_device_auto_takes_cuda_only_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cpu").type == "cpu"


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
    y = net._adc_layer(0, full, None, floor=False).detach()
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
    (["--budget-loss-weights", "1", "2", "3"], "needs one weight per budget 0..1"),
    (["--device", "cuda"], "--device cuda"),
    (["--case", "ii", "--base-from", "x"], "--base-from adopts a case (i) stage 1"),
    (["--base-from", "nowhere"], "--base-from: training option 'base_from'"),
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
    from sbnn.studies.mnist import load_mnist

    cfg = tmp_path / "c.toml"
    cfg.write_text("[sbnn]\nlayers = [784, 32, 10]\n[train]\njoint_epochs = 1\nthreads = 1\n")
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--case", "ii", "--out", str(run),
                 "--data-dir", str(SHARED_MNIST), "--shift", "1", "--device", "cpu"]) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["settings"]["joint_epochs"] == 1 and summary["settings"]["shift"] == 1
    assert summary["command"].startswith("sbnn train --config")
    assert summary["validation_images"] == 10000 and summary["fit_images"] == 50000
    assert summary["device"] == "cpu" and summary["seed"] == 0
    assert summary["split"]["test"].startswith("not read")
    val = load_mnist("val", SHARED_MNIST)
    q = QuantizedModel.load(run / "model.npz")
    pred = run_hw(q, val[0].reshape(len(val[0]), -1)).classes
    assert (pred != val[1]).mean() * 100 == summary["val_hw_error_pct"]
    assert main(["eval", "--model", str(run / "model.npz"), "--data-dir", str(SHARED_MNIST),
                 "--json", str(tmp_path / "e.json")]) == 0
    rows = json.loads((tmp_path / "e.json").read_text())
    assert rows[-1]["float_error_pct"] is not None
    test = load_mnist("test", SHARED_MNIST)
    pred = run_hw(q, test[0].reshape(len(test[0]), -1)).classes
    assert abs(rows[-1]["error_pct"] - (pred != test[1]).mean() * 100) < 0.01
