"""``sbnn`` command line: train, eval, prune, gen, lint, sim, sweep, equiv, sample-data.

Every command that takes a design accepts ``--config FILE`` (TOML or JSON). Bad input ends
with one ``sbnn: error: ...`` line naming the problem and the fix, and exit status 2, before
any expensive work; outputs are written atomically (sbnn/fileio.py). One module per command
(``add_parser(subparsers)`` registers it, ``run(args)`` runs it and returns the exit status);
the shared options are in :mod:`sbnn.cli.arguments`, the config and model loaders in
:mod:`sbnn.cli.loaders`. Modules import their heavy dependencies (torch, the simulators)
when the command runs, so ``sbnn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from sbnn.config import ConfigError
from sbnn.fileio import OutputPathError
from sbnn.options import OptionError

from . import (
    equiv,
    evaluate,
    exit_margin,
    explore,
    gen,
    lint,
    prune,
    sample_data,
    sim,
    sweep,
    synth,
    train,
    variability,
)
from .errors import CliError

# The embedded assets under their former names, for callers of the single-module CLI.
from .loaders import default_model_path as _default_model  # noqa: F401
from .loaders import default_sample_path as _default_sample  # noqa: F401

__all__ = ["COMMANDS", "OPTIONAL_MODULES", "build_parser", "main"]

#: The command modules, in the order ``sbnn --help`` lists them.
COMMANDS = (train, evaluate, exit_margin, prune, gen, lint, sim, sweep, equiv, sample_data,
            variability, synth, explore)

#: Packages of the ``train`` extra: training, evaluation plots and sweeps need them; the
#: main job (``sbnn sim`` on an .npz model) does not.
OPTIONAL_MODULES = ("torch", "matplotlib")


def build_parser() -> argparse.ArgumentParser:
    """The ``sbnn`` parser with every command registered."""
    parser = argparse.ArgumentParser(prog="sbnn", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments), run the command, return its exit
    status: 0 done, 1 a check failed or a tool broke, 2 bad input (one error line)."""
    from sbnn.golden.qmodel import ModelFileError
    from sbnn.studies.mnist import MnistError

    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in summaries
    try:
        return args.func(args)
    except (ConfigError, ModelFileError, MnistError, CliError, OptionError,
            OutputPathError) as exc:
        print(f"sbnn: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a tool failed (Verilator build, simulator): say where
        print(f"sbnn: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # torch and matplotlib are the [train] extra
        if exc.name not in OPTIONAL_MODULES:
            raise
        print(f"sbnn: error: `sbnn {args.command}` needs {exc.name}, which `nox -s sim` does "
              f"not install: pip install -c constraints.txt -e '.[train]'", file=sys.stderr)
        return 2
