"""Option helpers shared by the ``sbnn`` commands: the common options and value parsers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sbnn.params import Record, cli_fields

__all__ = ["add_command", "add_config_option", "add_data_dir_option", "add_model_option",
           "comma_ints", "add_record_options", "given_record_options"]


def add_command(subparsers, name: str, run: Callable[[argparse.Namespace], int],
                help: str, *common: Callable[[argparse.ArgumentParser], None]
                ) -> argparse.ArgumentParser:
    """Register the command ``name`` (``help``: its line in ``sbnn --help``) that ``run``
    runs, with the shared options ``common`` (e.g. :func:`add_config_option`) first."""
    parser = subparsers.add_parser(name, help=help)
    for add_option in common:
        add_option(parser)
    parser.set_defaults(func=run)
    return parser


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``: the design config."""
    parser.add_argument("--config", type=Path, help="design config (TOML or JSON)")


def add_data_dir_option(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``: where the MNIST IDX files are."""
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with the MNIST IDX files (or set SBNN_MNIST_DIR)")


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """``--model``: the QuantizedModel to run (default: the embedded one)."""
    parser.add_argument("--model", type=Path, help="QuantizedModel .npz (default: embedded)")


def comma_ints(text: str) -> tuple[int, ...]:
    """Comma-separated integers (budgets, exit margins)."""
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--budgets must be comma-separated integers, got {text!r}") from None


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_record_options(parser: argparse.ArgumentParser, record_cls: type[Record],
                       skip: tuple[str, ...] = ()) -> list[str]:
    """One option per documented field of ``record_cls`` (``--base-epochs`` for
    ``base_epochs``), except those in ``skip``: type, choices and help (the field's
    description, range and default) come from the declaration. Every option defaults to
    None (not given), so that a config file's table can supply the field. Returns the
    fields given options, in declaration order."""
    names = []
    for field in cli_fields(record_cls):
        if field.name in skip:
            continue
        text = field.help
        if field.type is bool:  # a switch: "true or false" says nothing on the command line
            text = record_cls.model_fields[field.name].description or field.name
        text = text.replace("%", "%%")  # argparse formats help with %
        if field.default is not None:
            text += f", default {_shown(field.default)}"
        common: dict[str, Any] = {"dest": field.name, "default": None, "help": text}
        if field.type is bool:
            parser.add_argument(field.option, action=argparse.BooleanOptionalAction, **common)
        else:
            parser.add_argument(field.option, type=field.type, choices=field.choices,
                                nargs="+" if field.multiple else None, **common)
        names.append(field.name)
    return names


def given_record_options(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The record options of ``names`` given on the command line (those not None)."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}
