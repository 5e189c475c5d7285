"""Exact McNemar test and binomial standard errors against values worked out by hand."""

import math

import numpy as np
import pytest

from sbnn.studies.stats import (
    Disagreements,
    binomial_se_pct,
    disagreements,
    mcnemar_exact_p,
    mean_and_std,
)


@pytest.mark.parametrize("only_a, only_b, p", [
    (0, 0, 1.0),            # never disagree: nothing against the null
    (0, 5, 2 / 32),         # 2 * P(X = 0), X ~ Bin(5, 1/2) = 2 * 1/32
    (1, 4, 2 * 6 / 32),     # 2 * (C(5,0) + C(5,1)) / 2^5
    (4, 1, 2 * 6 / 32),     # symmetric in A and B
    (1, 9, 2 * 11 / 1024),  # 2 * (1 + 10) / 2^10 = 0.0215: significant at 5 %
    (2, 2, 1.0),            # 2 * P(X <= 2), X ~ Bin(4, 1/2) = 2 * 11/16, capped at 1
    (3, 0, 2 / 8),          # 2 * 1/8
])
def test_mcnemar_small_cases_by_hand(only_a, only_b, p):
    assert mcnemar_exact_p(only_a, only_b) == pytest.approx(p, rel=1e-12)


def test_mcnemar_issue_example_43_against_45():
    # issue 16: case (i) and case (ii) disagree on 88 images, 43 against 45: p = 0.92
    assert round(mcnemar_exact_p(43, 45), 2) == 0.92
    # the tail summed by hand from the binomial recurrence C(n, i+1) = C(n, i) (n-i)/(i+1)
    term, tail = 1.0, 1.0
    for i in range(43):
        term *= (88 - i) / (i + 1)
        tail += term
    assert mcnemar_exact_p(43, 45) == pytest.approx(2 * tail / 2 ** 88, rel=1e-9)


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError, match=">= 0"):
        mcnemar_exact_p(-1, 3)


def test_binomial_se_of_the_issue_example():
    # 0.9 % on 10,000 images: sqrt(0.009 * 0.991 / 10000) = 0.000944 -> 0.094 pp
    assert binomial_se_pct(0.9, 10000) == pytest.approx(0.0944404574, rel=1e-6)
    assert binomial_se_pct(50.0, 100) == pytest.approx(5.0)  # sqrt(.25 / 100) = 0.05
    assert binomial_se_pct(0.0, 10) == 0.0
    with pytest.raises(ValueError, match="images"):
        binomial_se_pct(1.0, 0)
    with pytest.raises(ValueError, match="0..100"):
        binomial_se_pct(101.0, 10)


def test_disagreements_count_only_one_sided_errors():
    labels = np.array([0, 1, 2, 3, 4, 5])
    a = np.array([0, 1, 2, 9, 9, 5])  # wrong on images 3, 4
    b = np.array([0, 9, 2, 3, 9, 9])  # wrong on images 1, 4, 5
    d = disagreements(a, b, labels)
    # A alone right on 1 and 5; B alone right on 3; both wrong on 4 does not count
    assert (d.only_a, d.only_b, d.images) == (2, 1, 6)
    assert d.p_value == pytest.approx(1.0)  # 2 * (1 + 3) / 8 = 1, capped
    pooled = d + Disagreements(5, 0, 10)
    assert (pooled.only_a, pooled.only_b, pooled.images) == (7, 1, 16)
    assert pooled.to_dict()["p"] == pytest.approx(2 * 9 / 256)  # 2 * (1 + 8) / 2^8
    with pytest.raises(ValueError, match="paired"):
        disagreements(a[:3], b, labels)


def test_mean_and_sample_std():
    assert mean_and_std([]) == (None, None)
    assert mean_and_std([0.9]) == (0.9, None)  # one seed: no spread to report
    mean, std = mean_and_std([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9)
    assert std == pytest.approx(math.sqrt((0.01 + 0 + 0.01) / 2))
