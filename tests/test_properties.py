"""Property tests: the hardware-exact integer path against a from-the-spec brute force.

Hypothesis draws small valid designs (layer widths, rows per evaluation, supports, DAC/ADC
resolutions, ADC steps, macro latency), a random model, pixels, a budget and an optional exit
margin, and checks every pass's logits, the exit decision, the timing contract of the
schedule and the result counters against independent computations.
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hwpath import brute_force

from sbnn.config import SbnnConfig
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.timing import LAYER_GAP, PASS_GAP, RESULT_GAP, RETHRESHOLD_LATENCY

PROPS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def configs(draw) -> SbnnConfig:
    n_widths = draw(st.integers(2, 4))
    layers = tuple(draw(st.integers(2, 12)) for _ in range(n_widths))
    k = draw(st.integers(0, 2))
    active_rows = draw(st.integers(1, 8))
    fields = dict(
        layers=layers, num_supports=k, active_rows=active_rows,
        macro_cols=draw(st.integers(k + 1, 3 * (k + 1) + 2)),
        dac_bits=draw(st.integers(1, 8)), adc_bits=draw(st.integers(2, 8)), gain_bits=3,
        adc_steps=tuple(1 << draw(st.integers(0, 5)) for _ in range(n_widths - 1)),
        macro_latency=draw(st.integers(2, 6)))
    # first build with room to spare, then shrink the macro to exactly the tiles it needs
    roomy = SbnnConfig(macro_rows=active_rows * 4096, **fields)
    return roomy.replace(macro_rows=roomy.total_tiles * active_rows)


@st.composite
def cases(draw):
    cfg = draw(configs())
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    model = QuantizedModel.random(cfg, rng, mask_keep=draw(st.sampled_from([0.0, 0.5, 1.0])),
                                  per_pass=draw(st.booleans()))
    batch = draw(st.integers(1, 4))
    pixels = rng.integers(0, 256, (batch, cfg.layers[0]), dtype=np.uint8)
    budget = draw(st.integers(0, cfg.num_supports))
    exit_margin = draw(st.none() | st.integers(0, 12))
    return model, pixels, budget, exit_margin


def _margin(logits) -> int:
    top = sorted(int(v) for v in logits)
    return top[-1] - top[-2]


@PROPS
@given(cases())
def test_passes_exit_and_class_match_brute_force(case):
    model, pixels, budget, exit_margin = case
    assert model.config.total_tiles * model.config.active_rows == model.config.macro_rows
    res = hwpath.run_hw(model, pixels, budget, exit_margin=exit_margin)
    passes = hwpath.schedule(model, budget).passes
    assert sorted(res.pass_logits) == list(passes)
    assert passes == tuple(range(budget + 1))  # every pass runs, a single-layer net's too
    for b in range(len(pixels)):
        ref = {p: brute_force(model, pixels[b], p).astype(np.int64) for p in passes}
        for p in passes:
            np.testing.assert_array_equal(res.pass_logits[p][b], ref[p])
        # exit pass: the first pass (before the last) whose top-two margin reaches the margin
        want = passes[-1]
        if exit_margin is not None:
            want = next((p for p in passes[:-1] if _margin(ref[p]) >= exit_margin), want)
        assert res.exit_pass[b] == want
        np.testing.assert_array_equal(res.logits[b], ref[want])
        assert res.classes[b] == int(np.argmax(ref[want]))


@PROPS
@given(cases())
def test_schedule_timing_and_counters(case):
    model, pixels, budget, exit_margin = case
    cfg = model.config
    sched = hwpath.schedule(model, budget)
    lat = cfg.macro_latency
    assert sched.evals[0].cycle == 0
    # every step, evaluations and rethresholds (row block -1), in cycle order: each starts
    # its predecessor's latency after it, plus the pass or layer gap
    steps = sorted([(e.cycle, lat, e.pass_, e.layer, e.col_block, e.row_block, e.plane)
                    for e in sched.evals] +
                   [(r.cycle, RETHRESHOLD_LATENCY, r.pass_, 0, r.col_block, -1, r.pass_)
                    for r in sched.rethresholds])
    for prev, step in zip(steps, steps[1:]):
        gap = PASS_GAP if step[2] != prev[2] else LAYER_GAP if step[3] != prev[3] else 0
        assert step[0] - prev[0] == prev[1] + gap
        assert step[2:] > prev[2:]  # spec order: pass, layer, column and row block, plane
    for r in sched.rethresholds:  # only a first-layer block with no enabled plane-p column
        assert r.pass_ > 0 and not hwpath.column_enables(cfg, model, 0, r.col_block, r.pass_)
    for ev in sched.evals:
        assert 0 <= ev.tile < cfg.total_tiles and ev.gain == cfg.plane_gains[ev.plane]
        assert 1 << ev.adc_shift == cfg.adc_steps[ev.layer]
        assert ev.plane <= ev.pass_ and ev.col_en
        # only plane columns of this plane are enabled
        nt = cfg.neurons_per_tile
        assert ev.col_en >> (ev.plane * nt) << (ev.plane * nt) == ev.col_en
        assert ev.col_en < 1 << ((ev.plane + 1) * nt)
    # budget 0 runs each tile exactly once
    assert len(hwpath.schedule(model, 0)) == cfg.total_tiles

    res = hwpath.run_hw(model, pixels, budget, exit_margin=exit_margin, keep_adc=True)
    for b in range(len(pixels)):
        trace = hwpath.expected_trace(model, sched, res, b)
        got = hwpath.expected_result(sched, res, b, trace)
        e = int(res.exit_pass[b])
        assert got["exit_plane"] == e
        assert len(trace) == len([ev for ev in sched.evals if ev.pass_ <= e])
        assert all(tx["pass"] <= e for tx in trace)
        last = max(s for s in steps if s[2] <= e)
        assert got["cycles"] == last[0] + last[1] + RESULT_GAP
        assert got["macro_evals"] == len(trace)
        cols = sum(bin(tx["col_en"]).count("1") for tx in trace)
        assert got["column_evals"] == got["adc_conversions"] == cols
        assert got["dac_conversions"] == sum(sum(1 for x in tx["row_x"] if x != 0)
                                             for tx in trace)
        assert got["cls"] == int(np.argmax(res.logits[b]))
        assert got["logits"] == tuple(int(v) for v in res.logits[b])
        for tx in trace:
            assert len(tx["row_x"]) == cfg.active_rows and len(tx["adc"]) == cfg.macro_cols
            assert all(cfg.adc_min <= a <= cfg.adc_max for a in tx["adc"])
            assert all(a == 0 for c, a in enumerate(tx["adc"]) if not tx["col_en"] >> c & 1)
