"""Amaranth-simulator tests of the behavioral macro and of controller + macro vs golden."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from rtl_harness import random_images, run_pysim

from sbnn.config import SbnnConfig
from sbnn.cosim.codec import Codec
from sbnn.cosim.scoreboard import Scoreboard
from sbnn.gen.image import build_image
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl import controller as controller_module
from sbnn.rtl.controller import Controller
from sbnn.rtl.interfaces import Sizes, macro_signature
from sbnn.rtl.macro import BehavioralMacro
from sbnn.rtl.stores import ThresholdStore

TINY = SbnnConfig(layers=(12, 7, 5, 6), active_rows=4, macro_cols=4, macro_rows=128,
                  num_supports=1, input_lanes=5, adc_bits=5, macro_latency=3,
                  adc_steps=(8, 1, 2))
TINY_K2 = SbnnConfig(layers=(9, 6, 3), active_rows=3, macro_cols=6, macro_rows=60,
                     num_supports=2, gain_bits=3, input_lanes=4, adc_bits=6,
                     macro_latency=2, dac_bits=3)


def test_ports_follow_config():
    ctrl = Controller(TINY)
    ctrl._MustUse__silence = True  # only the signature is inspected
    assert ctrl.config is TINY
    assert set(ctrl.signature.members) == {"prog", "pixels", "result", "macro", "trace"}
    sig = macro_signature(TINY)
    assert sig.members["row_x"].shape.length == TINY.active_rows
    assert sig.members["adc"].shape.length == TINY.macro_cols
    assert Sizes(TINY).group_bits >= (TINY.wordline_groups - 1).bit_length()


def test_macro_product_sum_adc_and_latency():
    cfg = SbnnConfig(layers=(4, 2), active_rows=4, macro_cols=3, macro_rows=8,
                     num_supports=0, adc_bits=4, adc_steps=(2,), macro_latency=3, dac_bits=4)
    dut = BehavioralMacro(cfg)
    codec = Codec(cfg)
    bits = [[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1]]  # row r, column c; 1 = +1
    x = [3, -2, 5, 1]
    gain = 3

    def expect(col):
        s = gain * sum(x[r] * (1 if bits[r][col] else -1) for r in range(4))
        return max(cfg.adc_min, min(cfg.adc_max, s // 2))

    seen = {}

    async def bench(ctx):
        bus = dut.bus
        for r in range(4):  # program word-line group 1
            ctx.set(bus.wr_en, 1)
            ctx.set(bus.wr_group, 1)
            ctx.set(bus.wr_row, r)
            ctx.set(bus.wr_data, sum(b << c for c, b in enumerate(bits[r])))
            await ctx.tick()
        ctx.set(bus.wr_en, 0)
        ctx.set(bus.start, 1)
        ctx.set(bus.group, 1)
        ctx.set(bus.row_x.as_value(), sum((v & 31) << (5 * i) for i, v in enumerate(x)))
        ctx.set(bus.gain, gain)
        ctx.set(bus.col_en, 0b011)
        ctx.set(bus.adc_shift, 1)
        for cycle in range(6):
            if ctx.get(bus.done):
                seen[cycle] = codec.adc(ctx.get(bus.adc.as_value()))
            await ctx.tick()
            ctx.set(bus.start, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert list(seen) == [cfg.macro_latency]  # done exactly L cycles after start
    assert seen[cfg.macro_latency] == (expect(0), expect(1), 0)  # column 2 disabled


SINGLE = SbnnConfig(layers=(10, 5), active_rows=4, macro_cols=9, macro_rows=32,
                    num_supports=2, gain_bits=3, input_lanes=3, adc_bits=5, macro_latency=2)


def check_against_golden(cfg, model, images, budgets, out, exit_margin=None):
    sb = Scoreboard()
    exits = []
    for i, (image, budget) in enumerate(zip(images, budgets)):
        sched = hwpath.schedule(model, budget)
        gold = hwpath.run_hw(model, image[None], budget, exit_margin, keep_adc=True)
        trace = hwpath.expected_trace(model, sched, gold, 0)
        ok = sb.check_image(i, trace, out[i][0],
                            hwpath.expected_result(sched, gold, 0, trace), out[i][1])
        assert ok, str(sb.first)
        exits.append(out[i][1]["exit_plane"])
    assert sb.transactions > 0 and sb.results == len(images)
    return exits


@pytest.mark.parametrize("cfg", [TINY, TINY_K2, SINGLE], ids=["3layer-K1", "K2-lat2", "1layer"])
@pytest.mark.parametrize("via_stream", [False, True], ids=["prog-budget", "stream-budget"])
def test_controller_and_macro_match_golden_cycle_by_cycle(cfg, via_stream):
    rng = np.random.default_rng(11)
    model = QuantizedModel.random(cfg, rng, mask_keep=0.5, per_pass=True)
    images = random_images(cfg, rng, 4)
    budgets = [cfg.num_supports, 0, cfg.num_supports, min(1, cfg.num_supports)]
    out = run_pysim(cfg, build_image(model).program(), images, budgets,
                    budget_via_stream=via_stream)
    exits = check_against_golden(cfg, model, images, budgets, out)
    assert exits == budgets  # no exit margin set: every pass up to the budget runs


@pytest.mark.parametrize("cfg", [TINY, TINY_K2], ids=["3layer-K1", "K2-lat2"])
def test_confidence_exit_matches_golden(cfg):
    rng = np.random.default_rng(22)
    model = QuantizedModel.random(cfg, rng, mask_keep=0.7, per_pass=True)
    images = random_images(cfg, rng, 8)
    budgets = [cfg.num_supports] * len(images)
    gold = hwpath.run_hw(model, np.stack(images), cfg.num_supports)
    # The largest first-pass margin: those images exit after pass 0, the others go on.
    first = hwpath.margins(gold.pass_logits[0])
    assert first.min() < first.max()
    margin = int(first.max())
    out = run_pysim(cfg, build_image(model).program(), images, budgets, exit_margin=margin)
    exits = check_against_golden(cfg, model, images, budgets, out, exit_margin=margin)
    assert 0 in exits and max(exits) == cfg.num_supports


def test_scoreboard_reports_first_mismatch_with_cycle_and_field():
    rng = np.random.default_rng(2)
    model = QuantizedModel.random(TINY, rng)
    image = random_images(TINY, rng, 1)
    out = run_pysim(TINY, build_image(model).program(), image, [1])
    wrong = QuantizedModel(TINY, model.planes,
                           (model.thresholds[0] + 200,) + model.thresholds[1:],
                           model.support_mask)  # every layer-0 neuron now outputs -1
    sched = hwpath.schedule(wrong, 1)
    gold = hwpath.run_hw(wrong, image[0][None], 1, keep_adc=True)
    sb = Scoreboard()
    trace = hwpath.expected_trace(wrong, sched, gold, 0)
    assert not sb.check_image(0, trace, out[0][0],
                              hwpath.expected_result(sched, gold, 0, trace), out[0][1])
    msg = str(sb.first)
    assert "row_x" in msg and "at cycle" in msg and "expected" in msg


def test_budget_register_clamps_to_k():
    rng = np.random.default_rng(4)
    model = QuantizedModel.random(TINY_K2, rng, mask_keep=1.0)
    image = random_images(TINY_K2, rng, 1)
    # 4 = 0b100 would read as 0 if truncated to the 2-bit register; it must clamp to K=2.
    out = run_pysim(TINY_K2, build_image(model).program(), image, [4])
    assert len(out[0][0]) == len(hwpath.schedule(model, TINY_K2.num_supports))
    assert len(out[0][0]) > len(hwpath.schedule(model, 0))


def matches_golden(cfg, model, images, budgets, out) -> bool:
    """Whether every transaction and result of ``out`` is what golden/hwpath.py expects of
    ``model`` (the check of :func:`check_against_golden`, without asserting)."""
    sb = Scoreboard()
    for i, (image, budget) in enumerate(zip(images, budgets)):
        sched = hwpath.schedule(model, budget)
        gold = hwpath.run_hw(model, image[None], budget, keep_adc=True)
        trace = hwpath.expected_trace(model, sched, gold, 0)
        if not sb.check_image(i, trace, out[i][0],
                              hwpath.expected_result(sched, gold, 0, trace), out[i][1]):
            return False
    return True


def one_row(model: QuantizedModel, layers=None) -> QuantizedModel:
    """``model`` with pass 0's thresholds in every pass (of ``layers``; default all)."""
    layers = range(model.config.num_layers) if layers is None else layers
    thr = tuple(np.broadcast_to(t[0], t.shape).copy() if i in layers else t
                for i, t in enumerate(model.thresholds))
    return QuantizedModel(model.config, model.planes, thr, model.support_mask)


class PassZeroThresholdStore(ThresholdStore):
    """A deliberately broken threshold store (mutation): written per pass, but read at
    pass 0's word whatever the pass, as the store was before it had a pass dimension."""

    def elaborate(self, platform):
        self._memory._MustUse__silence = True  # the inner store's memory is used instead
        m = Module()
        m.submodules.inner = inner = ThresholdStore(self._cfg)
        wiring.connect(m, wiring.flipped(self.write), inner.write)
        m.d.comb += [inner.read.addr.col_block.eq(self.read.addr.col_block),
                     self.read.data.eq(inner.read.data)]  # inner.read.addr.pass_ stays 0
        return m


@pytest.mark.parametrize("cfg", [TINY, TINY_K2, SINGLE], ids=["3layer-K1", "K2-lat2", "1layer"])
def test_each_pass_uses_its_own_thresholds_and_pass_zero_rows_are_caught(cfg, monkeypatch):
    """Pass p reads row p: the RTL matches golden/hwpath.py on a model whose passes have
    different thresholds, and fails it both ways round when pass 0's row is used for
    every pass (in the expected values, or in the RTL: a broken store)."""
    rng = np.random.default_rng(31)
    model = QuantizedModel.random(cfg, rng, mask_keep=0.7, per_pass=True)
    images = random_images(cfg, rng, 3)
    budgets = [cfg.num_supports] * 3
    program = build_image(model).program()
    out = run_pysim(cfg, program, images, budgets)
    assert matches_golden(cfg, model, images, budgets, out)
    assert not matches_golden(cfg, one_row(model), images, budgets, out)
    monkeypatch.setattr(controller_module, "ThresholdStore", PassZeroThresholdStore)
    broken = run_pysim(cfg, program, images, budgets)
    assert not matches_golden(cfg, model, images, budgets, broken)
    # ... which is what a one-row model predicts: the mutation is the one named
    assert matches_golden(cfg, one_row(model), images, budgets, broken)


@pytest.mark.parametrize("cfg", [TINY, TINY_K2, SINGLE], ids=["3layer-K1", "K2-lat2", "1layer"])
def test_first_layer_blocks_not_evaluated_are_rethresholded(cfg):
    """Every first-layer support column masked (the supports-off control): passes > 0
    evaluate nothing there, yet the first layer's outputs of pass p are made with pass p's
    thresholds (one rethreshold cycle per block, no macro evaluation), so pass p answers
    as a one-shot budget-p model. Keeping pass 0's outputs there instead is caught."""
    rng = np.random.default_rng(41)
    model = QuantizedModel.random(cfg, rng, mask_keep=0.6, per_pass=True)
    masks = list(model.support_mask)
    masks[0] = np.zeros_like(masks[0])
    model = model.with_mask(tuple(masks))
    sched = hwpath.schedule(model, cfg.num_supports)
    assert len(sched.rethresholds) == cfg.num_supports * cfg.col_blocks(0)
    assert not [e for e in sched.evals if e.layer == 0 and e.pass_ > 0]
    images = random_images(cfg, rng, 3)
    budgets = [cfg.num_supports, min(1, cfg.num_supports), cfg.num_supports]
    out = run_pysim(cfg, build_image(model).program(), images, budgets)
    check_against_golden(cfg, model, images, budgets, out)
    assert [o[1]["cycles"] for o in out] == [sched.total_cycles(b) for b in budgets]
    assert not matches_golden(cfg, one_row(model, layers=[0]), images, budgets, out)
