"""Per-instance KL and Jensen–Shannon distance: hand-computed, then scipy; the tail summary."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy

from trustdiff.metrics.divergence import (
    KL_EPSILON,
    jensen_shannon_distance_per_instance,
    kl_divergence_per_instance,
    largest,
    tail_summary,
)


def test_kl_by_hand() -> None:
    reference = [[0.5, 0.5], [1.0, 0.0], [0.2, 0.8]]
    candidate = [[0.25, 0.75], [0.5, 0.5], [0.2, 0.8]]
    expected = [
        0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75),  # 0.143841
        math.log(2.0),  # the zero term of the reference adds nothing
        0.0,
    ]
    np.testing.assert_allclose(
        kl_divergence_per_instance(reference, candidate), expected, atol=1e-15
    )


def test_kl_is_finite_where_the_candidate_rules_a_class_out() -> None:
    value = kl_divergence_per_instance([[1.0, 0.0]], [[0.0, 1.0]])
    assert value[0] == pytest.approx(-math.log(KL_EPSILON))
    assert kl_divergence_per_instance([[1.0, 0.0]], [[0.0, 1.0]], epsilon=1e-3)[0] == (
        pytest.approx(-math.log(1e-3))
    )


def test_kl_is_asymmetric() -> None:
    forward = kl_divergence_per_instance([[0.9, 0.1]], [[0.5, 0.5]])[0]
    backward = kl_divergence_per_instance([[0.5, 0.5]], [[0.9, 0.1]])[0]
    assert forward != pytest.approx(backward)


def test_jensen_shannon_distance_by_hand() -> None:
    # Disjoint supports: JSD₂ = 1, distance 1. Identical rows: 0.
    np.testing.assert_allclose(
        jensen_shannon_distance_per_instance([[1.0, 0.0], [0.3, 0.7]], [[0.0, 1.0], [0.3, 0.7]]),
        [1.0, 0.0],
        atol=1e-12,
    )
    # p = (1, 0), q = (½, ½): m = (¾, ¼); JSD₂ = ½ log₂(4/3) + ½ (½ log₂(2/3) + ½ log₂ 2).
    jsd = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5)
    assert jensen_shannon_distance_per_instance([[1.0, 0.0]], [[0.5, 0.5]])[0] == pytest.approx(
        math.sqrt(jsd)
    )


@pytest.mark.parametrize("n_classes", [2, 3, 7])
def test_against_scipy(n_classes: int) -> None:
    rng = np.random.default_rng(n_classes)
    reference = rng.dirichlet(np.ones(n_classes), size=50)
    candidate = rng.dirichlet(np.full(n_classes, 0.5), size=50)
    # Zeros in the reference exercise 0·log 0 = 0 (scipy's convention too).
    reference[:5, 0] = 0.0
    reference[:5] /= reference[:5].sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        kl_divergence_per_instance(reference, candidate),
        [entropy(p, q) for p, q in zip(reference, candidate, strict=True)],
        rtol=1e-10,
        atol=1e-14,
    )
    np.testing.assert_allclose(
        jensen_shannon_distance_per_instance(reference, candidate),
        [jensenshannon(p, q, base=2) for p, q in zip(reference, candidate, strict=True)],
        rtol=1e-10,
        atol=1e-12,
    )


def test_kl_epsilon_is_validated() -> None:
    with pytest.raises(ValueError, match="epsilon must be in"):
        kl_divergence_per_instance([[0.5, 0.5]], [[0.5, 0.5]], epsilon=0.0)


def test_tail_summary_by_hand() -> None:
    values = np.arange(101, dtype=float) / 100  # 0.00, 0.01, ..., 1.00
    summary = tail_summary(values, n_bins=4)
    assert summary.mean == pytest.approx(0.5)
    assert summary.median == pytest.approx(0.5)
    assert summary.p90 == pytest.approx(0.9)
    assert summary.p99 == pytest.approx(0.99)
    assert summary.max == 1.0
    assert summary.histogram_edges == (0.0, 0.25, 0.5, 0.75, 1.0)
    # [0, .25) holds 0.00..0.24; the last bin includes 1.00.
    assert summary.histogram_counts == (25, 25, 25, 26)


def test_tail_summary_of_all_zeros_and_a_fixed_range() -> None:
    summary = tail_summary([0.0, 0.0], n_bins=2)
    assert summary.histogram_edges == (0.0, 0.5, 1.0)
    assert summary.histogram_counts == (2, 0)
    assert tail_summary([0.2, 0.7], n_bins=2, value_range=(0.0, 1.0)).histogram_counts == (1, 1)


@pytest.mark.parametrize(
    ("values", "match"),
    [([], "empty"), ([0.1, np.nan], "NaN"), ([-0.1], "negative"), ([[0.1]], "1-D")],
)
def test_tail_summary_refuses_bad_values(values: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tail_summary(values)


def test_largest_orders_ties_by_position() -> None:
    assert largest([0.1, 0.5, 0.3, 0.5], count=3).tolist() == [1, 3, 2]
    assert largest([0.1], count=10).tolist() == [0]
    with pytest.raises(ValueError, match="count must be"):
        largest([0.1], count=-1)
