"""cocotb testbench: the controller with a *varied* behavioral macro, checked cycle by cycle.

Same driver, monitor and in-order scoreboard as cosim/tb_inference.py; the reference is the
golden hardware-exact path with the same drawn mismatch (``hwpath.run_hw(...,
variation=IntegerMacro(drawn))``), so every ADC code in the expected trace is the varied
one. The drawn tables come from the ``mismatch.npz`` written beside the varied Verilog by
cosim/variability_runner.py (the job file names it).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock

from sbnn.config import SbnnConfig
from sbnn.cosim.controls import random_controls
from sbnn.cosim.scoreboard import Scoreboard
from sbnn.cosim.tb_inference import Bench
from sbnn.gen.image import build_image
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.golden.variability import DrawnVariation, IntegerMacro
from sbnn.rtl.interfaces import ProgOp


@cocotb.test()
async def variability_regression(dut):
    """Program the image; run N images per budget (and optionally random runtime controls)
    against the varied golden model; also count codes that differ from the ideal macro's."""
    job = json.loads(Path(os.environ["SBNN_COSIM_JOB"]).read_text())
    cfg = SbnnConfig.from_dict(json.loads(Path(job["config"]).read_text()))
    model = QuantizedModel.load(job["model"], cfg)
    drawn = DrawnVariation.load(job["mismatch"])
    assert drawn.config == cfg, "mismatch tables drawn for another config"
    varied = IntegerMacro(drawn)
    with np.load(job["images"]) as data:
        images = data["images"][: job["count"]]
        labels = data["labels"][: job["count"]]
    flat = images.reshape(len(images), -1)
    stop = job.get("stop_on_mismatch", True)
    bench = Bench(dut, cfg)
    cocotb.start_soon(Clock(dut.clk, round(1000.0 / cfg.clock_mhz, 3), unit="ns").start())
    await bench.reset()
    t0 = time.time()
    await bench.program(build_image(model).program())
    margin = job.get("exit_margin")
    if margin is not None:
        await bench.program([(ProgOp.EXIT_MARGIN, 0, margin)])
    sb = Scoreboard()
    runs = []
    codes = {"checked": 0, "differ_from_ideal": 0}

    async def one(i, current, budget, k, golden, ideal, beats):
        sched = hwpath.schedule(current, budget)
        trace, result, _ = await bench.infer(beats, sched.total_cycles() + cfg.input_beats + 64)
        expected = hwpath.expected_trace(current, sched, golden, k)
        sb.check_image(i, expected, trace, hwpath.expected_result(sched, golden, k, expected),
                       result)
        # How much the variation moved the codes (proves the test is not the ideal one).
        nominal = hwpath.expected_trace(current, hwpath.schedule(current, budget), ideal, k)
        for e, n in zip(expected, nominal):
            if e["row_x"] == n["row_x"]:
                cols = [c for c in range(cfg.macro_cols) if e["col_en"] >> c & 1]
                codes["checked"] += len(cols)
                codes["differ_from_ideal"] += sum(e["adc"][c] != n["adc"][c] for c in cols)
        return result

    def summary(name, budget, results, cycles0, before):
        n = len(results)
        return {"run": name, "budget": budget, "images": n,
                "agree": n - (len(sb.mismatches) - before),
                "rtl_correct": sum(int(r["cls"] == labels[i]) for i, r in enumerate(results)),
                "exit_planes": [int(r["exit_plane"]) for r in results],
                "sim_cycles": bench.cycle - cycles0}

    for budget in job["budgets"]:
        await bench.program([(ProgOp.BUDGET, 0, budget)])
        golden = hwpath.run_hw(model, flat, budget, margin, keep_adc=True, variation=varied)
        ideal = hwpath.run_hw(model, flat, budget, margin, keep_adc=True)
        before, cycles0, results = len(sb.mismatches), bench.cycle, []
        for i, image in enumerate(images):
            results.append(await one(i, model, budget, i, golden, ideal,
                                     bench.codec.pixel_beats(image)))
            if sb.mismatches and stop:
                break
        runs.append(summary("budget", budget, results, cycles0, before))
        if sb.mismatches and stop:
            break

    if job.get("random_seed") is not None and not (sb.mismatches and stop):
        # Masks change between images: a masked column must read 0 whatever its offset.
        before, cycles0, results = len(sb.mismatches), bench.cycle, []
        for ctl in random_controls(model, len(images), job["random_seed"]):
            i, current, budget = ctl.image, ctl.model, ctl.budget
            await bench.program(list(ctl.prog))
            golden = hwpath.run_hw(current, flat[i:i + 1], budget, ctl.margin, keep_adc=True,
                                   variation=varied)
            ideal = hwpath.run_hw(current, flat[i:i + 1], budget, ctl.margin, keep_adc=True)
            results.append(await one(i, current, budget, 0, golden, ideal,
                                     bench.codec.pixel_beats(images[i], budget)))
            if sb.mismatches and stop:
                break
        runs.append(summary("random", None, results, cycles0, before))

    report = {"runs": runs, "transactions_checked": sb.transactions,
              "results_checked": sb.results, "mismatches": len(sb.mismatches),
              "first_mismatch": str(sb.first) if sb.first else None,
              "adc_codes_compared_with_ideal": codes["checked"],
              "adc_codes_moved_by_variation": codes["differ_from_ideal"],
              "variation": drawn.variation.to_dict(),
              "sim_wall_s": round(time.time() - t0, 2), "total_sim_cycles": bench.cycle}
    Path(job["report"]).write_text(json.dumps(report, indent=2) + "\n")
    assert sb.first is None, f"RTL differs from golden: {sb.first}"
