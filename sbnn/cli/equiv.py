"""``sbnn equiv``: randomized RTL vs golden equivalence over random configs (resumable)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sbnn.fileio import check_output_path
from sbnn.options import check_seed

from .arguments import add_command
from .engine_options import (
    add_engine_options,
    check_engine_options,
    engine_error,
    engine_where,
)
from .errors import CliError

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sbnn equiv``."""
    sp = add_command(subparsers, "equiv", run,
                     "randomized RTL vs golden equivalence over random configs, models, inputs and "
                     "controls (resumable)")
    sp.add_argument("--configs", type=int, default=20, help="random configs to run")
    sp.add_argument("--cases", type=int, default=5000, help="cases (inferences) per config")
    sp.add_argument("--seed", type=int, default=0, help="first config seed")
    add_engine_options(sp)  # each worker runs one simulator process at a time
    sp.add_argument("--build", type=Path, default=Path("out/equiv"))
    sp.add_argument("--ledger", type=Path, default=Path("out/equiv/ledger.jsonl"),
                    help="one line per finished config; reruns skip those (resume)")
    sp.add_argument("--case", default=None, help="rerun one case, CONFIG_SEED:INDEX")
    return sp


def run(args: argparse.Namespace) -> int:
    """Run the configs not yet in the ledger (or the one ``--case``, in this process) on
    the engine; 1 on a mismatch."""
    from sbnn.cosim.equivalence_run import run_equivalence
    from sbnn.engine import EngineError

    for name in ("configs", "cases"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name} must be at least 1, got {getattr(args, name)}")
    check_engine_options(args)
    check_seed("--seed", args.seed, span=args.configs)  # config seeds seed..seed+configs-1
    check_output_path(args.build, "--build", folder=True)
    check_output_path(args.ledger, "--ledger", folder=False)
    if args.case:
        return _rerun_case(args)
    print(f"random-config equivalence: configs {args.seed}..{args.seed + args.configs - 1}, "
          f"{args.cases} cases each, on {engine_where(args)}; ledger {args.ledger}",
          flush=True)
    try:
        res = run_equivalence(args.configs, args.cases, args.seed, args.build, args.ledger,
                              args.workers, log=lambda m: print(m, flush=True),
                              scheduler=args.scheduler)
    except EngineError as exc:
        raise engine_error(exc) from None
    print(f"{'OK' if res['ok'] else 'FAILED'}: {res['total_cases']} cases checked in the "
          f"ledger so far with 0 mismatches" if res["ok"] else
          f"FAILED after {res['total_cases']} good cases")
    return 0 if res["ok"] else 1


def _rerun_case(args: argparse.Namespace) -> int:
    """``--case CONFIG_SEED:INDEX``: one case again, with its run folder kept."""
    from sbnn.cosim.equivalence import parse_case, run_config

    try:
        seed, index = parse_case(args.case)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    check_seed("--case CONFIG_SEED", seed)
    rep = run_config(seed, args.build, first=index, count=1, workers=1).to_dict()
    print(f"case {seed}:{index}: {rep['transactions_checked']} transactions, "
          f"{'OK' if rep['mismatches'] == 0 else 'MISMATCH: ' + str(rep['first_mismatch'])}")
    print(f"config: {json.dumps(rep['config'])}")
    print(f"run folder (command file, logs, sim.log): {rep['run_dir']}")
    return 0 if rep["mismatches"] == 0 else 1
