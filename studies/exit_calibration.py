"""The confidence exit calibrated on the validation split.

After every pass but the last, the controller stops an inference whose top-two output margin
(integer logits, pass p's own thresholds) reaches the EXIT_MARGIN register. A small margin
exits early often (few cycles, more errors); the register's all-ones value never exits.

:func:`exit_curve` gives the error and mean cycles of every candidate margin from one run
of the hardware-exact path (every pass's logits are kept, so each margin is a selection,
not a rerun). :func:`choose_exit_margin` picks the margin with the fewest mean cycles that
passes one of two rules (:class:`ExitCriterion`), ``tolerance_pp`` its allowance:

* ``agreement`` (the default): the exit changes at most ``tolerance_pp`` % of the validation
  answers of the full budget. An exit's error can exceed the full budget's by no more than
  the share of answers it changes, so this bounds the error cost on the validation images
  themselves, and the count of changed answers is measured directly instead of as the
  difference of two noisy error rates.
* ``error``: the validation error is within ``tolerance_pp`` of the full budget's. On the
  large models the validation split barely tells budget 0 from budget 1 (case (i) seed 0:
  1.15 % against 1.13 %), so this rule exits after the base pass almost always and the
  test set pays up to +0.13 pp (docs/results.md, "Anytime").

The choice reads the validation split only; ``sbnn eval``/``nox -s results`` then measure
the chosen margin once on the test set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum

import numpy as np

from sbnn.golden.hwpath import margins, run_hw, schedule
from sbnn.golden.qmodel import QuantizedModel

__all__ = ["ExitCriterion", "ExitPoint", "exit_curve", "choose_exit_margin", "exit_outcome",
           "MAX_CANDIDATES", "DEFAULT_TOLERANCE_PP"]


class ExitCriterion(str, Enum):
    """What ``tolerance_pp`` bounds when a margin is chosen (see the module docstring)."""

    #: share of the full budget's answers the exit changes
    AGREEMENT = "agreement"
    #: the exit's error above the full budget's
    ERROR = "error"


#: Per criterion, the default allowance in percentage points: the agreement rule keeps every
#: validation answer (its cheapest zero-change margin still saves 54 to 58 % of the cycles
#: on the large models); the error rule allows the issue's +0.05 pp.
DEFAULT_TOLERANCE_PP = {ExitCriterion.AGREEMENT: 0.0, ExitCriterion.ERROR: 0.05}

#: At most this many candidate margins are scored (quantiles of the observed margins when
#: there are more distinct values): the curve is smooth at that resolution.
MAX_CANDIDATES = 2048


@dataclass(frozen=True)
class ExitPoint:
    """One exit margin's outcome on a set of images."""

    #: None: no exit (every image runs the whole budget)
    exit_margin: int | None
    error_pct: float
    mean_cycles: float
    #: share of the images that stopped before the budget's last pass
    exit_early_pct: float
    #: share of the images whose answer differs from the full budget's (no exit)
    changed_pct: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _exit_passes(pass_margins: list[np.ndarray], passes: tuple[int, ...],
                 margin: int) -> np.ndarray:
    """Per image, the pass it stops after with EXIT_MARGIN = ``margin`` (the controller's
    rule: the first pass before the last whose margin reaches it)."""
    exit_pass = np.full(len(pass_margins[0]), passes[-1])
    decided = np.zeros(len(exit_pass), dtype=bool)
    for p, m in zip(passes[:-1], pass_margins):
        hit = ~decided & (m >= margin)
        exit_pass[hit] = p
        decided |= hit
    return exit_pass


def _candidates(pass_margins: list[np.ndarray], top: int) -> list[int]:
    """Every margin at which some image's decision changes (an observed margin value), up
    to ``top`` (exclusive: all ones never exits), thinned to :data:`MAX_CANDIDATES`."""
    values = np.unique(np.concatenate(pass_margins)) if pass_margins else np.array([0])
    values = values[(values >= 0) & (values < top)]
    values = np.unique(np.concatenate([[0], values, values + 1]))
    values = values[values < top]
    if len(values) > MAX_CANDIDATES:
        values = np.unique(np.quantile(values, np.linspace(0, 1, MAX_CANDIDATES)).round())
    return [int(v) for v in values]


def exit_curve(model: QuantizedModel, pixels: np.ndarray, labels: np.ndarray,
               budget: int | None = None, candidates: list[int] | None = None,
               top: int | None = None) -> list[ExitPoint]:
    """Error and mean cycles at ``budget`` (None: K) for no exit and every candidate margin
    (default: every margin at which a decision changes, below ``top``, the never-exit value
    of the EXIT_MARGIN register)."""
    from sbnn.options import margin_max

    cfg = model.config
    budget = cfg.num_supports if budget is None else budget
    top = margin_max(cfg) if top is None else top
    res = run_hw(model, pixels, budget, exit_margin=None)
    sched = schedule(model, budget)
    passes = sched.passes
    cycles = np.array([sched.total_cycles(p) for p in passes], dtype=np.float64)
    pass_margins = [margins(res.pass_logits[p]) for p in passes[:-1]]
    stacked = np.stack([res.pass_logits[p].argmax(axis=1) for p in passes])
    n = len(labels)
    points = [ExitPoint(None, _pct(stacked[-1] != labels), float(cycles[-1]), 0.0, 0.0)]
    for margin in (candidates if candidates is not None else _candidates(pass_margins, top)):
        exit_pass = _exit_passes(pass_margins, passes, margin) if pass_margins else \
            np.full(n, passes[-1])
        idx = np.searchsorted(passes, exit_pass)
        classes = stacked[idx, np.arange(n)]
        points.append(ExitPoint(int(margin), _pct(classes != labels),
                                round(float(cycles[idx].mean()), 2),
                                _pct(exit_pass < passes[-1]), _pct(classes != stacked[-1])))
    return points


def _pct(flags: np.ndarray) -> float:
    return round(float(np.mean(flags) * 100), 4)


def choose_exit_margin(curve: list[ExitPoint], tolerance_pp: float,
                       criterion: ExitCriterion = ExitCriterion.AGREEMENT) -> ExitPoint:
    """The point with the fewest mean cycles that passes ``criterion`` with allowance
    ``tolerance_pp``: at most that share of the answers changed (agreement), or an error at
    most the no-exit error plus it (error). Ties: the larger margin, the safer one. The
    no-exit point qualifies always, so there is an answer."""
    full = next(p for p in curve if p.exit_margin is None)
    if ExitCriterion(criterion) is ExitCriterion.AGREEMENT:
        fits = [p for p in curve if p.changed_pct <= tolerance_pp + 1e-9]
    else:
        fits = [p for p in curve if p.error_pct <= full.error_pct + tolerance_pp + 1e-9]
    return min(fits, key=lambda p: (p.mean_cycles,
                                    -(p.exit_margin if p.exit_margin is not None else 1 << 62)))


def exit_outcome(model: QuantizedModel, pixels: np.ndarray, labels: np.ndarray,
                 margin: int | None, budget: int | None = None) -> ExitPoint:
    """The outcome of one margin (the test-set measurement of a calibrated margin)."""
    curve = exit_curve(model, pixels, labels, budget, [] if margin is None else [margin])
    return curve[-1]
