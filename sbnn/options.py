"""Range checks of command-line options, against the design and its register widths.

Every check runs before any expensive work (data loading, generation, builds, training) and
raises :class:`OptionError`: one line naming the option, the allowed range and the value.
Limits that come from the hardware are read from the same :class:`~sbnn.rtl.interfaces.Sizes`
the RTL and the manifest are built from, so the CLI refuses exactly what a register cannot
hold (the cosim would otherwise blame a correct RTL for a truncated value).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sbnn.config import SbnnConfig
from sbnn.params import parse_record_text

__all__ = ["OptionError", "SEED_MAX", "WORKERS_MAX", "MNIST_PIXELS", "MNIST_CLASSES",
           "check_int", "check_seed", "check_fraction", "margin_max", "check_margin",
           "check_mnist_design", "check_energy_file"]

#: Seeds end up in numpy and torch generators (train multiplies them by 1000 per epoch).
SEED_MAX = 2**32 - 1
#: Parallel simulator processes.
WORKERS_MAX = 256
#: What MNIST feeds a network: 28 x 28 pixels, 10 classes.
MNIST_PIXELS = 28 * 28
MNIST_CLASSES = 10


class OptionError(ValueError):
    """A command-line value is out of range; the message names the option and the range."""


def check_int(option: str, value: int | None, lo: int, hi: int, what: str = "") -> None:
    """``lo <= value <= hi`` (None = option not given: nothing to check)."""
    if value is None:
        return
    if not lo <= value <= hi:
        raise OptionError(f"{option} must be in {lo}..{hi}{what}, got {value}")


def check_seed(option: str, value: int | None, span: int = 1) -> None:
    """A seed (and the ``span - 1`` seeds after it) in 0..SEED_MAX."""
    if value is not None:
        check_int(option, value, 0, SEED_MAX - (span - 1))


def check_fraction(option: str, values: list[float]) -> None:
    """Every value a finite fraction in [0, 1]."""
    for v in values:
        if not (math.isfinite(v) and 0 <= v <= 1):
            raise OptionError(f"{option} values must be fractions in [0, 1], got {v}")


def margin_max(cfg: SbnnConfig) -> int:
    """Largest value the EXIT_MARGIN register holds (all ones = never exit)."""
    from sbnn.rtl.interfaces import Sizes

    return (1 << Sizes(cfg).margin_bits) - 1


def check_margin(option: str, values: list[int] | tuple[int, ...], cfg: SbnnConfig) -> None:
    """Exit margins the EXIT_MARGIN register can hold (it would truncate a wider one)."""
    top = margin_max(cfg)
    for v in values:
        if not 0 <= v <= top:
            raise OptionError(f"{option} must be in 0..{top} (the {top.bit_length()}-bit "
                              f"EXIT_MARGIN register of this design; {top} = never exit), "
                              f"got {v}")


def check_mnist_design(cfg: SbnnConfig, where: str) -> None:
    """A network MNIST can train: 784 inputs, at least 10 outputs."""
    if cfg.layers[0] != MNIST_PIXELS:
        raise OptionError(f"{where}: layers must start with {MNIST_PIXELS} inputs (28 x 28 "
                          f"MNIST pixels), got {list(cfg.layers)}")
    if cfg.layers[-1] < MNIST_CLASSES:
        raise OptionError(f"{where}: layers must end with at least {MNIST_CLASSES} outputs "
                          f"(one per MNIST class), got {list(cfg.layers)}")


def check_energy_file(path: Path | None) -> dict[str, Any] | None:
    """Strict parse of an ``--energy`` JSON file (no duplicate keys, NaN or infinity; an
    object of numbers); the fields themselves are checked by EnergyModel."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise OptionError(f"--energy: energy file {str(path)!r} does not exist")
    try:
        data = parse_record_text(path.read_text(), toml=False)
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OptionError(f"--energy: cannot parse energy file {str(path)!r}: {msg}") from None
    if not isinstance(data, dict):
        raise OptionError(f"--energy: {str(path)!r} must hold a JSON object of per-event "
                          f"energies (pJ), got {json.dumps(data)[:40]}")
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise OptionError(f"--energy: {str(path)!r}: '{key}' must be a finite number "
                              f">= 0 (pJ), got {value!r}")
    return data
