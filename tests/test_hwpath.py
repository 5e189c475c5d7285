"""The golden integer path against a brute-force float reference written from the spec."""

import math

import numpy as np
import pytest

from sbnn.config import SbnnConfig
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.timing import LAYER_GAP, PASS_GAP, RESULT_GAP, RETHRESHOLD_LATENCY

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


def _steps(sched):
    """(cycle, latency, pass, layer, col_block, row_block, plane) of every step, in cycle
    order; a rethreshold has row block -1 and latency RETHRESHOLD_LATENCY."""
    lat = sched.config.macro_latency
    steps = [(e.cycle, lat, e.pass_, e.layer, e.col_block, e.row_block, e.plane)
             for e in sched.evals]
    steps += [(r.cycle, RETHRESHOLD_LATENCY, r.pass_, 0, r.col_block, -1, r.pass_)
              for r in sched.rethresholds]
    return sorted(steps)


def _check_contract(sched):
    """Spec order (pass, layer, column block, row block, plane), each step starting its
    predecessor's latency (plus the layer or pass gap) after it, the result RESULT_GAP
    after the last step's latency."""
    steps = _steps(sched)
    assert steps[0][0] == 0
    assert [s[2:] for s in steps] == sorted(s[2:] for s in steps)
    for prev, step in zip(steps, steps[1:]):
        gap = PASS_GAP if step[2] != prev[2] else LAYER_GAP if step[3] != prev[3] else 0
        assert step[0] - prev[0] == prev[1] + gap, (prev, step)
    for p in sched.passes:
        last = max(s for s in steps if s[2] == p)
        assert sched.total_cycles(p) == last[0] + last[1] + RESULT_GAP
    cfg = sched.config  # every pass runs every layer: the closed form is exact
    assert sched.total_cycles() == sum(s[1] for s in steps) + len(sched.passes) * (
        LAYER_GAP * (cfg.num_layers - 1) + PASS_GAP)


def test_schedule_timing_contract_and_skips():
    cfg = SMALL[0]  # layer 0: 4 column blocks of 3 row blocks; layer 1: 2 of 2
    rng = np.random.default_rng(3)
    model = QuantizedModel.random(cfg, rng)
    masks = list(model.support_mask)
    masks[0][:] = False  # all supports of layer 0 masked: only plane 0 there
    model = model.with_mask(tuple(masks))
    sched = hwpath.schedule(model, cfg.num_supports)
    assert all(e.plane == 0 for e in sched.evals if e.layer == 0)
    _check_contract(sched)
    # passes > 0 evaluate nothing in the first layer: every block is rethresholded there
    assert not [e for e in sched.evals if e.pass_ > 0 and e.layer == 0]
    assert [(r.pass_, r.col_block) for r in sched.rethresholds] == \
        [(p, cb) for p in (1, 2) for cb in range(4)]
    lat = cfg.macro_latency
    last0 = max(e.cycle for e in sched.evals if e.pass_ == 0)
    first1 = min(r.cycle for r in sched.rethresholds if r.pass_ == 1)
    assert first1 == last0 + lat + PASS_GAP
    layer1 = min(e.cycle for e in sched.evals if e.pass_ == 1)
    assert layer1 == first1 + 3 + RETHRESHOLD_LATENCY + LAYER_GAP  # 4 one-cycle steps
    assert {e.pass_ for e in sched.evals} == set(range(cfg.num_supports + 1))
    assert sched.passes == (0, 1, 2)
    tiles = [(e.layer, e.col_block, e.row_block) for e in sched.evals]
    assert [e.tile for e in sched.evals] == [sorted(set(tiles)).index(t) for t in tiles]


@pytest.mark.parametrize("cfg", SMALL, ids=["K2", "3layer", "K0"])
def test_schedule_every_first_layer_block_once_per_pass(cfg):
    """Pass p > 0 visits each first-layer block once: plane p's evaluations where it has an
    enabled column, else one rethreshold step; a single-layer network too (no pass is
    skipped: a rethresholded block's outputs change with the pass's thresholds)."""
    rng = np.random.default_rng(8)
    for keep in (0.0, 0.3, 1.0):
        model = QuantizedModel.random(cfg, rng, mask_keep=keep, per_pass=True)
        sched = hwpath.schedule(model, cfg.num_supports)
        _check_contract(sched)
        assert sched.passes == tuple(range(cfg.num_supports + 1))
        for p in range(1, cfg.planes):
            evaluated = {e.col_block for e in sched.evals if e.pass_ == p and e.layer == 0}
            redone = [r.col_block for r in sched.rethresholds if r.pass_ == p]
            enabled = {cb for cb in range(cfg.col_blocks(0))
                       if hwpath.column_enables(cfg, model, 0, cb, p)}
            assert evaluated == enabled and sorted(redone) == sorted(
                set(range(cfg.col_blocks(0))) - enabled)


def test_single_layer_network_runs_every_pass_with_its_thresholds():
    rng = np.random.default_rng(8)
    one = SbnnConfig(layers=(10, 5), active_rows=4, macro_cols=9, macro_rows=32,
                     num_supports=2, gain_bits=3, adc_bits=5, macro_latency=2)
    model = QuantizedModel.random(one, rng, mask_keep=0.0, per_pass=True)
    sched = hwpath.schedule(model, 2)
    _check_contract(sched)
    assert sched.passes == (0, 1, 2) and {e.pass_ for e in sched.evals} == {0}
    # pass 2's logits are made with pass 2's thresholds, though no plane was added
    pixels = rng.integers(0, 256, (3, 10), dtype=np.uint8)
    res = hwpath.run_hw(model, pixels, 2)
    for b in range(3):
        np.testing.assert_array_equal(res.pass_logits[2][b] - res.pass_logits[0][b],
                                      model.thresholds[0][0] - model.thresholds[0][2])
    assert not np.array_equal(model.thresholds[0][0], model.thresholds[0][2])


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


def test_hidden_thresholds_beyond_the_accumulator_decide_as_its_ends():
    """Older folds stored constant neurons at +-2**acc_bits; the model keeps them at
    +-threshold_reach (acc - theta then fits threshold_bits, as the RTL computes it) and
    every activation is what the exact comparison with the original threshold gives."""
    from sbnn.config import SbnnConfig
    from sbnn.golden.qmodel import ModelFileError, QuantizedModel

    cfg = SbnnConfig(layers=(40, 24, 6), num_supports=1, active_rows=8, macro_cols=16,
                     macro_rows=512, adc_bits=5)
    rng = np.random.default_rng(5)
    base = QuantizedModel.random(cfg, rng, mask_keep=1.0, per_pass=True)
    wide = 1 << (cfg.threshold_bits - 1)
    theta = base.thresholds[0].copy()
    theta[1, :6] = -wide  # always fire, as an old fold wrote it
    theta[1, 6:12] = wide - 1  # never fire
    model = QuantizedModel(cfg, base.planes, (theta, base.thresholds[1]), base.support_mask)
    reach = cfg.threshold_reach
    assert model.thresholds[0].min() >= -reach and model.thresholds[0].max() <= reach
    assert (model.thresholds[0][1, :6] == -reach).all()
    pixels = rng.integers(0, 256, (50, 40), dtype=np.uint8)
    res = hwpath.run_hw(model, pixels, 1, keep_adc=True)
    acc = sum(v for (p, layer, _, _), v in res.adc.items() if p == 1 and layer == 0)
    assert np.abs(acc).max() < reach  # every reachable sum lies inside
    np.testing.assert_array_equal(res.inputs[(1, 1)], np.where(acc >= theta[1], 1, -1))
    out = base.thresholds[1].copy()
    out[0, 0] = -wide
    with pytest.raises(ModelFileError, match="output"):
        QuantizedModel(cfg, base.planes, (base.thresholds[0], out), base.support_mask)
