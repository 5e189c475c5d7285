"""``sbnn synth``: map the controller to a Liberty library (Yosys), time it with OpenSTA;
area, flip-flops, slack, Fmax and energy per design (gen/silicon_report.py does the work)."""

from __future__ import annotations

import argparse
import shlex
import shutil
from pathlib import Path

from sbnn.config import SbnnConfig, load_config

from .arguments import add_command
from .errors import CliError

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sbnn synth``."""
    sp = add_command(subparsers, "synth", run,
                     "map the controller to a Liberty library (Yosys), time it with OpenSTA; area, "
                     "flip-flops, slack, Fmax, energy")
    sp.add_argument("--config", action="append", metavar="FILE",
                    help="design config (TOML or JSON), repeatable; 'default' = the built-in "
                         "default design (the default when none is given)")
    sp.add_argument("--liberty", type=Path, default=None,
                    help="standard-cell Liberty file, .lib or .lib.gz (default: "
                         "$SBNN_LIBERTY, else the one in ../shared/pdk)")
    sp.add_argument("--out", type=Path, default=None,
                    help="write silicon.md and silicon.json into this folder (e.g. docs)")
    sp.add_argument("--keep", type=Path, default=None,
                    help="keep each design's work folder (netlist, scripts, logs) under here")
    sp.add_argument("--machine", default=None,
                    help="what else ran on the machine, recorded beside the timings")
    return sp


def _design(spec: str) -> tuple[str, SbnnConfig]:
    """(name, design) of one ``--config`` value: 'default' or a config file."""
    if spec == "default":
        return "default", SbnnConfig()
    return Path(spec).stem, load_config(Path(spec))


def run(args: argparse.Namespace) -> int:
    """Map, time and report; exit 2 on a missing library, tool or bad config."""
    from sbnn.gen.silicon import LibertyError, resolve_liberty
    from sbnn.gen.silicon_report import run_silicon

    try:
        liberty = resolve_liberty(args.liberty)
    except LibertyError as exc:
        raise CliError(str(exc)) from None
    if shutil.which("sta") is None:
        raise CliError("OpenSTA ('sta') is not on PATH: install it (Debian/Ubuntu: "
                       "apt-get install opensta)")
    designs = [_design(spec) for spec in (args.config or ["default"])]
    # Quoted as a shell would need it, so that the docs' command can be pasted back.
    command = shlex.join(["sbnn", *getattr(args, "argv", ["synth"])])
    run_silicon(designs, liberty, args.out, command, args.machine or "", args.keep)
    return 0
