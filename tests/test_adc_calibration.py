"""ADC steps chosen from data: the chosen step is the least-error power of two (checked by
brute force against the hardware-exact path), training folds with it when the config
leaves adc_steps out, and a given step that clips most conversions draws a warning."""

import numpy as np
import pytest
import torch

from sbnn.config import SbnnConfig
from sbnn.golden.adc_calibration import (
    calibrate_adc_steps,
    clip_fractions,
    clipping_warnings,
    least_error_steps,
)
from sbnn.golden.fold import fold_model
from sbnn.golden.hwpath import run_hw
from sbnn.golden.model import SupportedBNN, pixels_to_codes
from sbnn.golden.qmodel import QuantizedModel
from sbnn.studies.recipe import TrainSettings
from sbnn.studies.train import steps_from_data

CFG = SbnnConfig(layers=(784, 24, 10), num_supports=1, adc_bits=4, active_rows=64)


def _net(seed: int) -> SupportedBNN:
    torch.manual_seed(seed)
    net = SupportedBNN(CFG)
    with torch.no_grad():  # planes of real signs, norms that put thresholds mid-range
        for lin in net.linears:
            lin.base.uniform_(-1, 1)
            lin.supports.uniform_(-1, 1)
    net.eval()
    return net


def _pixels(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((n, 784), dtype=np.uint8)
    on = rng.random((n, 784)) < 0.2  # sparse bright strokes, as MNIST
    img[on] = rng.integers(128, 256, on.sum())
    return img


def _preact_error(cfg: SbnnConfig, net: SupportedBNN, pixels: np.ndarray, steps) -> float:
    """Brute force: the first layer's pass-K integer pre-activation from the hardware path's
    ADC codes at ``steps``, against the exact sum."""
    q = fold_model(_with_steps(net, steps))
    res = run_hw(q, pixels, keep_adc=True)
    planes = q.planes[0]
    x = (pixels >> (8 - cfg.dac_bits)).astype(np.float64)
    exact = sum(cfg.plane_gains[k] * x @ planes[k].T.astype(np.float64)
                for k in range(cfg.planes))
    acc = sum(v for (p, layer, _, _), v in res.adc.items() if p == 1 and layer == 0)
    bias = sum((steps[0] - np.gcd(g, steps[0])) / 2 for g in cfg.plane_gains) * \
        cfg.row_blocks(0)
    return float(np.mean((acc * steps[0] + bias - exact) ** 2))


def _with_steps(net: SupportedBNN, steps) -> SupportedBNN:
    twin = SupportedBNN(CFG.replace(adc_steps=tuple(steps)))
    twin.load_state_dict(net.state_dict())
    twin.eval()
    return twin


def test_first_layer_step_is_the_least_error_power_of_two():
    net, pixels = _net(0), _pixels(200, 1)
    steps = least_error_steps(net, pixels_to_codes(torch.from_numpy(pixels), CFG))
    assert all(s & (s - 1) == 0 for s in steps)  # powers of two
    errors = {s: _preact_error(CFG, net, pixels, (s, *steps[1:])) for s in
              (1, 2, 4, 8, 16, 32, 64, 128, 256)}
    best = min(errors.values())
    assert errors[steps[0]] <= best * 1.0001
    # the derived default of this 4-bit design is far from it: that is what data fixes
    assert CFG.adc_steps[0] != steps[0]


def test_calibrated_steps_disagree_with_the_float_model_no_more_than_least_error_ones():
    net, pixels = _net(8), _pixels(300, 9)
    codes = pixels_to_codes(torch.from_numpy(pixels), CFG)
    with torch.no_grad():
        want = [net(codes, b).argmax(1).numpy() for b in range(CFG.planes)]

    def disagreement(steps):
        q = fold_model(_with_steps(net, steps))
        return sum(int((run_hw(q, pixels, b).classes != w).sum()) for b, w in enumerate(want))

    mse, final = least_error_steps(net, codes), calibrate_adc_steps(net, codes)
    assert all(s & (s - 1) == 0 for s in final)
    assert all(m / 4 <= f <= m * 4 for m, f in zip(mse, final))
    assert disagreement(final) <= disagreement(mse)


def test_clip_fractions_count_codes_at_the_limits():
    net, pixels = _net(2), _pixels(100, 3)
    tiny = fold_model(_with_steps(net, (1, 1)))
    res = run_hw(tiny, pixels, keep_adc=True)
    q = res.adc[(1, 0, 0, 0)]
    share = np.mean((q == CFG.adc_min) | (q == CFG.adc_max))
    assert share > 0.5  # step 1 on 64 rows of 4-bit codes: nearly everything clips
    assert clip_fractions(tiny, pixels)[0] > 0.5
    lines = clipping_warnings(tiny, pixels, "100 images")
    assert lines and lines[0].startswith("adc_steps[0] = 1 clips")
    assert "leave adc_steps out" in lines[0]
    wide = fold_model(_with_steps(net, (1 << 12, 1 << 8)))
    assert clip_fractions(wide, pixels) == [0.0, 0.0]
    assert clipping_warnings(wide, pixels, "100 images") == []


def test_training_calibrates_only_when_the_config_leaves_steps_out():
    assert steps_from_data(SbnnConfig(layers=(784, 16, 10)), TrainSettings())
    given = SbnnConfig(layers=(784, 16, 10), adc_steps=(4, 1))
    assert not steps_from_data(given, TrainSettings())
    # adc_aware training models the configured first-layer step: it is kept
    assert not steps_from_data(SbnnConfig(layers=(784, 16, 10)),
                               TrainSettings(adc_aware=True))
    # a config read back from a model's snapshot names its steps: they are kept
    assert not steps_from_data(SbnnConfig.from_dict(given.to_dict()), TrainSettings())


def test_fold_with_calibration_codes_changes_only_the_steps():
    net, pixels = _net(4), _pixels(120, 5)
    plain = fold_model(net)
    net.calibration_codes = pixels_to_codes(torch.from_numpy(pixels), CFG)
    calibrated = fold_model(net)
    assert net.cfg == CFG  # the model's own config is left as it was
    assert calibrated.config.adc_steps == calibrate_adc_steps(net, net.calibration_codes)
    for a, b in zip(plain.planes, calibrated.planes):
        np.testing.assert_array_equal(a, b)
    rest = {k: v for k, v in calibrated.config.to_dict().items() if k != "adc_steps"}
    assert rest == {k: v for k, v in CFG.to_dict().items() if k != "adc_steps"}


@pytest.mark.parametrize("field", ["adc_steps"])
def test_design_override_leaves_steps_to_the_data(field):
    import argparse

    from sbnn.cli.train import design_overrides

    args = argparse.Namespace(layers="784,16,10", supports=None, dac_bits=None, adc_bits=5)
    cfg = design_overrides(SbnnConfig(adc_steps=(8, 2)), args)
    assert field not in cfg.model_fields_set


def test_train_records_its_steps_and_warns_when_a_given_step_clips(tmp_path, capsys):
    from sbnn.studies.train import train_case_ii

    rng = np.random.default_rng(0)
    fit = (_pixels(300, 6).reshape(300, 28, 28), rng.integers(0, 10, 300).astype(np.uint8))
    val = (_pixels(100, 7).reshape(100, 28, 28), rng.integers(0, 10, 100).astype(np.uint8))
    settings = TrainSettings(joint_epochs=1, batch_size=100, threads=1, hw_val_every=0)
    free = SbnnConfig(layers=(784, 16, 10), adc_bits=4)
    summary = train_case_ii(free, fit, val, tmp_path / "a", settings, log=lambda m: None)
    assert summary["adc_steps_from"].startswith("data")
    given = SbnnConfig(layers=(784, 16, 10), adc_bits=4, adc_steps=(1, 1))
    summary = train_case_ii(given, fit, val, tmp_path / "b", settings, log=lambda m: None)
    assert summary["adc_steps"] == [1, 1] and summary["adc_steps_from"] == "the config"
    from sbnn.cli.train import _warn_clipping

    _warn_clipping(tmp_path / "b" / "model.npz", val)
    err = capsys.readouterr().err
    assert "sbnn: warning: adc_steps[0] = 1 clips" in err


@pytest.mark.parametrize("fields", [
    {"adc_bits": 3, "active_rows": 32, "macro_rows": 16384},  # rounds most sums away
    {"num_supports": 2, "adc_bits": 5, "macro_cols": 96, "macro_rows": 32768},
    {"adc_bits": 4, "active_rows": 128, "macro_rows": 65536, "adc_steps": (16, 8, 8)},
])
def test_adc_quantize_forward_answers_as_the_hardware_does(fields):
    """A model with ``adc_quantize`` computes each layer as the macro and accumulator do
    (floor per row block and plane, clipping, the floor's mean that folding adds back):
    folded, the hardware-exact path gives its answers, at every budget, with a masked
    support column too; the plain float model does not (the check can fail)."""
    fields = dict(fields)
    cfg = SbnnConfig(layers=(784, 48, 24, 10), num_supports=fields.pop("num_supports", 1),
                     **fields)
    torch.manual_seed(7)
    net = SupportedBNN(cfg)
    with torch.no_grad():
        for lin in net.linears:
            lin.base.uniform_(-1, 1)
            lin.supports.uniform_(-1, 1)
        net.linears[1].mask[:5, 0] = 0  # masked support columns: no conversion
    pixels = _pixels(600, 8)
    codes = pixels_to_codes(torch.from_numpy(pixels), cfg)
    net.adc_quantize = True
    net.train()
    with torch.no_grad():  # batch-norm statistics of the quantized sums
        for _ in range(3):
            for b in range(cfg.num_supports + 1):
                net(codes, b)
    net.eval()
    folded = fold_model(net)
    worse = []
    for b in range(cfg.num_supports + 1):
        with torch.no_grad():
            quantized = net(codes, b).argmax(1).numpy()
        hw = run_hw(folded, pixels, b).classes
        assert (quantized == hw).mean() >= 0.995, (b, (quantized == hw).mean())
        net.adc_quantize = False
        with torch.no_grad():
            plain = net(codes, b).argmax(1).numpy()
        net.adc_quantize = True
        worse.append((plain == hw).mean())
    if cfg.adc_bits == 3:
        assert max(worse) < 0.9  # without it, the float model is far from the hardware


def test_adc_finetune_runs_only_where_the_steps_come_from_data(tmp_path):
    from sbnn.studies.train import train_case_ii

    rng = np.random.default_rng(3)
    fit = (_pixels(300, 9).reshape(-1, 28, 28), rng.integers(0, 10, 300).astype(np.uint8))
    val = (_pixels(100, 10).reshape(-1, 28, 28), rng.integers(0, 10, 100).astype(np.uint8))
    settings = TrainSettings(joint_epochs=1, batch_size=100, threads=1)
    cfg = SbnnConfig(layers=(784, 16, 10), num_supports=1)
    summary = train_case_ii(cfg, fit, val, tmp_path / "data", settings, log=lambda m: None)
    assert [s["stage"] for s in summary["stages"]] == ["joint", "adc"]
    assert summary["adc_steps_from"].startswith("data")
    assert summary["stages"][1]["budgets"] == [0, 1]
    off = train_case_ii(cfg, fit, val, tmp_path / "off", settings.replace(
        adc_finetune_epochs=0), log=lambda m: None)
    assert [s["stage"] for s in off["stages"]] == ["joint"]
    pinned = train_case_ii(cfg.replace(adc_steps=(4, 1)), fit, val, tmp_path / "pinned",
                           settings, log=lambda m: None)
    assert [s["stage"] for s in pinned["stages"]] == ["joint"]
    # the fine-tuned model keeps the steps chosen on its joint stage's model
    assert summary["adc_steps"] == list(QuantizedModel.load(
        tmp_path / "data" / "model.npz").config.adc_steps)
