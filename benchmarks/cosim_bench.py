"""Cosim throughput: N MNIST test images through the generated RTL, fully checked.

Measured in one run, on one machine, with the same stimulus:

* the checked cosim (cocotb + Verilator, fast engine: harness stimulus, compact logs, bulk
  comparison of every transaction and result with the golden model), parallel workers;
* raw Verilator: the same harness and stimulus with a C++ main, no cocotb, no checks (the
  physical limit of this simulator on this design and machine);
* the golden model alone: the integer path plus the expected transaction trace.

Prints the figures and writes docs/performance.json and docs/performance.md (or --out).
Usage: python benchmarks/cosim_bench.py [--count 10000] [--model M.npz] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def golden_alone(model, pixels: np.ndarray, budget: int, chunk: int = 1000) -> float:
    """Seconds for the golden model to produce every expected transaction and result."""
    from sbnn.cosim import bulk

    t0 = time.time()
    for lo in range(0, len(pixels), chunk):
        idx = np.arange(lo, min(len(pixels), lo + chunk))
        bulk.expected_block(model, pixels[idx], budget, None, idx)
    return time.time() - t0


def main(argv: list[str] | None = None) -> int:
    from sbnn.cosim.fast import build_fast, build_raw, run_fast, run_raw
    from sbnn.cosim.runner import CosimJob
    from sbnn.golden.mnist import MnistError, load_mnist
    from sbnn.golden.qmodel import QuantizedModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=10000, help="MNIST test images (1..10000)")
    ap.add_argument("--model", type=Path, default=ROOT / "golden/assets/default_model.npz")
    ap.add_argument("--budget", type=int, default=None, help="latency budget (default: K)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--data-dir", default=None, help="MNIST folder (else SBNN_MNIST_DIR or "
                                                     "../shared/data/mnist)")
    ap.add_argument("--build", type=Path, default=ROOT / "out" / "bench")
    ap.add_argument("--out", type=Path, default=ROOT / "docs",
                    help="folder for performance.json and performance.md")
    args = ap.parse_args(argv)
    if not 1 <= args.count <= 10000:
        ap.error(f"--count must be in 1..10000, got {args.count}")
    model = QuantizedModel.load(args.model)
    cfg = model.config
    budget = cfg.num_supports if args.budget is None else args.budget
    if not 0 <= budget <= cfg.num_supports:
        ap.error(f"--budget must be in 0..{cfg.num_supports}, got {budget}")
    try:
        images, labels = load_mnist("test", args.data_dir)
    except MnistError as exc:
        print(f"cosim_bench: error: {exc}", file=sys.stderr)
        return 2
    args.build.mkdir(parents=True, exist_ok=True)
    sample = args.build / f"mnist_test_{args.count}.npz"
    np.savez(sample, images=images[: args.count], labels=labels[: args.count])
    pixels = images[: args.count].reshape(args.count, -1)
    job = CosimJob(cfg, args.model, sample, args.count, (budget,))

    print(f"building (not timed): {cfg.layers} K={cfg.num_supports}", flush=True)
    build_fast(cfg, args.build)
    build_raw(cfg, args.build)

    print(f"golden model alone: {args.count} images ...", flush=True)
    golden_s = golden_alone(model, pixels, budget)
    print(f"raw Verilator: {args.count} images, {args.workers} processes ...", flush=True)
    raw = run_raw(job, args.build, workers=args.workers)
    print(f"checked cosim: {args.count} images, {args.workers} processes ...", flush=True)
    fast = run_fast(job, args.build, workers=args.workers)
    if raw["sim_cycles"] != fast["sim_cycles"] + fast["workers"]:
        # The raw count includes each worker's final edge that raises done; report both.
        print(f"note: raw cycles {raw['sim_cycles']}, cosim cycles {fast['sim_cycles']}")
    correct = sum(p["cls"] == p["label"] for p in fast["per_image"])
    result = {
        "images": fast["images"],
        "budget": budget,
        "model": str(args.model.resolve().relative_to(ROOT)) if args.model.resolve()
        .is_relative_to(ROOT) else str(args.model),
        "layers": list(cfg.layers), "num_supports": cfg.num_supports,
        "workers": fast["workers"],
        "wall_s": fast["wall_s"],
        "sim_cycles": fast["sim_cycles"],
        "cosim_cycles_per_s": round(fast["sim_cycles"] / fast["wall_s"]),
        "cosim_images_per_s": round(fast["images"] / fast["wall_s"], 2),
        "transactions_checked": fast["transactions_checked"],
        "results_checked": fast["results_checked"],
        "mismatches": fast["mismatches"],
        "first_mismatch": fast["first_mismatch"],
        "rtl_error_pct": round(100.0 * (1 - correct / fast["images"]), 2),
        "raw_verilator_wall_s": raw["wall_s"],
        "raw_verilator_cycles_per_s": round(raw["sim_cycles"] / raw["wall_s"]),
        "raw_verilator_images_per_s": round(raw["images"] / raw["wall_s"], 2),
        "cosim_over_raw": round(fast["wall_s"] / raw["wall_s"], 2),
        "golden_wall_s": round(golden_s, 2),
        "golden_images_per_s": round(args.count / golden_s, 1),
        "machine": f"{os.cpu_count()} cores, {_cpu_name()}",
        "command": "python benchmarks/cosim_bench.py " + " ".join(argv or sys.argv[1:]),
    }
    print(json.dumps(result, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "performance.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "performance.md").write_text(markdown(result))
    return 0 if result["mismatches"] == 0 else 1


def markdown(r: dict) -> str:
    rows = "\n".join([
        f"| checked cosim (cocotb + Verilator, every transaction and result compared) | "
        f"{r['wall_s']} | {r['cosim_cycles_per_s']:,} | {r['cosim_images_per_s']} |",
        f"| raw Verilator (same harness and stimulus, C++ main, no checks) | "
        f"{r['raw_verilator_wall_s']} | {r['raw_verilator_cycles_per_s']:,} | "
        f"{r['raw_verilator_images_per_s']} |",
        f"| golden model alone (integer path + expected trace) | {r['golden_wall_s']} | | "
        f"{r['golden_images_per_s']} |"])
    return f"""# Cosim throughput

Measured by `nox -s perf` (which runs `{r['command']}`), on {r['machine']}.
Model `{r['model']}` (layers {r['layers']}, K={r['num_supports']}), latency budget
{r['budget']}, {r['images']} MNIST test images, {r['workers']} simulator processes.
Builds are not timed (they are cached between runs).

| what | wall s | cycles/s | images/s |
| --- | ---: | ---: | ---: |
{rows}

Checked cosim / raw Verilator: **{r['cosim_over_raw']}x** the wall time.
Simulated cycles {r['sim_cycles']:,}; macro transactions checked {r['transactions_checked']:,};
results checked {r['results_checked']:,}; mismatches **{r['mismatches']}**; RTL error on
these images {r['rtl_error_pct']} %.

## How the check stays complete and gets fast

* The stimulus and the monitor run inside the simulator (`cosim/harness.py`): a generated
  SystemVerilog harness reads a command file (prog words and pixel beats, back to back)
  and writes one fixed-width hex line per macro start, macro done, accepted image and
  result, stamped with the cycle. The harness makes its own clock (Verilator `--timing`),
  so cocotb is not called per clock edge, and the build drops cocotb's
  `--public-flat-rw` (the harness marks the three signals cocotb reads public itself).
* After the run, `cosim/bulk.py` decodes the logs with numpy and compares every field
  (cycle relative to compute start, pass, layer, tile, plane, gain, column enables, every
  row DAC code, every ADC code, done latency; every result field and the cycle the result
  is offered) with arrays built from the golden model, and reports the first mismatch
  with image, evaluation, cycle, field, expected and actual.
* Image batches run as independent simulator processes (`--workers`, default: all cores),
  each programming the hardware image first.
* Wave dumps for one failing image: `sbnn sim --image I --waves` (FST, off by default).
"""


if __name__ == "__main__":
    sys.exit(main())
