"""A pipelined macro (``macro_interval`` < ``macro_latency``) in the RTL: the behavioral macro
accepts a start every cycle, and controller + macro follow the golden schedule cycle by
cycle (docs/architecture.md, "Parallel and pipelined macros"). Expected values come from the
golden model and the spec, never from the RTL."""

import numpy as np
import pytest
from amaranth.sim import Simulator
from rtl_harness import random_images, run_pysim
from test_rtl import SINGLE, TINY, TINY_K2, check_against_golden

from sbnn.config import SbnnConfig
from sbnn.cosim.codec import Codec
from sbnn.gen.image import build_image
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl.controller import Controller
from sbnn.rtl.macro import BehavioralMacro


def _with(cfg: SbnnConfig, **fields) -> SbnnConfig:
    return SbnnConfig(**{**cfg.model_dump(), **fields})


def test_pipelined_macro_takes_a_start_every_cycle():
    cfg = SbnnConfig(layers=(4, 2), active_rows=4, macro_cols=3, macro_rows=8,
                     num_supports=0, adc_bits=4, adc_steps=(2,), macro_latency=3, dac_bits=4,
                     macro_interval=1)
    dut = BehavioralMacro(cfg)
    codec = Codec(cfg)
    bits = [[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 1, 1]]  # group 0 and group 1 (inverted)
    inputs = [([3, -2, 5, 1], 3, 0), ([1, 1, -4, 2], 1, 1), ([-3, 0, 2, 2], 2, 0)]

    def expect(x, gain, group):
        out = []
        for col in range(3):
            s = gain * sum(x[r] * (1 if bits[r][col] ^ group else -1) for r in range(4))
            out.append(max(cfg.adc_min, min(cfg.adc_max, s // 2)))
        return tuple(out)

    seen = {}

    async def bench(ctx):
        bus = dut.bus
        for g in range(2):
            for r in range(4):
                ctx.set(bus.wr_en, 1)
                ctx.set(bus.wr_group, g)
                ctx.set(bus.wr_row, r)
                ctx.set(bus.wr_data, sum((b ^ g) << c for c, b in enumerate(bits[r])))
                await ctx.tick()
        ctx.set(bus.wr_en, 0)
        for cycle in range(8):
            if cycle < len(inputs):  # back-to-back starts in cycles 0, 1, 2
                x, gain, group = inputs[cycle]
                ctx.set(bus.start, 1)
                ctx.set(bus.group, group)
                ctx.set(bus.row_x.as_value(), sum((v & 31) << (5 * i) for i, v in enumerate(x)))
                ctx.set(bus.gain, gain)
                ctx.set(bus.col_en, 0b111)
                ctx.set(bus.adc_shift, 1)
            else:
                ctx.set(bus.start, 0)
            if ctx.get(bus.done):
                seen[cycle] = codec.adc(ctx.get(bus.adc.as_value()))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    lat = cfg.macro_latency
    assert seen == {lat + i: expect(*inputs[i]) for i in range(len(inputs))}


@pytest.mark.parametrize("cfg,interval", [(TINY, 1), (TINY, 2), (TINY_K2, 1), (SINGLE, 1)],
                         ids=["3layer-K1-I1", "3layer-K1-I2", "K2-lat2-I1", "1layer-I1"])
def test_pipelined_controller_matches_golden_cycle_by_cycle(cfg, interval):
    cfg = _with(cfg, macro_interval=interval)
    rng = np.random.default_rng(11)
    model = QuantizedModel.random(cfg, rng, mask_keep=0.5, per_pass=True)
    images = random_images(cfg, rng, 3)
    budgets = [cfg.num_supports, 0, min(1, cfg.num_supports)]
    out = run_pysim(cfg, build_image(model).program(), images, budgets)
    exits = check_against_golden(cfg, model, images, budgets, out)
    assert exits == budgets
    full = hwpath.schedule(model, cfg.num_supports)
    starts = [ev.cycle for ev in full.evals]
    assert min(b - a for a, b in zip(starts, starts[1:])) == interval  # really pipelined
    assert full.total_cycles(cfg.num_supports) < hwpath.schedule(
        _default_arrangement(model), cfg.num_supports).total_cycles(cfg.num_supports)


def _default_arrangement(model: QuantizedModel) -> QuantizedModel:
    cfg = _with(model.config, macro_interval=None)
    return QuantizedModel(cfg, model.planes, model.thresholds, model.support_mask)


def test_pipelined_rethresholds_and_confidence_exit_match_golden():
    """Every plane-1 column of some first-layer blocks masked: rethreshold steps between
    pipelined evaluations; an exit margin that lets some images stop after pass 0."""
    cfg = _with(TINY, macro_interval=1)
    rng = np.random.default_rng(5)
    model = QuantizedModel.random(cfg, rng, mask_keep=0.7, per_pass=True)
    mask = [m.copy() for m in model.support_mask]
    mask[0][0:cfg.neurons_per_tile, :] = False  # block 0 of layer 0: rethresholded
    mask[0][2 * cfg.neurons_per_tile:3 * cfg.neurons_per_tile, :] = False  # and block 2
    model = QuantizedModel(cfg, model.planes, model.thresholds, tuple(mask))
    sched = hwpath.schedule(model, 1)
    assert len(sched.rethresholds) >= 2
    images = random_images(cfg, rng, 6)
    gold = hwpath.run_hw(model, np.stack(images), 1)
    first = hwpath.margins(gold.pass_logits[0])
    margin = int(np.median(first)) + 1
    budgets = [1] * len(images)
    out = run_pysim(cfg, build_image(model).program(), images, budgets, exit_margin=margin)
    exits = check_against_golden(cfg, model, images, budgets, out, exit_margin=margin)
    assert 1 in exits


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_rtl_accepts_several_macros():
    """N > 1 is built now (rtl/parallel.py, tests/test_rtl_parallel.py): one macro bus each."""
    ctrl = Controller(_with(TINY, num_macros=2, macro_interval=1))
    assert len(ctrl.macro) == 2 and len(ctrl.trace) == 2
    assert not hasattr(Controller(_with(TINY, macro_interval=1)).macro, "__len__")


@pytest.mark.cosim
def test_fast_cosim_pipelined_macro(tmp_path, verilator):
    """The generated Verilog with the SystemVerilog pipelined macro (interval 1) on
    Verilator, budgets 1 and 0, an exit margin and random controls, against the golden."""
    from sbnn.cosim.fast import run_fast
    from sbnn.cosim.runner import CosimJob

    cfg = _with(TINY, macro_interval=1)
    model = QuantizedModel.random(cfg, np.random.default_rng(3), mask_keep=0.5, per_pass=True)
    images = np.random.default_rng(4).integers(0, 256, (40, cfg.layers[0]), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", images=images, labels=np.zeros(40, dtype=np.int64))
    job = CosimJob(cfg, model.save(tmp_path / "m.npz"), tmp_path / "s.npz", count=40,
                   budgets=(1, 0), exit_margin=5, random_seed=11)
    rep = run_fast(job, tmp_path / "build", workers=1)
    assert rep.mismatches == 0, rep.first_mismatch
    assert rep.results_checked == 120 and rep.transactions_checked > 0


@pytest.mark.parametrize("macros", [1, 3])
def test_pipelined_sim_top_lints_clean_with_wall(tmp_path, verilator, macros):
    """The pipelined SystemVerilog macro keeps no parameter of the one-evaluation macro's
    counter (Verilator -Wall: UNUSEDPARAM), with one macro or several."""
    from sbnn.gen.lint import lint
    from sbnn.gen.verilog import SIM_TOP, emit_all

    cfg = TINY.replace(macro_latency=3, macro_interval=1, num_macros=macros)
    files = emit_all(cfg, tmp_path)
    result = lint([files["controller"], files["sim_top"]], SIM_TOP, wall=True)
    assert result.returncode == 0, result.stderr
