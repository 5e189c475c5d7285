"""``sbnn explore``: train and measure every point of a design space, on the Dask engine.

Each point is a short training run, its validation (and test) error at every budget,
cycles, energy, controller area and a lint check; the points on the Pareto front are
confirmed on the RTL on a sample. Finished points are not recomputed (rerun the same
command to resume); ``--point ID`` reruns one point alone. See studies/explore.py and
docs/explore.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sbnn.fileio import check_output_path

from .arguments import add_command, add_data_dir_option
from .engine_options import add_engine_options, check_engine_options, engine_error, engine_where
from .errors import CliError
from .evaluate import portable_command

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sbnn explore``."""
    sp = add_command(subparsers, "explore", run,
                     "train and measure every point of a design space (Pareto front)",
                     add_data_dir_option)
    sp.add_argument("--space", type=Path, required=True,
                    help="TOML space: [design], [recipe], [vary], [explore] (docs/explore.md)")
    sp.add_argument("--out", type=Path, default=Path("out/explore"),
                    help="folder of the points and of explore.json/.csv/.png/.md "
                         "(default out/explore)")
    sp.add_argument("--liberty", type=Path,
                    help="area and Fmax from sbnn synth on this Liberty file (default: "
                         "generic Yosys cells)")
    sp.add_argument("--point", help="rerun only the point with this id")
    sp.add_argument("--threads", type=int, default=1, help="torch threads per point (1)")
    add_engine_options(sp)
    return sp


def _jobs(args: argparse.Namespace, space) -> list:
    from sbnn.studies.explore import PointJob

    work = str(Path(args.out).resolve())
    data = None if args.data_dir is None else str(Path(args.data_dir).resolve())
    liberty = None if args.liberty is None else str(args.liberty.resolve())
    return [PointJob(p, work, data, liberty, args.threads) for p in space.points]


def _worker_count(args: argparse.Namespace) -> int | str:
    """``--workers`` as run (1: this process), or the scheduler's address."""
    from sbnn.engine import default_workers

    return args.scheduler if args.scheduler is not None else args.workers or default_workers()


def run(args: argparse.Namespace) -> int:
    """Run the space's points (or one), confirm the front on the RTL, write the outputs."""
    from sbnn.engine import EngineError, map_jobs
    from sbnn.studies.explore import (
        ConfirmJob,
        evaluate_point,
        finished_point,
        pareto_front,
        point_file,
        run_confirm,
    )
    from sbnn.studies.explore_report import write_outputs
    from sbnn.studies.explore_space import SpaceError, load_space

    check_engine_options(args)
    if not 1 <= args.threads <= 64:
        raise CliError(f"--threads must be in 1..64, got {args.threads}")
    try:
        space = load_space(args.space)
    except SpaceError as exc:
        raise CliError(str(exc)) from None
    if args.liberty is not None:
        from sbnn.gen.silicon import LibertyError, resolve_liberty

        try:
            args.liberty = resolve_liberty(args.liberty)
        except LibertyError as exc:
            raise CliError(f"--liberty: {exc}") from None
    check_output_path(args.out, "--out", folder=True)
    jobs = _jobs(args, space)
    if args.point is not None:
        jobs = [j for j in jobs if j.point.id == args.point]
        if not jobs:
            raise CliError(f"--point {args.point!r} is not a point of {args.space} (its ids "
                           f"are in explore.csv, or run without --point)")
        point_file(jobs[0].work, args.point).unlink(missing_ok=True)
    print(f"explore: {len(jobs)} point(s) of {args.space} on {engine_where(args)}, into "
          f"{args.out}; rerun the same command to resume", flush=True)
    t0 = time.time()
    try:
        map_jobs(evaluate_point, jobs, workers=args.workers, scheduler=args.scheduler,
                 finished=finished_point, desc="points")
        every = _jobs(args, space)
        records = [finished_point(j) or {"id": j.point.id, **j.point.varied,
                                         "varied": j.point.varied, "status": "not run"}
                   for j in every]
        front = pareto_front(records)
        for r, on in zip(records, front):
            r["on_front"] = on
        if space.confirm_images:
            chosen = [ConfirmJob(j, space.confirm_images) for j, on in zip(every, front) if on]
            confirmed = map_jobs(run_confirm, chosen, workers=args.workers,
                                 scheduler=args.scheduler, desc="RTL confirmations")
            by_id = {c.job.point.id: res for c, res in zip(chosen, confirmed)}
            for r in records:
                r.update(by_id.get(r["id"], {}))
    except EngineError as exc:
        raise engine_error(exc) from None
    summary = {"space": str(args.space), "varied_fields": list(space.varied_fields),
               "objectives": ["val_error_pct", "cycles", "energy_pj", "area"],
               "points": records, "workers": _worker_count(args),
               "engine": engine_where(args),
               "wall_s": round(time.time() - t0, 1), "speedup_2_workers": None,
               "command": portable_command(args.argv)}
    write_outputs(Path(args.out), summary, space.varied_fields)
    ok = sum(r.get("status") == "ok" for r in records)
    bad = [r for r in records if r.get("rtl_mismatches")]
    print(f"{ok} of {len(records)} points measured, {sum(front)} on the front; wrote "
          f"{args.out}/explore.json, .csv, .png, .md")
    if bad:
        print(f"RTL MISMATCH at {', '.join(r['id'] for r in bad)}", file=sys.stderr)
        return 1
    return 0
