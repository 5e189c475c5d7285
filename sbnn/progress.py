"""Progress for long steps: what is running, how far it is, how long it took (on stderr).

Every step that can take more than a few seconds (generating Verilog, building the simulator,
simulating, checking, training) goes through :func:`step` or :func:`bar`, so a user never
stares at a silent terminal. Messages go to stderr, keeping stdout for the reports that
scripts parse. ``SBNN_PROGRESS=0`` silences them (the tests do, unless a test is about them).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

__all__ = ["enabled", "step", "bar", "note"]


def enabled() -> bool:
    return os.environ.get("SBNN_PROGRESS", "1") != "0"


def note(message: str) -> None:
    """One line of progress."""
    if enabled():
        print(f"sbnn: {message}", file=sys.stderr, flush=True)


@contextmanager
def step(what: str) -> Iterator[dict]:
    """``with step("building the simulator"):`` prints what starts and, at the end, how
    long it took; the yielded dict may get a ``detail`` to print with the time (for
    example "cached")."""
    info: dict = {}
    note(f"{what} ...")
    t0 = time.time()
    yield info
    detail = f" ({info['detail']})" if info.get("detail") else ""
    note(f"{what}: done in {time.time() - t0:.1f} s{detail}")


def bar(total: int, desc: str, unit: str = "it") -> tqdm:
    """A tqdm bar on stderr; on a terminal it redraws in place, in a log it writes a line at
    most every 5 s."""
    tty = sys.stderr.isatty()
    return tqdm(total=total, desc=f"sbnn: {desc}", unit=unit, file=sys.stderr,
                disable=not enabled(), mininterval=0.2 if tty else 5.0, dynamic_ncols=tty,
                leave=True)
