"""``sbnn lint``: ``verilator --lint-only`` on the generated Verilog (both tops)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sbnn.fileio import check_output_path

from .arguments import add_command, add_config_option
from .gen import staged_rtl
from .loaders import design_config

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sbnn lint``."""
    sp = add_command(subparsers, "lint", run,
                     "verilator --lint-only on the generated Verilog",
                     add_config_option)
    sp.add_argument("--out", type=Path, default=Path("out/rtl"))
    sp.add_argument("--wall", action="store_true", help="add -Wall")
    return sp


def run(args: argparse.Namespace) -> int:
    """Generate into ``--out``, lint the simulation and controller tops; 1 if either fails."""
    from sbnn.gen.lint import lint
    from sbnn.gen.verilog import CONTROLLER_TOP, SIM_TOP, emit_all

    cfg = design_config(args)
    out = check_output_path(args.out, "--out", folder=True)
    with staged_rtl(out) as stage:
        files = {key: out / path.relative_to(stage)
                 for key, path in emit_all(cfg, stage).items()}
    bad = 0
    for top, srcs in ((SIM_TOP, [files["controller"], files["sim_top"]]),
                      (CONTROLLER_TOP, [files["controller"], files["macro_stub"]])):
        proc = lint(srcs, top, wall=args.wall)
        status = "clean" if proc.returncode == 0 else "FAILED"
        print(f"verilator --lint-only {top}: {status}")
        if proc.returncode:
            print(proc.stderr[-4000:])
            bad += 1
    return 1 if bad else 0
