"""Statistics of the results table: the exact McNemar test on paired predictions and the
binomial standard error of an error rate (closed forms, no scipy).

McNemar's test asks whether two classifiers that saw the same test images err equally
often. Only the images on which exactly one of them is right carry information: with
``only_a`` images that only A gets right and ``only_b`` that only B gets right, under the
null hypothesis each such image is a fair coin, so the smaller count is binomial
(n = only_a + only_b, p = 1/2) and the exact two-sided p-value is twice its lower tail,
capped at 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Disagreements", "binomial_se_pct", "disagreements", "mcnemar_exact_p",
           "mean_and_std"]


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value from the two disagreement counts.

    ``only_a``: images classifier A gets right and B wrong; ``only_b``: the reverse.
    p = min(1, 2 * P(X <= min(only_a, only_b))) with X ~ Binomial(only_a + only_b, 1/2);
    1.0 when the classifiers never disagree.
    """
    if only_a < 0 or only_b < 0:
        raise ValueError(f"disagreement counts must be >= 0, got {only_a} and {only_b}")
    n = only_a + only_b
    if n == 0:
        return 1.0
    low = min(only_a, only_b)
    # Exact integers: the tail's numerator, over 2**n, divided once at the end.
    tail = sum(math.comb(n, i) for i in range(low + 1))
    return min(1.0, 2 * tail / 2 ** n)


def binomial_se_pct(error_pct: float, images: int) -> float:
    """Binomial standard error (percentage points) of an error rate measured on ``images``
    independent images: 100 * sqrt(p (1 - p) / n) with p = error_pct / 100."""
    if images <= 0:
        raise ValueError(f"images must be >= 1, got {images}")
    p = error_pct / 100
    if not 0 <= p <= 1:
        raise ValueError(f"error_pct must be in 0..100, got {error_pct}")
    return 100 * math.sqrt(p * (1 - p) / images)


@dataclass(frozen=True)
class Disagreements:
    """Paired outcome counts of classifiers A and B on the same labelled images."""

    only_a: int  # images A classifies right and B wrong
    only_b: int  # images B classifies right and A wrong
    images: int  # images compared

    @property
    def p_value(self) -> float:
        """Exact two-sided McNemar p-value of these counts."""
        return mcnemar_exact_p(self.only_a, self.only_b)

    def __add__(self, other: Disagreements) -> Disagreements:
        return Disagreements(self.only_a + other.only_a, self.only_b + other.only_b,
                             self.images + other.images)

    def to_dict(self) -> dict:
        """The counts and their p-value, for results.json."""
        return {"only_a_right": self.only_a, "only_b_right": self.only_b,
                "images": self.images, "p": self.p_value}


def disagreements(pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray) -> Disagreements:
    """The McNemar counts of two prediction vectors on the same ``labels``."""
    pred_a, pred_b, labels = (np.asarray(v) for v in (pred_a, pred_b, labels))
    if not pred_a.shape == pred_b.shape == labels.shape:
        raise ValueError(f"predictions {pred_a.shape}, {pred_b.shape} and labels "
                         f"{labels.shape} must be paired (same shape)")
    right_a, right_b = pred_a == labels, pred_b == labels
    return Disagreements(int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum()),
                         int(labels.size))


def mean_and_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1) of ``values``; std is None with fewer
    than two values, both None with none."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)
