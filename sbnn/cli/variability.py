"""``sbnn variability``: Monte Carlo of the MNIST error vs process variability (a sweep of
one variation parameter over seeds; studies/variability_sweep.py does the work)."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from .arguments import add_command, add_data_dir_option
from .engine_options import (
    add_engine_options,
    check_engine_options,
    engine_error,
    engine_where,
)
from .errors import CliError
from .loaders import default_model_path

__all__ = ["DEFAULT_SIGMAS", "add_parser", "run"]

#: Values of the swept parameter when ``--sigmas`` is not given.
DEFAULT_SIGMAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)


def _named_model(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--model must be NAME=PATH, got {text!r}")
    if not all(ch.isalnum() or ch in "-_." for ch in name):
        raise argparse.ArgumentTypeError(f"--model name {name!r} may hold only letters, "
                                         f"digits, '-', '_' and '.' (it names a folder)")
    return name, Path(path)


def _floats(option: str):
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{option} must be comma-separated numbers, got {text!r}") from None
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise argparse.ArgumentTypeError(f"{option} must be finite and >= 0, got {text!r}")
        return values
    return parse


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard must be I/N, got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sbnn variability``."""
    from sbnn.studies.variability_sweep import SWEPT_PARAMS

    sp = add_command(subparsers, "variability", run,
                     "Monte Carlo of MNIST error vs process variability (sigma sweep, "
                     "docs/variability.md)",
                     add_data_dir_option)
    sp.add_argument("--model", action="append", type=_named_model, metavar="NAME=PATH",
                    help="a QuantizedModel .npz under a name (repeatable; default: "
                         "default=<embedded model>); each runs with its own support mask")
    sp.add_argument("--keeps", type=_floats("--keeps"), default=(0.5,),
                    help="also run each model with supports pruned to these kept fractions "
                         "(rule: fewest bits differing from the base plane go first); "
                         "'' for none")
    sp.add_argument("--param", choices=SWEPT_PARAMS, default="cell_sigma",
                    help="the variation parameter to sweep (default: cell_sigma)")
    sp.add_argument("--sigmas", type=_floats("--sigmas"), default=DEFAULT_SIGMAS,
                    help="comma-separated values of --param; start with 0 for the reference")
    sp.add_argument("--seeds", type=int, default=20, help="Monte Carlo seeds per sigma")
    sp.add_argument("--float-seeds", type=int, default=5,
                    help="also run the float (unrounded) path on the first N seeds")
    sp.add_argument("--variation", type=Path,
                    help="JSON/TOML with the fixed parameters of the other sources "
                         "(golden/variability.py: Variation)")
    sp.add_argument("--count", type=int, default=10000, help="MNIST test images to use")
    sp.add_argument("--images", type=Path,
                    help=".npz with images/labels to use instead of the MNIST test set")
    add_engine_options(sp, "--jobs")
    sp.add_argument("--work", type=Path, default=Path("out/variability"),
                    help="one result file per (model, sigma, seed); reused when present")
    sp.add_argument("--shard", type=_shard, default=None,
                    help="I/N: run only every N-th job starting at I (cluster array jobs); "
                         "no report")
    sp.add_argument("--out", type=Path, default=Path("docs"),
                    help="where variability.md/.json and the plot go")
    return sp


def _check_counts(args: argparse.Namespace) -> None:
    if args.seeds < 1:
        raise CliError(f"--seeds must be at least 1, got {args.seeds}")
    if args.float_seeds < 0:
        raise CliError(f"--float-seeds must be >= 0, got {args.float_seeds}")
    check_engine_options(args)
    if not args.sigmas:
        raise CliError("--sigmas is empty; give e.g. --sigmas 0,0.1,0.2")
    if any(not 0 < k <= 1 for k in args.keeps):
        raise CliError(f"--keeps fractions must be in (0, 1], got {list(args.keeps)}")


def _model_specs(args: argparse.Namespace) -> list:
    """One ModelSpec per model and kept fraction; every model file is checked now."""
    from sbnn.golden.qmodel import QuantizedModel
    from sbnn.studies.variability_sweep import ModelSpec

    models = args.model or [("default", default_model_path())]
    names = [n for n, _ in models]
    if len(set(names)) != len(names):
        raise CliError(f"--model names must differ, got {names}")
    specs = []
    for name, path in models:
        model = QuantizedModel.load(path)  # checked now: a bad file fails before any job
        specs.append(ModelSpec(name, str(Path(path).resolve())))
        if model.config.num_supports:
            specs += [ModelSpec(name, str(Path(path).resolve()), k) for k in args.keeps
                      if k < 1]
    return specs


def _image_source(args: argparse.Namespace) -> tuple[str, int]:
    """(the images' name as the jobs record it, how many images it holds)."""
    if args.images:
        if not args.images.is_file():
            raise CliError(f"--images {str(args.images)!r} does not exist")
        import numpy as np

        with np.load(args.images) as data:
            available = len(data["labels"])
        return str(args.images.resolve()), available
    from sbnn.studies.mnist import load_mnist, resolve_data_dir

    available = len(load_mnist("test", args.data_dir)[1])  # fetch/check once, up front
    # resolved, so that results are found again however the folder was named
    return f"mnist-test:{resolve_data_dir(args.data_dir)}", available


def _print_progress(index: int, total: int, rec: dict) -> None:
    errs = rec["exact_error_pct"]
    print(f"  [{index + 1}/{total}] {rec['model']} kept {rec['support_kept_pct']:g} % "
          f"{rec['param']}={rec['sigma']:g} seed {rec['seed']}: error % by pass "
          f"{errs} ({rec['wall_s']} s)", flush=True)


def _print_summary(summary: dict, param: str) -> None:
    print(f"{'model':60s} {'sigma':>6} {'mean %':>7} {'std':>6} {'min':>6} {'max':>6}")
    for c in summary["curves"]:
        for p in c["points"]:
            e = p["exact"]
            print(f"{c['label'][:60]:60s} {p['sigma']:>6g} {e['mean']:>7.2f} {e['std']:>6.2f} "
                  f"{e['min']:>6.2f} {e['max']:>6.2f}")
        at = c["sigma_at_0p5pp"]
        print(f"{'':60s} +0.5 pp at {param} = "
              f"{'not reached' if at is None else f'{at:.3g}'}")


def run(args: argparse.Namespace) -> int:
    """Run the jobs not yet in ``--work`` (or one shard) on the engine, then aggregate and
    report."""
    from sbnn.engine import EngineError, default_workers
    from sbnn.golden.variability import Variation, load_variation
    from sbnn.studies.variability_sweep import (
        aggregate,
        command_line,
        describe_images,
        plan,
        run_all,
        write_report,
    )

    _check_counts(args)
    base = load_variation(args.variation) if args.variation else Variation()
    for s in args.sigmas:  # validated by Variation itself: the message names the field
        base.replace(**{args.param: s})
    specs = _model_specs(args)
    images, available = _image_source(args)
    if not 1 <= args.count <= available:
        raise CliError(f"--count must be in 1..{available}, got {args.count}")
    jobs = plan(specs, base, args.param, sorted(args.sigmas), args.seeds, images, args.count,
                args.float_seeds, args.work)
    if args.shard:
        i, n = args.shard
        jobs = jobs[i::n]
    print(f"variability: {len(jobs)} jobs ({len(specs)} model variants x {len(args.sigmas)} "
          f"values of {args.param} x up to {args.seeds} seeds) on {engine_where(args)}, "
          f"results "
          f"in {args.work}", flush=True)
    t0 = time.time()
    try:
        records = run_all(jobs, args.workers, _print_progress, args.scheduler)
    except EngineError as exc:
        raise engine_error(exc) from None
    wall = time.time() - t0
    if args.shard:
        print(f"shard done: {len(records)} results in {args.work} ({wall:.0f} s)")
        return 0
    summary = aggregate(records)
    meta = {"command": command_line(), "param": args.param, "seeds": args.seeds,
            "float_seeds": args.float_seeds, "base": base.to_dict(), "jobs": len(jobs),
            "workers": args.scheduler or args.workers or default_workers(),
            "wall_s": round(wall, 1), "images": images,
            # the jobs this command ran and their time (the others were read back)
            "ran": sum("wall_s" in r for r in records),
            "job_s": round(sum(r.get("wall_s", 0) for r in records), 1),
            "count": args.count, "images_desc": describe_images(images, args.count)}
    files = write_report(summary, meta, args.out)
    _print_summary(summary, args.param)
    print(f"wrote {', '.join(str(f) for f in files)} ({wall:.0f} s)")
    return 0
