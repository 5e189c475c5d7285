"""cocotb testbench: real MNIST images through the generated Verilog, checked cycle by cycle.

Structure (after cocotb's matrix_multiplier example): a driver for the prog and pixel streams,
a monitor on the macro probe ports and the result stream, the golden model (golden/hwpath.py)
as reference, and an in-order scoreboard. One coroutine does all of it on the falling clock
edge: it samples what the design shows in that cycle and drives what the next rising edge
takes, so Python wakes once per cycle.

The job (config, model, images, budgets, report path) comes from the JSON file named by
``SBNN_COSIM_JOB``; cosim/runner.py writes it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from sbnn.config import SbnnConfig
from sbnn.cosim.codec import Codec
from sbnn.cosim.controls import random_controls
from sbnn.cosim.scoreboard import Scoreboard
from sbnn.gen.image import build_image
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl.interfaces import ProgOp, Sizes


class Bench:
    def __init__(self, dut, cfg: SbnnConfig):
        self.dut = dut
        self.cfg = cfg
        self.codec = Codec(cfg)
        self.fall = FallingEdge(dut.clk)
        self.cycle = 0  # falling edges since the start of the test
        p = {name: getattr(dut, f"probe__{name}") for name in
             ("start", "group", "row_x", "gain", "col_en", "done", "adc")}
        self.p = p
        self.trace_port = dut.probe_trace
        sz = Sizes(cfg)
        self.layer_bits, self.plane_bits = sz.layer_bits, sz.plane_bits

    async def tick(self) -> None:
        await self.fall
        self.cycle += 1

    async def reset(self) -> None:
        dut = self.dut
        dut.rst.value = 1
        for name in ("prog__valid", "pixels__valid", "result__ready"):
            getattr(dut, name).value = 0
        for _ in range(3):
            await self.tick()
        dut.rst.value = 0
        await self.tick()

    async def program(self, ops: list[tuple[ProgOp, int, int]], limit: int = 10_000) -> None:
        dut = self.dut
        for op in ops:
            dut.prog__payload.value = self.codec.prog(*op)
            dut.prog__valid.value = 1
            waited = 0
            while not dut.prog__ready.value:
                waited += 1
                if waited > limit:
                    raise AssertionError(f"prog.ready stayed low for {limit} cycles while "
                                         f"offering {op[0].name} (addr {op[1]})")
                await self.tick()
            await self.tick()  # accepted at the rising edge in between
        dut.prog__valid.value = 0

    async def infer(self, beats: list[int], max_cycles: int) -> tuple[list[dict], dict, int]:
        """Send one image; return the macro transactions, the result, and wall cycles."""
        dut, codec, p = self.dut, self.codec, self.p
        layer_bits, plane_bits = self.layer_bits, self.plane_bits
        trace: list[dict] = []
        pending: list[dict] = []
        beat = 0
        compute_cycle = None
        result = None
        dut.result__ready.value = 1
        for _ in range(max_cycles):
            # Values written now are what the coming rising edge takes.
            if compute_cycle is None:
                dut.pixels__valid.value = 1
                dut.pixels__payload.value = beats[beat]
                if dut.pixels__ready.value:
                    beat += 1
                    if beat == len(beats):
                        compute_cycle = -1  # compute starts in the next cycle
            else:
                if compute_cycle == 0:
                    dut.pixels__valid.value = 0
                if p["start"].value:
                    ctx = int(self.trace_port.value)
                    pending.append({
                        "cycle": compute_cycle,
                        "layer": ctx & ((1 << layer_bits) - 1),
                        "plane": (ctx >> layer_bits) & ((1 << plane_bits) - 1),
                        "pass": (ctx >> (layer_bits + plane_bits)) & ((1 << plane_bits) - 1),
                        "tile": int(p["group"].value), "gain": int(p["gain"].value),
                        "col_en": int(p["col_en"].value),
                        "row_x": codec.row_x(int(p["row_x"].value)),
                    })
                if p["done"].value:
                    tx = pending.pop(0) if pending else {"cycle": compute_cycle}
                    tx["adc"] = codec.adc(int(p["adc"].value))
                    trace.append(tx)
                if dut.result__valid.value:
                    result = codec.result(int(dut.result__payload.value))
                    await self.tick()  # handshake completes at this rising edge
                    dut.result__ready.value = 0
                    break
            await self.tick()
            if compute_cycle is not None:
                compute_cycle += 1
        if result is None:
            last = {k: trace[-1][k] for k in ("cycle", "layer", "tile", "plane")} \
                if trace else None
            raise AssertionError(f"no result within {max_cycles} cycles: {len(trace)} macro "
                                 f"transactions seen, last {last}, {len(pending)} started "
                                 f"without done")
        return trace, result, compute_cycle


def _run_summary(name, budget, results, labels, cycles0, bench, sb_before, sb):
    n = len(results)
    correct = sum(int(r["cls"] == labels[i]) for i, r in enumerate(results))
    return {"run": name, "budget": budget, "images": n,
            "agree": n - (len(sb.mismatches) - sb_before),
            "rtl_correct": correct, "rtl_accuracy_pct": 100.0 * correct / max(1, n),
            "cycles_per_inference": sum(r["cycles"] for r in results) / max(1, n),
            "exit_planes": [int(r["exit_plane"]) for r in results],
            "macro_evals": sum(r["macro_evals"] for r in results),
            "sim_cycles": bench.cycle - cycles0}


@cocotb.test()
async def inference_regression(dut):
    """Program the trained image; run N MNIST images per latency budget, then (optionally)
    images with random per-inference budgets, exit margins and support masks; compare all."""
    job = json.loads(Path(os.environ["SBNN_COSIM_JOB"]).read_text())
    cfg = SbnnConfig.from_dict(json.loads(Path(job["config"]).read_text()))
    model = QuantizedModel.load(job["model"], cfg)
    golden_model = QuantizedModel.load(job["golden_model"], cfg) if job.get("golden_model") \
        else model
    with np.load(job["images"]) as data:
        images = data["images"][: job["count"]]
        labels = data["labels"][: job["count"]]
    flat = images.reshape(len(images), -1)
    stop = job.get("stop_on_mismatch", True)
    bench = Bench(dut, cfg)
    clock_ns = 1000.0 / cfg.clock_mhz
    cocotb.start_soon(Clock(dut.clk, round(clock_ns, 3), unit="ns").start())
    await bench.reset()
    t0 = time.time()
    await bench.program(build_image(model).program())
    margin = job.get("exit_margin")
    if margin is not None:
        await bench.program([(ProgOp.EXIT_MARGIN, 0, margin)])
    sb = Scoreboard()
    runs = []

    async def one(i, gold_model, sched, golden, k, beats):
        limit = sched.total_cycles() + cfg.input_beats + 64
        trace, result, _ = await bench.infer(beats, limit)
        expected = hwpath.expected_trace(gold_model, sched, golden, k)
        sb.check_image(i, expected, trace,
                       hwpath.expected_result(sched, golden, k, expected), result)
        return result

    for budget in job["budgets"]:
        await bench.program([(ProgOp.BUDGET, 0, budget)])
        sched = hwpath.schedule(golden_model, budget)
        golden = hwpath.run_hw(golden_model, flat, budget, margin, keep_adc=True)
        before, cycles0, results = len(sb.mismatches), bench.cycle, []
        for i, image in enumerate(images):
            results.append(await one(i, golden_model, sched, golden, i,
                                     bench.codec.pixel_beats(image)))
            if sb.mismatches and stop:
                break
        runs.append(_run_summary("budget", budget, results, labels, cycles0, bench, before,
                                 sb))
        if sb.mismatches and stop:
            break

    if job.get("random_seed") is not None and not (sb.mismatches and stop):
        # Runtime controls changed between inferences, no regeneration: per-image budget on
        # the pixel stream, exit margin and support mask through prog.
        before, cycles0, results = len(sb.mismatches), bench.cycle, []
        for ctl in random_controls(golden_model, len(images), job["random_seed"]):
            i, current = ctl.image, ctl.model
            await bench.program(list(ctl.prog))
            sched = hwpath.schedule(current, ctl.budget)
            golden = hwpath.run_hw(current, flat[i:i + 1], ctl.budget, ctl.margin,
                                   keep_adc=True)
            results.append(await one(i, current, sched, golden, 0,
                                     bench.codec.pixel_beats(images[i], ctl.budget)))
            if sb.mismatches and stop:
                break
        runs.append(_run_summary("random", None, results, labels, cycles0, bench, before, sb))

    report = {"runs": runs, "transactions_checked": sb.transactions,
              "results_checked": sb.results, "mismatches": len(sb.mismatches),
              "first_mismatch": str(sb.first) if sb.first else None,
              "sim_wall_s": round(time.time() - t0, 2), "total_sim_cycles": bench.cycle}
    Path(job["report"]).write_text(json.dumps(report, indent=2) + "\n")
    assert sb.first is None, f"RTL differs from golden: {sb.first}"
