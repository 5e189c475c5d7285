"""Option helpers shared by the ``sbnn`` commands: the common options and value parsers."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_config_option", "add_data_dir_option", "add_model_option", "comma_ints"]


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
