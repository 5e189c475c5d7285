"""The golden integer path against a brute-force float reference written from the spec."""

import math

import numpy as np
import pytest

from sbnn.config import SbnnConfig
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.timing import LAYER_GAP, PASS_GAP, RESULT_GAP

SMALL = [
    SbnnConfig(layers=(10, 7, 3), active_rows=4, macro_cols=6, macro_rows=128,
               num_supports=2, gain_bits=3, adc_bits=5, adc_steps=(4, 1)),
    SbnnConfig(layers=(13, 5, 4, 3), active_rows=3, macro_cols=4, macro_rows=255,
               num_supports=1, adc_bits=4, dac_bits=3, adc_steps=(2, 1, 2), macro_latency=5),
    SbnnConfig(layers=(9, 4), active_rows=9, macro_cols=3, macro_rows=18,
               num_supports=0, adc_bits=6, adc_steps=(8,)),
]


def brute_force(model: QuantizedModel, pixels: np.ndarray, budget: int) -> np.ndarray:
    """One image, nested loops, float division and math.floor, as the spec reads."""
    cfg = model.config
    x = [float(int(p) >> (8 - cfg.dac_bits)) for p in pixels]
    for layer in range(cfg.num_layers):
        n, m = cfg.layers[layer], cfg.layers[layer + 1]
        step = float(cfg.adc_steps[layer])
        acc = [0.0] * m
        for j in range(m):
            for rb in range(math.ceil(n / cfg.active_rows)):
                for k in range(budget + 1):
                    if k and not model.support_mask[layer][j, k - 1]:
                        continue
                    s = 0.0
                    for r in range(cfg.active_rows):
                        i = rb * cfg.active_rows + r
                        if i < n:
                            s += x[i] * float(model.planes[layer][k, j, i])
                    s *= cfg.plane_gains[k]
                    acc[j] += min(max(math.floor(s / step), cfg.adc_min), cfg.adc_max)
        v = [acc[j] - float(model.thresholds[layer][budget, j]) for j in range(m)]
        x = [1.0 if t >= 0 else -1.0 for t in v]
    return np.array(v)


@pytest.mark.parametrize("cfg", SMALL, ids=["K2", "3layer", "K0"])
def test_integer_path_matches_brute_force(cfg):
    rng = np.random.default_rng(7)
    for _ in range(6):
        model = QuantizedModel.random(cfg, rng, mask_keep=0.6, per_pass=True)
        pixels = rng.integers(0, 256, (5, cfg.layers[0]), dtype=np.uint8)
        for budget in range(cfg.num_supports + 1):
            res = hwpath.run_hw(model, pixels, budget)
            for b in range(len(pixels)):
                ref = brute_force(model, pixels[b], budget)
                np.testing.assert_array_equal(res.logits[b], ref.astype(np.int64))
                assert res.classes[b] == int(np.argmax(ref))
                # every earlier pass equals a from-scratch run with that many planes
                for p, logits in res.pass_logits.items():
                    np.testing.assert_array_equal(logits[b], brute_force(model, pixels[b], p))


def test_adc_saturates_and_floors():
    cfg = SbnnConfig(layers=(4, 2), active_rows=4, macro_cols=2, macro_rows=4,
                     num_supports=0, adc_bits=3, adc_steps=(2,), dac_bits=8)
    planes = np.ones((1, 2, 4), dtype=np.int8)
    planes[0, 1] = -1
    model = QuantizedModel(cfg, (planes,), (np.zeros(2, np.int64),), (np.zeros((2, 0), bool),))
    # x = 3,0,0,0: sums +3 / -3 -> floor(1.5)=1, floor(-1.5)=-2
    res = hwpath.run_hw(model, np.array([[3, 0, 0, 0]], np.uint8))
    assert res.logits.tolist() == [[1, -2]]
    # x = 255*4: sums +-1020 -> saturate to [-4, 3]
    res = hwpath.run_hw(model, np.full((1, 4), 255, np.uint8))
    assert res.logits.tolist() == [[3, -4]]


def test_schedule_timing_contract_and_skips():
    cfg = SMALL[0]
    rng = np.random.default_rng(3)
    model = QuantizedModel.random(cfg, rng)
    masks = list(model.support_mask)
    masks[0][:] = False  # all supports of layer 0 masked: only plane 0 there
    model = model.with_mask(tuple(masks))
    sched = hwpath.schedule(model, cfg.num_supports)
    assert all(e.plane == 0 for e in sched.evals if e.layer == 0)
    lat = cfg.macro_latency
    for prev, ev in zip(sched.evals, sched.evals[1:]):
        gap = PASS_GAP if ev.pass_ != prev.pass_ else LAYER_GAP if ev.layer != prev.layer \
            else 0
        assert ev.cycle - prev.cycle == lat + gap
    assert sched.total_cycles(cfg.num_supports) == sched.evals[-1].cycle + lat + RESULT_GAP
    # passes > 0 add only the unmasked first-layer plane (none here), then rerun the rest
    assert not [e for e in sched.evals if e.pass_ > 0 and e.layer == 0]
    assert {e.pass_ for e in sched.evals} == set(range(cfg.num_supports + 1))
    tiles = [(e.layer, e.col_block, e.row_block) for e in sched.evals]
    assert [e.tile for e in sched.evals] == [sorted(set(tiles)).index(t) for t in tiles]


def test_exit_margin_picks_first_confident_pass():
    cfg = SMALL[0]
    rng = np.random.default_rng(9)
    model = QuantizedModel.random(cfg, rng, mask_keep=0.8)
    pixels = rng.integers(0, 256, (40, cfg.layers[0]), dtype=np.uint8)
    full = hwpath.run_hw(model, pixels)
    assert (full.exit_pass == cfg.num_supports).all()
    m0 = hwpath.margins(full.pass_logits[0])
    threshold = int(np.median(m0))
    res = hwpath.run_hw(model, pixels, exit_margin=threshold)
    early = m0 >= threshold
    assert (res.exit_pass[early] == 0).all() and (res.exit_pass[~early] > 0).all()
    np.testing.assert_array_equal(res.logits[early], full.pass_logits[0][early])
    assert hwpath.run_hw(model, pixels, exit_margin=0).exit_pass.max() == 0
    # budget 0: exactly one evaluation per tile
    assert len(hwpath.schedule(model, 0)) == cfg.total_tiles
    with pytest.raises(ValueError, match="budget"):
        hwpath.schedule(model, cfg.num_supports + 1)


def test_trace_matches_schedule_and_inputs():
    cfg = SMALL[1]
    rng = np.random.default_rng(5)
    model = QuantizedModel.random(cfg, rng)
    pixels = rng.integers(0, 256, (2, cfg.layers[0]), dtype=np.uint8)
    sched = hwpath.schedule(model, 1)
    res = hwpath.run_hw(model, pixels, 1, keep_adc=True)
    trace = hwpath.expected_trace(model, sched, res, 1)
    assert len(trace) == len(sched)
    first = trace[0]
    assert first["row_x"][:3] == tuple(int(p) >> 5 for p in pixels[1][:3])
    for tx in trace:
        assert len(tx["row_x"]) == cfg.active_rows and len(tx["adc"]) == cfg.macro_cols
        disabled = [c for c in range(cfg.macro_cols) if not tx["col_en"] >> c & 1]
        assert all(tx["adc"][c] == 0 for c in disabled)


def test_input_shape_errors():
    cfg = SMALL[0]
    model = QuantizedModel.random(cfg, np.random.default_rng(0))
    with pytest.raises(ValueError, match="pixels but layers"):
        hwpath.run_hw(model, np.zeros((1, 11), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        hwpath.run_hw(model, np.zeros((1, 10), np.int32))
