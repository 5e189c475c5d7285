"""``sbnn sim``: cocotb + Verilator cosim of a model against the golden trace.

Every option and the image file are checked before Verilog generation and the simulator
build; a mismatch ends with exit status 1 and the first mismatch printed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sbnn.config import SbnnConfig
from sbnn.fileio import atomic_file, atomic_write_text, check_output_path
from sbnn.options import WORKERS_MAX, check_int, check_margin, check_seed

from .arguments import (
    add_command,
    add_config_option,
    add_data_dir_option,
    add_model_option,
    comma_ints,
)
from .errors import CliError
from .evaluate import portable_command
from .loaders import default_sample_path, model_from_args, model_path

__all__ = ["SIM_DEFAULT_COUNT", "add_parser", "run", "check_sim_inputs"]

#: Images a plain ``sbnn sim`` runs.
SIM_DEFAULT_COUNT = 200


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sbnn sim``."""
    sp = add_command(subparsers, "sim", run,
                     "cocotb + Verilator cosim against the golden trace",
                     add_config_option, add_model_option)
    sp.add_argument("--images", type=Path, help=".npz with images/labels (default: "
                                                "embedded 300-image MNIST test sample)")
    sp.add_argument("--mnist-test", type=int, default=None, metavar="N",
                    help="instead of --images: the first N MNIST test images (and --count "
                         "N) from --data-dir / SBNN_MNIST_DIR / ../shared/data/mnist")
    add_data_dir_option(sp)
    sp.add_argument("--count", type=int, default=None,
                    help=f"images to run (default: {SIM_DEFAULT_COUNT}, or N with "
                         f"--mnist-test N)")
    sp.add_argument("--budgets", type=comma_ints, default=None,
                    help="comma-separated latency budgets (default: K and 0)")
    sp.add_argument("--build", type=Path, default=Path("out/cosim"))
    sp.add_argument("--exit-margin", type=int, default=None,
                    help="confidence-exit margin (default: never exit early)")
    sp.add_argument("--random-seed", type=int, default=None,
                    help="also run the images with random per-inference budgets, exit "
                         "margins and support masks drawn from this seed")
    sp.add_argument("--engine", choices=("fast", "cycle"), default="fast",
                    help="fast: stimulus and per-image transaction signatures in the "
                         "simulator, checked against the golden model after, parallel "
                         "workers; cycle: Python drives and checks every clock (same "
                         "checks, ~100x slower)")
    sp.add_argument("--workers", type=int, default=None,
                    help="parallel simulator processes (fast engine; default: CPU cores)")
    sp.add_argument("--image", type=int, default=None,
                    help="run only this image (fast engine), e.g. with --waves")
    sp.add_argument("--waves", action="store_true",
                    help="dump an FST wave file (with the fast engine, use with --image)")
    sp.add_argument("--report", type=Path, help="write the report as JSON")
    return sp


def run(args: argparse.Namespace) -> int:
    """Run the cosim; 0 with no mismatch, 1 otherwise."""
    from sbnn.cosim.fast import run_fast
    from sbnn.cosim.runner import CosimJob, run_cosim

    model = model_from_args(args)
    if args.budgets is None:  # every plane, then the base plane alone
        k = model.config.num_supports
        args.budgets = (k, 0) if k else (0,)
    images = check_sim_inputs(args, model.config)
    path = model_path(args)
    print(f"cosim ({args.engine} engine): {args.count} images x budgets {list(args.budgets)}"
          f"{' + random controls' if args.random_seed is not None else ''} on Verilator, "
          f"model {path}", flush=True)
    t0 = time.time()
    job = CosimJob(model.config, path, images, args.count, tuple(args.budgets),
                   exit_margin=args.exit_margin, random_seed=args.random_seed)
    if args.engine == "fast":
        report = run_fast(job, args.build, workers=args.workers, waves=args.waves,
                          only_image=args.image).to_dict()
        report["total_sim_cycles"] = report["sim_cycles"]
    else:
        report = run_cosim(job, args.build, waves=args.waves).to_dict()
    wall = time.time() - t0
    print_sim_report(report, args.engine, wall)
    if args.report:
        # What was run beside what it gave: results.json ``anytime`` matches a report to
        # its (budget, exit margin) by these fields.
        context = {"model": path.name, "exit_margin": args.exit_margin,
                   "budgets": list(args.budgets), "command": portable_command(args.argv)}
        atomic_write_text(args.report, json.dumps(context | report
                                                  | {"wall_s": round(wall, 1)},
                                                  indent=2) + "\n")
    if report["mismatches"]:
        print(f"FIRST MISMATCH: {report['first_mismatch']}")
        return 1
    return 0


def print_sim_report(report: dict, engine: str, wall: float) -> None:
    """The cosim report as a table per run, then the checked counts and the times."""
    print(f"{'budget':>6} {'images':>6} {'RTL acc %':>9} {'agree %':>8} {'cycles/inf':>10} "
          f"{'mean exit plane':>15}")
    for run in report["runs"]:
        agree = 100.0 * run["agree"] / run["images"]
        exit_mean = sum(run["exit_planes"]) / run["images"]
        label = run["budget"] if run["run"] == "budget" else "random"
        print(f"{label:>6} {run['images']:>6} {run['rtl_accuracy_pct']:>9.2f} "
              f"{agree:>8.2f} {run['cycles_per_inference']:>10.1f} {exit_mean:>15.2f}")
    print(f"macro transactions checked: {report['transactions_checked']}, results checked: "
          f"{report['results_checked']}, mismatches: {report['mismatches']}")
    run_s = f"simulation {report['sim_wall_s']} s"
    if engine == "fast":
        run_s = f"simulation + check {report['wall_s']} s ({report['workers']} processes)"
    print(f"simulated cycles: {report['total_sim_cycles']}, {run_s}, total wall (incl. "
          f"Verilog generation and build) {wall:.1f} s")
    for path in report.get("waves", []):
        print(f"waves: {path}")


def check_sim_inputs(args: argparse.Namespace, cfg: SbnnConfig) -> Path:
    """Check every ``sbnn sim`` option and the image file before generation and builds;
    returns the image file (the MNIST subset is written into --build for --mnist-test)."""
    from sbnn.studies.mnist import check_image_file, load_mnist

    if args.mnist_test is not None and args.images:
        raise CliError("give either --images or --mnist-test, not both")
    check_int("--mnist-test", args.mnist_test, 1, 10000)
    if args.count is None:  # every image asked for, or the default run's 200
        args.count = args.mnist_test or SIM_DEFAULT_COUNT
    if args.count < 1:
        raise CliError(f"--count must be at least 1, got {args.count}")
    for b in args.budgets:
        if not 0 <= b <= cfg.num_supports:
            raise CliError(f"--budgets: {b} is outside 0..{cfg.num_supports} "
                           f"(planes after the base plane)")
    if args.exit_margin is not None:
        check_margin("--exit-margin", [args.exit_margin], cfg)
    check_seed("--random-seed", args.random_seed)
    check_int("--workers", args.workers, 1, WORKERS_MAX, " simulator processes")
    if cfg.num_macros > 1 and args.engine != "fast":
        raise CliError(f"--engine cycle monitors one macro; the design has {cfg.num_macros} "
                       f"(num_macros): use --engine fast")
    if args.image is not None and args.engine != "fast":
        raise CliError("--image (one image, e.g. with --waves) needs --engine fast")
    check_output_path(args.build, "--build", folder=True)
    if args.report is not None:
        check_output_path(args.report, "--report", folder=False)
    if args.mnist_test is not None:
        test_x, test_y = load_mnist("test", args.data_dir)
        images = Path(args.build) / f"mnist_test_{args.mnist_test}.npz"
        with atomic_file(images) as tmp:
            np.savez(tmp, images=test_x[: args.mnist_test], labels=test_y[: args.mnist_test])
    else:
        images = Path(args.images) if args.images else default_sample_path()
    available = check_image_file(images, cfg.layers[0], cfg.num_classes)
    if args.count > available:
        raise CliError(f"--count {args.count} but {images} holds {available} images")
    if args.image is not None and not 0 <= args.image < args.count:
        raise CliError(f"--image {args.image} is outside 0..{args.count - 1} (the images run)")
    return images
