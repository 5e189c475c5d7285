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

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from sbnn.config import SbnnConfig
from sbnn.cosim import bulk, digest
from sbnn.cosim.equivalence import random_model
from sbnn.golden.qmodel import QuantizedModel


def _block_model(blk: dict, cfg: SbnnConfig, model, masks):
    if blk.get("model_seed") is not None:
        return random_model(cfg, blk["model_seed"])
    if blk["mask"] is not None:
        return model.with_mask(tuple(masks[f"{blk['mask']}_{i}"]
                                     for i in range(cfg.num_layers)))
    return model


def _check_full(cfg, plan, blocks, flat) -> tuple[dict, list, np.ndarray]:
    """Every field of every transaction (cosim/bulk.py)."""
    expected = bulk.concat([bulk.expected_block(m, flat[idx], b["budget"], b["margin"], idx)
                            for b, m, idx in blocks])
    check = bulk.compare(cfg, bulk.read_logs(cfg, plan["log"]), expected)
    fields = {"images": check.images, "transactions_checked": check.transactions,
              "results_checked": check.results, "mismatches": check.mismatches,
              "first_mismatch": str(check.first) if check.first else None}
    return fields, check.result_list, check.bad


def _check_digests(cfg, plan, blocks, flat) -> tuple[dict, list, np.ndarray]:
    expected = digest.ExpectedDigests.concat(
        [digest.expected_block_cached(m, flat[idx], b["budget"], b["margin"],
                                      plan.get("golden_cache")) for b, m, idx in blocks])
    log = digest.read_log(cfg, plan["log"])
    check = digest.compare(log, expected)
    fields = {"images": check.images, "transactions_checked": check.transactions,
              "results_checked": check.results, "mismatches": int(check.bad.sum()),
              "first_mismatch": check.first}
    results = log.results[:check.results] + [None] * (check.images - check.results)
    return fields, results, check.bad


@cocotb.test()
async def fast_regression(dut):
    """Run the command file through the harness; compare every image with the golden model."""
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
        if not blk["images"]:
            continue  # programming only (a localization rerun replays earlier blocks' ops)
        runs.extend([(blk["run"], blk["budget"], blk["index"])] * len(blk["images"]))
        blocks.append((blk, _block_model(blk, cfg, model, masks),
                       np.asarray(blk["images"], dtype=np.int64)))
    check = _check_full if plan.get("full") else _check_digests
    fields, results, bad = check(cfg, plan, blocks, flat)
    images = np.concatenate([idx for _, _, idx in blocks]) if blocks else np.zeros(0, int)
    report = fields | {
        "harness_failed": failed,
        "sim_cycles": _sim_cycles(plan["log"]),
        "sim_wall_s": round(sim_s, 3), "check_wall_s": round(time.time() - t1, 3),
        "per_image": [{"image": int(i), "run": run, "budget": budget, "block": block,
                       "ok": not bool(b), "label": int(labels[i]),
                       "cls": int(r["cls"]) if r else -1,
                       "cycles": int(r["cycles"]) if r else -1,
                       "exit_plane": int(r["exit_plane"]) if r else -1}
                      for r, i, (run, budget, block), b in zip(results, images, runs, bad)],
    }
    Path(plan["report"]).write_text(json.dumps(report) + "\n")
    assert not failed, "harness gave up waiting (see sim.log)"
    assert report["first_mismatch"] is None, f"RTL differs from golden: {report['first_mismatch']}"


def _sim_cycles(prefix: str) -> int:
    """Cycles simulated up to the last result (from the digest records)."""
    with open(prefix + ".digest") as f:
        last = None
        for line in f:
            last = line
    if not last:
        return 0
    base, rel = last.split()[:2]
    return int(base, 16) + int(rel, 16)
