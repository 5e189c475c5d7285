"""Controller hardware cost: Yosys cell and flip-flop counts over a sweep of configs.

    python benchmarks/synth_bench.py            # sweep + default design, writes docs/
    python benchmarks/synth_bench.py --no-default --no-write

Each config's tapeout controller (``sbnn_controller``, the bundle's Verilog) is synthesized
with the macro stub by gen/synth.py. Three one-parameter series around one base design vary
neurons per tile, K and ADC bits, a fourth the active rows. The results go to
docs/synthesis.md (table, fits, command) and docs/synthesis.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from sbnn.config import SbnnConfig
from sbnn.gen.synth import synth_script, synthesize_config

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python benchmarks/synth_bench.py"

# Base: a 64-48-12 network, small enough to convert and synthesize in seconds. Every
# neurons-per-tile value of the sweep divides both layer widths, so no series pays for padded
# neuron slots (32 neurons per tile over 10 outputs would store 32 thresholds for 10 neurons:
# a step, not a trend). The output stays at 12 classes because the controller's argmax
# currently converts in time exponential in the class count (about x1.7 per class).
# gain_bits 6 admits K up to 5 with the default gains, and macro_rows leaves room for the
# smallest tiles, so neither has to change along a series.
BASE = dict(layers=(64, 48, 12), num_supports=1, macro_cols=12, active_rows=16,
            macro_rows=4096, adc_bits=6, gain_bits=6, input_lanes=16)


def sweep() -> list[tuple[str, SbnnConfig]]:
    """(series, config) pairs: one parameter changed from BASE per series."""
    runs = []
    for nt in (1, 2, 3, 4, 6, 12):
        runs.append(("neurons_per_tile", SbnnConfig(**{**BASE, "macro_cols": 2 * nt})))
    for k in (0, 1, 2, 3, 4, 5):  # 6 neurons per tile: macro_cols = 6 (K+1)
        runs.append(("K", SbnnConfig(**{**BASE, "num_supports": k, "macro_cols": 6 * (k + 1)})))
    for bits in (4, 6, 8, 10):
        runs.append(("adc_bits", SbnnConfig(**{**BASE, "adc_bits": bits})))
    for rows in (8, 16, 32, 64):
        runs.append(("active_rows", SbnnConfig(**{**BASE, "active_rows": rows})))
    return runs


def measure(series: str, cfg: SbnnConfig) -> dict:
    t0 = time.time()
    res = synthesize_config(cfg)
    return {
        "series": series, "layers": list(cfg.layers), "K": cfg.num_supports,
        "planes": cfg.planes,
        "macro_cols": cfg.macro_cols, "neurons_per_tile": cfg.neurons_per_tile,
        "active_rows": cfg.active_rows, "adc_bits": cfg.adc_bits,
        "col_blocks": cfg.total_col_blocks, "cells": res.cells, "logic_cells": res.logic_cells,
        "flip_flops": res.flip_flops, "memory_bits": res.memory_bits,
        "datapath_ffs": res.flip_flops - res.memory_bits,
        "latches": res.latches, "black_boxes": res.black_boxes,
        "seconds": round(time.time() - t0, 1),
    }


def fit(rows: list[dict], series: str, x: str, y: str = "flip_flops") -> dict:
    """Least-squares line y = a + b x over one series, and log-log exponents: end to end, and
    the largest between neighbouring points (at most 1 = no step grows faster than
    proportionally, i.e. at most linear growth over the measured range)."""
    pts = sorted((r[x], r[y]) for r in rows if r["series"] == series)
    xs, ys = np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)
    slope, intercept = np.polyfit(xs, ys, 1)
    pred = intercept + slope * xs
    r2 = 1 - ((ys - pred) ** 2).sum() / ((ys - ys.mean()) ** 2).sum()
    steps = np.diff(np.log(ys)) / np.diff(np.log(xs))
    return {"series": series, "x": x, "y": y, "points": len(pts),
            "slope_per_unit": round(float(slope), 1), "intercept": round(float(intercept), 1),
            "r2": round(float(r2), 4),
            "loglog_exponent": round(float(np.log(ys[-1] / ys[0]) / np.log(xs[-1] / xs[0])), 3),
            "max_step_exponent": round(float(steps.max()), 3)}


def table(rows: list[dict]) -> list[str]:
    head = ("| series | layers | K | cols | Nt | A | ADC bits | col blocks | cells | logic | "
            "FFs | memory bits | datapath FFs |")
    lines = [head, "|" + " --- |" * 13]
    for r in rows:
        lines.append(f"| {r['series']} | {'-'.join(map(str, r['layers']))} | {r['K']} | "
                     f"{r['macro_cols']} | {r['neurons_per_tile']} | {r['active_rows']} | "
                     f"{r['adc_bits']} | {r['col_blocks']} | {r['cells']} | "
                     f"{r['logic_cells']} | {r['flip_flops']} | {r['memory_bits']} | "
                     f"{r['datapath_ffs']} |")
    return lines


def _k_steps(rows: list[dict]) -> dict:
    """FFs per plane from K=1 on, and the K=0 -> 1 step, of the K series."""
    ks = sorted((r for r in rows if r["series"] == "K"), key=lambda r: r["K"])
    on = [r for r in ks if r["K"] >= 1]
    x = [r["K"] for r in on]
    return {"slope": np.polyfit(x, [r["flip_flops"] for r in on], 1)[0],
            "mem_slope": np.polyfit(x, [r["memory_bits"] for r in on], 1)[0],
            "jump": ks[1]["flip_flops"] - ks[0]["flip_flops"],
            "mem_jump": ks[1]["memory_bits"] - ks[0]["memory_bits"],
            "slots": ks[1]["col_blocks"] * ks[1]["neurons_per_tile"]}


def _span(rows: list[dict], f: dict) -> str:
    xs = sorted(r[f["x"]] for r in rows if r["series"] == f["series"])
    return f"{xs[0]}..{xs[-1]}"


def _verdict(f: dict) -> str:
    return "at most linearly" if f["max_step_exponent"] <= 1.0 else "FASTER than linearly"


def markdown(rows: list[dict], fits: list[dict]) -> str:
    wall = sum(r["seconds"] for r in rows)
    script = synth_script([Path("sbnn_controller.v"), Path("sbnn_macro_stub.v")],
                          "sbnn_controller", "stat.json", "mems.json")
    fit_lines = ["| count | against | points | slope (per unit) | intercept | R^2 | "
                 "log-log exponent | largest step exponent |", "|" + " --- |" * 8]
    for f in fits:
        fit_lines.append(f"| {f['y']} | {f['x']} | {f['points']} | "
                         f"{f['slope_per_unit']} | {f['intercept']} | {f['r2']} | "
                         f"{f['loglog_exponent']} | {f['max_step_exponent']} |")
    by = {(f["series"], f["y"]): f for f in fits}
    nt, k = by["neurons_per_tile", "flip_flops"], by["K", "flip_flops"]
    k1 = _k_steps(rows)
    return "\n".join([
        "# Controller synthesis figures",
        "",
        "For the controller in real cells (SKY130 hd area in um^2, OpenSTA slack and Fmax, "
        "energy per inference) see [silicon.md](silicon.md) (`sbnn synth`).",
        "",
        f"Measured with `{COMMAND}` (written by it; {wall:.0f} s on this project's 2-core "
        "machine). Each row is the tapeout controller `sbnn_controller` of one config, "
        "converted as `sbnn gen --bundle` converts it and synthesized with the macro stub by "
        "`sbnn.gen.synth` (YoWASP Yosys from PyPI; Amaranth's own Yosys build has no "
        "`read_verilog`/`synth`/`stat`). The Yosys script:",
        "",
        "```",
        script.rstrip(),
        "```",
        "",
        "Counts are technology independent (Yosys' internal gates, flattened): compare configs "
        "with them, do not read them as area. `cells` = gates + flip-flops, without the macro "
        "black box (every run left exactly one unresolved module, `sbnn_macro`, and no "
        "latch). The controller's register files (Amaranth memories: thresholds, column "
        "masks, stored accumulators) have no SRAM to map to, so they are flip-flops here; "
        "`memory bits` says how many of the FFs they are.",
        "",
        f"Base design: layers {'-'.join(map(str, BASE['layers']))}, K={BASE['num_supports']}, "
        f"{BASE['macro_cols']} columns, {BASE['active_rows']} active rows, "
        f"{BASE['adc_bits']}-bit ADC; each series changes one parameter (the K series keeps 6 "
        "neurons per tile, so its columns grow with K+1). `datapath FFs` = FFs - memory bits.",
        "",
        *table(rows),
        "",
        "## Scaling",
        "",
        *fit_lines,
        "",
        "A step exponent is the log-log slope between neighbouring configs: at most 1 means "
        "no step grows faster than proportionally, i.e. at most linear growth over the "
        "measured range.",
        "",
        f"* Neurons per tile: flip-flops grow {_verdict(nt)} (largest step exponent "
        f"{nt['max_step_exponent']}, fitted slope {nt['slope_per_unit']} FFs per neuron per "
        f"tile over {nt['points']} configs, {nt['x']} {_span(rows, nt)}). The network is fixed "
        "along this series, so the register files (one threshold per neuron, one enable bit "
        "per column) keep their size; only the per-tile datapath changes, and its net change "
        "is small.",
        f"* K: flip-flops grow {_verdict(k)} (largest step exponent {k['max_step_exponent']} "
        f"over {k['points']} configs). From K=1 on, each support plane adds "
        f"{k1['slope']:.0f} FFs, {k1['mem_slope']:.0f} of them register-file bits: one "
        f"column-enable bit per neuron slot ({k1['slots']}), and one more bit per stored "
        "threshold and accumulator whenever K+1 passes a power of two (the accumulator "
        f"widens). The step from K=0 to K=1 is the largest, {k1['jump']} FFs "
        f"({k1['mem_jump']} register-file bits): with supports the controller also keeps the "
        "first layer's accumulators for the later passes.",
        "* End-to-end exponents well below 1 say that fixed costs (streams, counters, "
        "activation buffers, the result register) dominate at these sizes.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-default", action="store_true", help="skip the default design (~1 min)")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    p.add_argument("--render", action="store_true",
                   help="rewrite docs/synthesis.md from docs/synthesis.json, synthesizing nothing")
    args = p.parse_args(argv)
    docs = ROOT / "docs"
    if args.render:
        saved = json.loads((docs / "synthesis.json").read_text())
        (docs / "synthesis.md").write_text(markdown(saved["rows"], saved["fits"]))
        return 0
    runs = sweep() + ([] if args.no_default else [("default", SbnnConfig())])
    rows = []
    print(f"{'series':>16} {'layers':>12} {'K':>2} {'cols':>4} {'Nt':>3} {'A':>3} {'ADC':>3} "
          f"{'cells':>7} {'FFs':>6} {'mem bits':>8} {'s':>5}", flush=True)
    for series, cfg in runs:
        r = measure(series, cfg)
        rows.append(r)
        print(f"{series:>16} {'-'.join(map(str, r['layers'])):>12} {r['K']:>2} "
              f"{r['macro_cols']:>4} {r['neurons_per_tile']:>3} {r['active_rows']:>3} "
              f"{r['adc_bits']:>3} {r['cells']:>7} {r['flip_flops']:>6} "
              f"{r['memory_bits']:>8} {r['seconds']:>5}", flush=True)
        if r["black_boxes"] != {"sbnn_macro": 1} or r["latches"]:
            print(f"unexpected: black boxes {r['black_boxes']}, latches {r['latches']}")
            return 1
    fits = [fit(rows, "neurons_per_tile", "neurons_per_tile"), fit(rows, "K", "planes"),
            fit(rows, "adc_bits", "adc_bits"), fit(rows, "active_rows", "active_rows"),
            fit(rows, "neurons_per_tile", "neurons_per_tile", "datapath_ffs"),
            fit(rows, "K", "planes", "datapath_ffs")]
    for f in fits:
        print(f"{f['y']} vs {f['x']}: slope {f['slope_per_unit']} per unit, R^2 {f['r2']}, "
              f"log-log exponent {f['loglog_exponent']}")
    if not args.no_write:
        (docs / "synthesis.json").write_text(json.dumps(
            {"command": COMMAND, "rows": rows, "fits": fits}, indent=2) + "\n")
        (docs / "synthesis.md").write_text(markdown(rows, fits))
        print(f"wrote {docs / 'synthesis.md'} and {docs / 'synthesis.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
