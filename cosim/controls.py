"""The random-controls run's draws: one sequence for every bench that replays it.

The per-cycle bench, the variability bench and the fast engine all run images under random
runtime controls, with no regeneration: every 4 images a new support mask (column-enable
words) and exit margin through ``prog``, and a budget with each image on the pixel stream.
They draw them here, so that a seed means the same run on every engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from sbnn.gen.image import build_image
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl.interfaces import ProgOp

__all__ = ["RandomControl", "random_controls"]


@dataclass(frozen=True)
class RandomControl:
    """The controls one image runs under."""

    image: int
    #: Ops to send before the image (new column-enable words, then the exit margin); empty
    #: when the previous image's controls still hold.
    prog: tuple[tuple[ProgOp, int, int], ...]
    model: QuantizedModel  # the model with the support mask in force
    margin: int  # exit margin in force
    budget: int  # sent with the image on the pixel stream


def random_controls(model: QuantizedModel, count: int, seed: int) -> Iterator[RandomControl]:
    """Controls for images ``0 .. count-1`` drawn from ``seed`` (lazily: a bench may stop)."""
    rng = np.random.default_rng(seed)
    current, margin = model, 0
    for i in range(count):
        prog: tuple = ()
        if i % 4 == 0:
            keep = rng.random()
            current = model.with_mask(tuple(rng.random(mk.shape) < keep
                                            for mk in model.support_mask))
            margin = int(rng.integers(0, 40))
            prog = tuple(op for op in build_image(current).program()
                         if op[0] == ProgOp.COL_MASK) + ((ProgOp.EXIT_MARGIN, 0, margin),)
        budget = int(rng.integers(0, model.config.num_supports + 1))
        yield RandomControl(i, prog, current, margin, budget)
