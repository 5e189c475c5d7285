"""``--workers`` and ``--scheduler``: where the jobs of a long command run (sbnn/engine.py,
docs/cluster.md)."""

from __future__ import annotations

import argparse

from sbnn.options import WORKERS_MAX

from .errors import CliError

__all__ = ["add_engine_options", "check_engine_options", "engine_error", "engine_where"]


def add_engine_options(parser: argparse.ArgumentParser, *aliases: str) -> None:
    """``--workers N`` (``aliases``: older names of the same option) and ``--scheduler``."""
    parser.add_argument("--workers", *aliases, dest="workers", type=int, default=None,
                        help="local Dask worker processes, one thread each (default: every "
                             "core; 1: run the jobs in this process, no cluster)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run the jobs on the running Dask cluster whose scheduler is at "
                             "ADDRESS (e.g. tcp://host:8786; docs/cluster.md) instead of on "
                             "local workers")


def check_engine_options(args: argparse.Namespace) -> None:
    """``--workers`` in 1..WORKERS_MAX, not with ``--scheduler`` (that cluster has its own
    workers); ``--scheduler`` not blank."""
    if args.workers is not None and not 1 <= args.workers <= WORKERS_MAX:
        raise CliError(f"--workers must be in 1..{WORKERS_MAX} (local Dask worker processes; "
                       f"1 runs the jobs in this process), got {args.workers}")
    if args.scheduler is not None:
        if args.workers is not None:
            raise CliError("--workers sizes a local cluster; with --scheduler the cluster's "
                           "own workers run the jobs: give one of them")
        if not args.scheduler.strip():
            raise CliError("--scheduler needs the scheduler's address, e.g. "
                           "tcp://127.0.0.1:8786")


def engine_where(args: argparse.Namespace) -> str:
    """Where the jobs run, for the command's first line and its records."""
    from sbnn.engine import default_workers

    if args.scheduler is not None:
        return f"the Dask cluster at {args.scheduler}"
    workers = args.workers or default_workers()
    return "this process" if workers == 1 else f"{workers} local Dask workers"


def engine_error(exc: Exception) -> CliError:
    """The one-line error (exit status 2) for a cluster that could not be started or
    reached; the engine's message names the option and the fix."""
    return CliError(str(exc).splitlines()[0])
