"""``sbnn sample-data``: save the first N MNIST test images as an .npz file."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sbnn.fileio import atomic_file, check_output_path
from sbnn.options import check_int

from .arguments import add_command, add_data_dir_option
from .errors import CliError

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sbnn sample-data``."""
    sp = add_command(subparsers, "sample-data", run,
                     "save the first N MNIST test images as .npz",
                     add_data_dir_option)
    sp.add_argument("--count", type=int, default=300)
    sp.add_argument("--out", type=Path, required=True)
    return sp


def run(args: argparse.Namespace) -> int:
    """Write images and labels of the first ``--count`` test images to ``--out``."""
    from sbnn.studies.mnist import load_mnist

    check_int("--count", args.count, 1, 10000, " test images")
    out = check_output_path(args.out, "--out", folder=False)
    if out.suffix != ".npz":  # numpy would append it, and the file would not be --out
        raise CliError(f"--out must name a .npz file, got {str(out)!r}")
    images, labels = load_mnist("test", args.data_dir)
    if not 1 <= args.count <= len(labels):
        raise CliError(f"--count must be in 1..{len(labels)}, got {args.count}")
    with atomic_file(out) as tmp:
        np.savez_compressed(tmp, images=images[: args.count], labels=labels[: args.count])
    print(f"wrote the first {args.count} MNIST test images to {out}")
    return 0
