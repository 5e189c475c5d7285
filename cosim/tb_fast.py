"""cocotb test for the fast harness: run the stimulus, then check every log record in bulk.

The harness (cosim/harness.py) drives the streams from a command file and logs every macro
start and done, every accepted image and every result with its cycle. Python wakes twice:
once to start the clock, once when ``done`` rises. Then cosim/bulk.py rebuilds the golden
transactions from the model (never from the RTL) and compares every field of every record.

The plan (which images ran under which programmed state, in what order) comes from the JSON
file named by ``SBNN_COSIM_JOB``; cosim/fast.py writes it beside the command file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge
from sbnn.cosim import bulk
from sbnn.cosim.equivalence import random_model
from sbnn.golden.qmodel import QuantizedModel

from sbnn.config import SbnnConfig


@cocotb.test()
async def fast_regression(dut):
    """Run the command file through the harness; compare all records with the golden model."""
    plan = json.loads(Path(os.environ["SBNN_COSIM_JOB"]).read_text())
    cfg = SbnnConfig.from_dict(json.loads(Path(plan["config"]).read_text()))
    t0 = time.time()
    if not plan.get("hdl_clock"):
        cocotb.start_soon(Clock(dut.clk, round(1000.0 / cfg.clock_mhz, 3), unit="ns",
                                impl="gpi").start())
    await RisingEdge(dut.done)
    sim_s = time.time() - t0
    failed = bool(dut.failed.value)

    t1 = time.time()
    source = plan["golden_model"] or plan["model"]  # None: every block draws its own model
    model = QuantizedModel.load(source, cfg) if source else None
    masks = np.load(plan["masks"]) if plan.get("masks") else None
    with np.load(plan["images"]) as data:
        flat = data["images"].reshape(len(data["images"]), -1)
        labels = data["labels"]
    blocks, runs = [], []
    for blk in plan["blocks"]:
        runs.extend([(blk["run"], blk["budget"])] * len(blk["images"]))
        current = model
        if blk.get("model_seed") is not None:
            current = random_model(cfg, blk["model_seed"])
        if blk["mask"] is not None:
            current = model.with_mask(tuple(masks[f"{blk['mask']}_{i}"]
                                            for i in range(cfg.num_layers)))
        idx = np.asarray(blk["images"], dtype=np.int64)
        blocks.append(bulk.expected_block(current, flat[idx], blk["budget"], blk["margin"],
                                          idx))
    expected = bulk.concat(blocks)
    log = bulk.read_logs(cfg, plan["log"])
    check = bulk.compare(cfg, log, expected)
    report = {
        "images": check.images, "transactions_checked": check.transactions,
        "results_checked": check.results, "mismatches": check.mismatches,
        "first_mismatch": str(check.first) if check.first else None,
        "harness_failed": failed,
        "sim_cycles": int(log.result_cycle[-1]) if len(log.result_cycle) else 0,
        "sim_wall_s": round(sim_s, 3), "check_wall_s": round(time.time() - t1, 3),
        "per_image": [{"image": int(i), "run": run, "budget": budget, "ok": not bool(bad),
                       "label": int(labels[i]), "cls": int(r["cls"]),
                       "cycles": int(r["cycles"]), "exit_plane": int(r["exit_plane"])}
                      for r, i, (run, budget), bad in zip(check.result_list, expected.images,
                                                          runs, check.bad)],
    }
    Path(plan["report"]).write_text(json.dumps(report) + "\n")
    assert not failed, "harness gave up waiting (see sim.log)"
    assert check.first is None, f"RTL differs from golden: {check.first}"
