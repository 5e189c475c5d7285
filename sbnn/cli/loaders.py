"""Shared loaders of the ``sbnn`` commands: the embedded assets, ``--config`` and ``--model``.

A command that takes a model reads ``--config`` as an override of the model's own design
(no ``--config``: the design stored in the model file); a command that builds a design reads
it as the design (no ``--config``: the default design).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from sbnn.config import SbnnConfig, load_config

if TYPE_CHECKING:  # numpy-only, but imported when a command runs, not for --help
    from sbnn.golden.qmodel import QuantizedModel

__all__ = ["SAMPLE_IMAGES", "assets_dir", "default_model_path", "default_sample_path",
           "design_config", "config_override", "load_model", "model_path", "model_from_args"]

#: Images in the embedded MNIST sample (golden/assets/mnist_test_sample.npz).
SAMPLE_IMAGES = 300


def assets_dir() -> Path:
    """The folder of the embedded default model and MNIST sample."""
    # Installed (non-editable) copies keep the assets as package data of sbnn.golden.
    import sbnn.golden

    return Path(sbnn.golden.__file__).resolve().parent / "assets"


def default_model_path() -> Path:
    """The embedded default model (QuantizedModel .npz of the default design)."""
    return assets_dir() / "default_model.npz"


def default_sample_path() -> Path:
    """The embedded 300-image MNIST test sample (.npz with images and labels)."""
    return assets_dir() / "mnist_test_sample.npz"


def design_config(args: argparse.Namespace) -> SbnnConfig:
    """The design of ``--config`` (the default design without it)."""
    return load_config(args.config)


def config_override(args: argparse.Namespace) -> SbnnConfig | None:
    """The design of ``--config``, or None: the model file's own design applies."""
    return load_config(args.config) if args.config else None


def load_model(path: Path | None, cfg: SbnnConfig | None) -> QuantizedModel:
    """The QuantizedModel at ``path`` (None: the embedded default), checked against ``cfg``
    where given."""
    from sbnn.golden.qmodel import QuantizedModel

    return QuantizedModel.load(path or default_model_path(), cfg)


def model_path(args: argparse.Namespace) -> Path:
    """The model file a command runs: ``--model``, else the embedded default."""
    return Path(args.model) if args.model else default_model_path()


def model_from_args(args: argparse.Namespace) -> QuantizedModel:
    """The ``--model`` file (default: embedded) with the ``--config`` override, if any."""
    return load_model(args.model, config_override(args))
