"""cocotb test for the fast harness: run the stimulus, then check every image in bulk.

The harness (cosim/harness.py) drives the streams from a command file and folds every macro
start and done into per-image signatures (cosim/digest.py), written with each result.
Python wakes twice: once to start the clock, once when ``done`` rises. Then the golden
signatures and results are computed from the model (never from the RTL) and compared; with
``full`` in the plan the harness also logs every transaction and cosim/bulk.py compares
every field of every record (used to localize a mismatch).

The plan (which images ran under which programmed state, in what order) comes from the JSON
file named by ``SBNN_COSIM_JOB``; cosim/fast.py writes it beside the command file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from sbnn.config import SbnnConfig
from sbnn.cosim import bulk, digest
from sbnn.cosim.equivalence import random_model
from sbnn.cosim.job_file import job_config, read_job
from sbnn.cosim.report import ImageOutcome, WorkerReport
from sbnn.golden.qmodel import QuantizedModel


def _block_model(blk: dict, cfg: SbnnConfig, model, masks):
    if blk.get("model_seed") is not None:
        return random_model(cfg, blk["model_seed"])
    if blk["mask"] is not None:
        return model.with_mask(tuple(masks[f"{blk['mask']}_{i}"]
                                     for i in range(cfg.num_layers)))
    return model


@dataclass
class Checked:
    """What a check of the worker's images found: the report's check fields, each image's
    RTL result (None where none came), which images differ, and the cycles simulated up to
    the last result (from the log the check read)."""

    fields: dict
    results: list
    bad: np.ndarray
    sim_cycles: int


def _check_full(cfg, plan, blocks, flat) -> Checked:
    """Every field of every transaction (cosim/bulk.py)."""
    expected = bulk.concat([bulk.expected_block(m, flat[idx], b["budget"], b["margin"], idx)
                            for b, m, idx in blocks])
    log = bulk.read_logs(cfg, plan["log"])
    check = bulk.compare(cfg, log, expected)
    fields = {"images": check.images, "transactions_checked": check.transactions,
              "results_checked": check.results, "mismatches": check.mismatches,
              "first_mismatch": str(check.first) if check.first else None}
    last = int(log.result_cycle[-1]) if len(log.result_cycle) else 0
    return Checked(fields, check.result_list, check.bad, last)


def _check_digests(cfg, plan, blocks, flat) -> Checked:
    expected = digest.ExpectedDigests.concat(
        [digest.expected_block_cached(m, flat[idx], b["budget"], b["margin"],
                                      plan.get("golden_cache")) for b, m, idx in blocks])
    log = digest.read_log(cfg, plan["log"])
    check = digest.compare(log, expected)
    fields = {"images": check.images, "transactions_checked": check.transactions,
              "results_checked": check.results, "mismatches": int(check.bad.sum()),
              "first_mismatch": check.first}
    results = log.results[:check.results] + [None] * (check.images - check.results)
    last = int(log.base[-1]) + int(log.result_cycle[-1]) if len(log.base) else 0
    return Checked(fields, results, check.bad, last)


@cocotb.test()
async def fast_regression(dut):
    """Run the command file through the harness; compare every image with the golden model."""
    plan = read_job()
    cfg = job_config(plan)
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
        if not blk["images"]:
            continue  # programming only (a localization rerun replays earlier blocks' ops)
        runs.extend([(blk["run"], blk["budget"], blk["index"])] * len(blk["images"]))
        blocks.append((blk, _block_model(blk, cfg, model, masks),
                       np.asarray(blk["images"], dtype=np.int64)))
    check = _check_full if plan.get("full") else _check_digests
    checked = check(cfg, plan, blocks, flat)
    images = np.concatenate([idx for _, _, idx in blocks]) if blocks else np.zeros(0, int)
    per_image = [ImageOutcome(int(i), run, budget, block, not bool(b), int(labels[i]),
                              int(r["cls"]) if r else -1, int(r["cycles"]) if r else -1,
                              int(r["exit_plane"]) if r else -1)
                 for r, i, (run, budget, block), b in zip(checked.results, images, runs,
                                                          checked.bad)]
    report = WorkerReport(**checked.fields, harness_failed=failed,
                          sim_cycles=checked.sim_cycles, sim_wall_s=round(sim_s, 3),
                          check_wall_s=round(time.time() - t1, 3), per_image=per_image)
    report.write(plan["report"], indent=None)
    assert not failed, "harness gave up waiting (see sim.log)"
    assert report.first_mismatch is None, f"RTL differs from golden: {report.first_mismatch}"
