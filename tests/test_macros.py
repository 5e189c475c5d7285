"""Parallel and pipelined macros (num_macros, macro_interval): the timing contract of
docs/architecture.md "Parallel and pipelined macros", on hand-worked schedules and as
properties of random ones; the config fields; the latency table."""

import dataclasses
import math

import numpy as np
import pytest

from sbnn.config import ConfigError, SbnnConfig
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.timing import busy_cycles, macro_of

#: 64-32-10, K = 1: the first layer is one row block by two column blocks of 16 neurons,
#: the second one row block by one column block.
SMALL = SbnnConfig(layers=(64, 32, 10), macro_latency=4)


def _model(cfg, keep=1.0, seed=0):
    return QuantizedModel.random(cfg, np.random.default_rng(seed), mask_keep=keep)


def _arranged(model, n, interval):
    return dataclasses.replace(model, config=model.config.replace(num_macros=n,
                                                                  macro_interval=interval))


def test_defaults_leave_the_snapshot_and_the_fields_alone():
    cfg = SbnnConfig()
    text = cfg.to_json()
    assert "num_macros" not in text and "macro_interval" not in text
    assert cfg.num_macros == 1 and cfg.interval == cfg.macro_latency
    assert SbnnConfig.from_dict(cfg.to_dict()) == cfg
    four = SbnnConfig(num_macros=4, macro_interval=1)
    assert four.to_dict()["num_macros"] == 4 and four.to_dict()["macro_interval"] == 1
    assert SbnnConfig.from_dict(four.to_dict()) == four
    assert four.in_flight_per_macro == 4 and SbnnConfig(macro_interval=3).in_flight_per_macro == 2


@pytest.mark.parametrize("field, value", [("macro_interval", 5), ("macro_interval", 0),
                                          ("num_macros", 0), ("num_macros", 65)])
def test_bad_macro_fields_are_named(field, value):
    with pytest.raises(ConfigError, match=field):
        SbnnConfig(**{field: value})


def test_rtl_implements_every_arrangement():
    from sbnn.rtl.controller import Controller

    Controller(SbnnConfig(num_macros=2))  # several macros: implemented (rtl/parallel.py)
    Controller(SbnnConfig(num_macros=4, macro_interval=1))
    Controller(SbnnConfig(macro_interval=1))  # a pipelined macro: implemented
    Controller(SbnnConfig(macro_interval=4))  # the default interval, given


def test_helpers():
    assert [macro_of(j, 3) for j in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert busy_cycles([], 4) == 0
    assert busy_cycles([0, 4, 8], 4) == 12
    assert busy_cycles([0, 1, 2], 4) == 6
    assert busy_cycles([0, 10], 4) == 8


def test_four_macros_two_blocks_end_in_different_cycles():
    """N = 4, interval 1: the two single-evaluation blocks of the first layer would start
    together on macros 0 and 1, but two blocks may not end in one cycle: the second starts
    a cycle later. Layer 1 starts LAYER_GAP after the last retire (5 + 2); pass 1 PASS_GAP
    after (11 + 3); its layer 1 holds planes 0 and 1 of one block, on macros 0 and 1 in the
    same cycle; the result is RESULT_GAP after the last retire (25 + 3)."""
    sched = hwpath.schedule(_arranged(_model(SMALL), 4, 1), 1)
    assert [e.cycle for e in sched.evals] == [0, 1, 7, 14, 15, 21, 21]
    assert [e.macro for e in sched.evals] == [0, 1, 0, 0, 1, 0, 1]
    assert sched.result_cycles == (14, 28)
    # one macro, one evaluation in flight: 0, 4 | 10 | 17, 21 | 27, 31 | 38
    assert hwpath.schedule(_model(SMALL), 1).result_cycles == (17, 38)


def test_one_pipelined_macro():
    """N = 1, interval 1: consecutive starts on the one macro one cycle apart."""
    sched = hwpath.schedule(_arranged(_model(SMALL), 1, 1), 1)
    assert [e.cycle for e in sched.evals] == [0, 1, 7, 14, 15, 21, 22]
    assert {e.macro for e in sched.evals} == {0}
    assert sched.result_cycles == (14, 29)


def test_rethreshold_steps_serialize():
    """Supports all masked: pass 1 rethresholds both first-layer blocks, each starting when
    the step before retires, and its layer 1 is plane 0 only."""
    model = _model(SMALL, keep=0.0)
    sched = hwpath.schedule(_arranged(model, 2, 1), 1)
    assert [e.cycle for e in sched.evals] == [0, 1, 7, 18]
    assert [r.cycle for r in sched.rethresholds] == [14, 15]
    assert sched.result_cycles == (14, 25)
    base = hwpath.schedule(model, 1)
    assert [e.cycle for e in base.evals] == [0, 4, 10, 21]
    assert [r.cycle for r in base.rethresholds] == [17, 18]
    assert base.result_cycles == (17, 28)


def test_default_design_four_macros_interval_one():
    """The issue's target: N = 4, interval 1, budget 1 in at most 0.1 x the 1,722 cycles
    of one macro, every macro busy at least 90 % of the cycles. By hand: each pass's first
    layer is 208 evaluations, 52 cycles on four macros; layer 1 starts 4 + 2 after the
    last first-layer start and is 4 (pass 0) or 8 (pass 1) evaluations in 1 or 2 cycles;
    pass 0: 0..51, 57, result base 57 + 7 = 64; pass 1: 64..115, 121, 122, result 129."""
    model = _model(SbnnConfig())
    assert hwpath.schedule(model, 1).total_cycles() == 1722
    sched = hwpath.schedule(_arranged(model, 4, 1), 1)
    assert sched.result_cycles == (64, 129)
    assert sched.total_cycles() <= 0.1 * 1722
    # per macro: 0..54, 57..60, 64..118, 121..125 busy = 119 of 129 cycles
    assert sched.macro_busy() == (119,) * 4
    assert min(sched.macro_utilization()) >= 0.9


def _check_contract(model, budget):
    cfg = model.config
    sched = hwpath.schedule(model, budget)
    n, interval, lat = cfg.num_macros, cfg.interval, cfg.macro_latency
    evals = sched.evals
    starts = [e.cycle for e in evals]
    assert starts == sorted(starts)
    for m in range(n):
        mine = [e.cycle for e in evals if e.macro == m]
        assert all(b - a >= interval for a, b in zip(mine, mine[1:]))
        for c in mine:  # never more in flight than the pipeline holds
            assert sum(c - lat < d <= c for d in mine) <= math.ceil(lat / interval)
    # round-robin inside each (pass, layer)
    for key in {(e.pass_, e.layer) for e in evals}:
        group = [e for e in evals if (e.pass_, e.layer) == key]
        assert [e.macro for e in group] == [macro_of(j, n) for j in range(len(group))]
    # at most one column block ends per cycle: the last step of each block
    ends = {}
    for e in evals:
        ends[(e.pass_, e.layer, e.col_block)] = e.cycle + lat
    for r in sched.rethresholds:
        ends[(r.pass_, 0, r.col_block)] = r.cycle + 1
    assert len(set(ends.values())) == len(ends)
    return sched


@pytest.mark.parametrize("seed", range(12))
def test_random_arrangements_keep_the_contract(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(0, 3))
    layers = [int(rng.integers(4, 160))] + [int(rng.integers(2, 50))
                                             for _ in range(int(rng.integers(1, 4)))]
    lat = int(rng.integers(2, 7))
    cfg = SbnnConfig(layers=layers, num_supports=k, gain_bits=4, macro_latency=lat,
                     active_rows=int(rng.choice([8, 16, 64])),
                     macro_cols=int(rng.choice([8, 16, 32])))
    model = _model(cfg, keep=float(rng.choice([0.0, 0.4, 1.0])), seed=seed)
    base = [hwpath.schedule(model, b).total_cycles() for b in range(k + 1)]
    for n in (1, 2, 4, int(rng.integers(1, 9))):
        previous = None
        for interval in sorted({lat, 1, int(rng.integers(1, lat + 1))}, reverse=True):
            arranged = _arranged(model, n, interval)
            cycles = [_check_contract(arranged, b).total_cycles() for b in range(k + 1)]
            assert all(c <= b for c, b in zip(cycles, base))  # never slower than today
            if previous is not None:  # a shorter interval never costs cycles
                assert all(c <= p for c, p in zip(cycles, previous))
            previous = cycles
