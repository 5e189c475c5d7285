"""Verilator build cost against simulation speed, per g++ optimization level (OPT_FAST).

For each level the raw harness (cosim/harness.py with a C++ main, no cocotb) of the default
design is built from scratch in its own folder, then runs the same stimulus (N images of the
embedded sample at the full budget) in one process. Build and run are measured in CPU
seconds of the child processes (getrusage), so other load on the machine inflates them less
than wall time. Prints a table and writes docs/build.json (or --out).

Usage: python benchmarks/build_bench.py [--levels=-O0,-O1,-Os,-O2] [--count 200]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    from sbnn.cosim.fast import build_raw, plan_job, write_commands
    from sbnn.cosim.runner import CosimJob
    from sbnn.golden.qmodel import QuantizedModel
    from sbnn.toolchain import verilator_make_flags

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="-O0,-O1,-Os,-O2")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--build", type=Path, default=ROOT / "out" / "build_bench")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "build.json")
    ap.add_argument("--jobs", type=int, default=1, help="make -j (1: CPU time is comparable)")
    args = ap.parse_args(argv)

    model_path = ROOT / "golden/assets/default_model.npz"
    sample = ROOT / "golden/assets/mnist_test_sample.npz"
    model = QuantizedModel.load(model_path)
    cfg = model.config
    job = CosimJob(cfg, model_path, sample, count=args.count, budgets=(cfg.num_supports,))
    with np.load(sample) as data:
        pixels = data["images"]
    rows = []
    for level in args.levels.split(","):
        root = args.build / level.lstrip("-")
        shutil.rmtree(root, ignore_errors=True)
        c0, w0 = _child_cpu(), time.time()
        binary = build_raw(cfg, root, opt=level, jobs=args.jobs)
        build_cpu, build_wall = _child_cpu() - c0, time.time() - w0
        cmd_file = binary.parent / "commands.txt"
        write_commands(cmd_file, model, plan_job(job, model, args.count), pixels)
        c0, w0 = _child_cpu(), time.time()
        out = subprocess.run([str(binary), f"+cmd={cmd_file}", f"+log={binary.parent / 'log'}"],
                             capture_output=True, text=True, check=True).stdout
        run_cpu, run_wall = _child_cpu() - c0, time.time() - w0
        cycles = int(out.split("cycles=")[1].split()[0])
        rows.append({"opt_fast": level, "build_cpu_s": round(build_cpu, 1),
                     "build_wall_s": round(build_wall, 1), "run_cpu_s": round(run_cpu, 2),
                     "run_wall_s": round(run_wall, 2), "cycles": cycles,
                     "cycles_per_cpu_s": round(cycles / run_cpu)})
        r = rows[-1]
        print(f"{level:5s} build {r['build_cpu_s']:6.1f} CPU-s  run {r['run_cpu_s']:6.2f} CPU-s"
              f"  {r['cycles_per_cpu_s']:>10,} cycles/CPU-s", flush=True)
    args.out.write_text(json.dumps({"command": "python benchmarks/build_bench.py "
                                    + " ".join(argv or []), "images": args.count,
                                    "make_jobs": args.jobs, "rows": rows,
                                    "make_flags": verilator_make_flags()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
