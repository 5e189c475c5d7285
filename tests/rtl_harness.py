"""Amaranth-simulator harness for SimTop: drives prog/pixels, records probe transactions."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from sbnn.cosim.codec import Codec
from sbnn.rtl.interfaces import ProgOp
from sbnn.rtl.top import SimTop


def run_pysim(cfg, program, images, budgets, max_cycles=200_000, exit_margin=None,
              budget_via_stream=False):
    """Program the design, then run each (image, budget); returns [(trace, result)].

    The budget goes through the ``prog`` BUDGET register, or with ``budget_via_stream`` on
    the image's first pixel beat."""
    dut = SimTop(cfg)
    codec = Codec(cfg)
    parallel = cfg.num_macros > 1
    out: list[tuple[list[dict], dict]] = []

    async def bench(ctx):
        async def send(stream, words):
            for w in words:
                ctx.set(stream.payload.as_value(), w)
                ctx.set(stream.valid, 1)
                while not ctx.get(stream.ready):
                    await ctx.tick()
                await ctx.tick()
            ctx.set(stream.valid, 0)

        await send(dut.prog, [codec.prog(*p) for p in program])
        if exit_margin is not None:
            await send(dut.prog, [codec.prog(ProgOp.EXIT_MARGIN, 0, exit_margin)])
        for image, budget in zip(images, budgets):
            if budget_via_stream:
                beats = codec.pixel_beats(image, budget)
            else:
                await send(dut.prog, [codec.prog(ProgOp.BUDGET, 0, budget)])
                beats = codec.pixel_beats(image)
            trace: list[dict] = []
            for w in beats:
                ctx.set(dut.pixels.payload.as_value(), w)
                ctx.set(dut.pixels.valid, 1)
                while not ctx.get(dut.pixels.ready):
                    await ctx.tick()
                await ctx.tick()
            ctx.set(dut.pixels.valid, 0)
            cycle = 0  # compute start: the cycle after the last beat's handshake
            ctx.set(dut.result.ready, 1)
            pending = []
            pending_of = [[] for _ in range(cfg.num_macros)]  # per macro, oldest first
            for _ in range(max_cycles):
                if parallel:
                    _monitor_macros(ctx, dut, codec, cycle, trace, pending_of)
                    if ctx.get(dut.result.valid):
                        result = codec.result(ctx.get(dut.result.payload.as_value()))
                        await ctx.tick()
                        break
                    await ctx.tick()
                    cycle += 1
                    continue
                p = dut.probe
                if ctx.get(p.start):
                    pending.append({
                        "cycle": cycle, "layer": ctx.get(dut.probe_trace.layer),
                        "pass": ctx.get(dut.probe_trace.pass_),
                        "tile": ctx.get(p.group), "plane": ctx.get(dut.probe_trace.plane),
                        "gain": ctx.get(p.gain), "col_en": ctx.get(p.col_en),
                        "row_x": codec.row_x(ctx.get(p.row_x.as_value())),
                    })
                if ctx.get(p.done):
                    tx = pending.pop(0)
                    tx["adc"] = codec.adc(ctx.get(p.adc.as_value()))
                    trace.append(tx)
                if ctx.get(dut.result.valid):
                    result = codec.result(ctx.get(dut.result.payload.as_value()))
                    await ctx.tick()
                    break
                await ctx.tick()
                cycle += 1
            else:
                raise AssertionError("no result within max_cycles")
            ctx.set(dut.result.ready, 0)
            out.append((trace, result))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def _monitor_macros(ctx, dut, codec, cycle, trace, pending_of):
    """N > 1 macros: every macro's start this cycle (in macro order: the trace is in (start
    cycle, macro) order, with each transaction's ``macro`` and ``done`` cycle) and done (the
    codes of that macro's oldest evaluation)."""
    for j, p in enumerate(dut.probe):
        t = dut.probe_trace[j]
        if ctx.get(p.done):
            tx = pending_of[j].pop(0)
            tx["adc"] = codec.adc(ctx.get(p.adc.as_value()))
            tx["done"] = cycle
        if ctx.get(p.start):
            tx = {"cycle": cycle, "macro": j, "layer": ctx.get(t.layer),
                  "pass": ctx.get(t.pass_), "tile": ctx.get(p.group),
                  "plane": ctx.get(t.plane), "gain": ctx.get(p.gain),
                  "col_en": ctx.get(p.col_en),
                  "row_x": codec.row_x(ctx.get(p.row_x.as_value()))}
            pending_of[j].append(tx)
            trace.append(tx)


def random_images(cfg, rng, count):
    return [rng.integers(0, 256, cfg.layers[0], dtype=np.uint8) for _ in range(count)]
