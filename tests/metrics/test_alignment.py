"""Alignment metrics: hand-computed cases, Krishna et al. definitions, invariances."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from trustdiff.metrics.alignment import (
    ALIGNMENT_METRICS,
    alignment_metrics,
    cosine_similarity,
    feature_agreement,
    jaccard_at_k,
    pairwise_rank_agreement,
    rank_agreement,
    rank_correlation,
    sign_agreement,
    signed_rank_agreement,
    summarize_metric,
    top_k_features,
)

# --- independent, deliberately plain implementations of the written definitions ----------


def reference_top(values: list[float], k: int) -> list[int]:
    indexed = sorted(range(len(values)), key=lambda i: (-abs(values[i]), i))
    return indexed[: min(k, len(values))]


def reference_rank(values: list[float]) -> dict[int, int]:
    return {feature: rank for rank, feature in enumerate(reference_top(values, len(values)))}


def reference_average_rank(values: list[float]) -> list[float]:
    """Rank of |value| (1 = smallest), tied magnitudes sharing the mean of their ranks."""
    magnitudes = [abs(value) for value in values]
    ranks = []
    for magnitude in magnitudes:
        below = sum(1 for other in magnitudes if other < magnitude)
        equal = sum(1 for other in magnitudes if other == magnitude)
        ranks.append(below + (equal + 1) / 2)
    return ranks


def sign(x: float) -> int:
    return (x > 0) - (x < 0)


def reference_metrics(a: list[float], b: list[float], k: int) -> dict[str, float]:
    top_a, top_b = reference_top(a, k), reference_top(b, k)
    kk = len(top_a)
    shared = set(top_a) & set(top_b)
    same_rank = [r for r in range(kk) if top_a[r] == top_b[r]]
    rank_a, rank_b = reference_rank(a), reference_rank(b)
    union = sorted(set(top_a) | set(top_b))
    pairs = list(itertools.combinations(union, 2))
    same_order = sum(1 for i, j in pairs if (rank_a[i] < rank_a[j]) == (rank_b[i] < rank_b[j]))
    d = len(a)
    ra, rb = reference_average_rank(a), reference_average_rank(b)
    spearman = 1.0 if d == 1 else float(np.corrcoef(ra, rb)[0, 1])
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norms = (sum(x * x for x in a) ** 0.5) * (sum(y * y for y in b) ** 0.5)
    return {
        "jaccard_at_k": len(shared) / len(set(top_a) | set(top_b)),
        "feature_agreement": len(shared) / kk,
        "rank_agreement": len(same_rank) / kk,
        "sign_agreement": sum(1 for f in shared if sign(a[f]) == sign(b[f])) / kk,
        "signed_rank_agreement": sum(1 for r in same_rank if sign(a[top_a[r]]) == sign(b[top_a[r]]))
        / kk,
        "rank_correlation": spearman,
        "pairwise_rank_agreement": same_order / len(pairs) if pairs else 1.0,
        "cosine_similarity": dot / norms,
    }


# --- hand-computed cases ------------------------------------------------------------------


def test_identical_vectors_agree_everywhere() -> None:
    a = np.array([0.5, -0.2, 0.0, 0.9, -0.9, 0.1])
    for k in (1, 3, 6, 50):
        assert alignment_metrics(a, a, top_k=k) == pytest.approx(
            dict.fromkeys(ALIGNMENT_METRICS, 1.0)
        )


def test_disjoint_top_sets_score_zero() -> None:
    a = np.array([5.0, 4.0, 0.1, 0.2])
    b = np.array([0.1, 0.2, 5.0, 4.0])
    metrics = alignment_metrics(a, b, top_k=2)
    for name in (
        "jaccard_at_k",
        "feature_agreement",
        "rank_agreement",
        "sign_agreement",
        "signed_rank_agreement",
    ):
        assert metrics[name] == 0.0
    # Ranks by |a| are [0, 1, 3, 2], by |b| [3, 2, 0, 1]: fully reversed.
    assert metrics["rank_correlation"] == pytest.approx(-1.0)


def test_sign_flip_keeps_ranks_but_breaks_sign_agreement() -> None:
    a = np.array([3.0, -2.0, 1.0, 0.5])
    metrics = alignment_metrics(a, -a, top_k=3)
    assert metrics["jaccard_at_k"] == 1.0
    assert metrics["rank_agreement"] == 1.0
    assert metrics["rank_correlation"] == 1.0
    assert metrics["pairwise_rank_agreement"] == 1.0
    assert metrics["sign_agreement"] == 0.0
    assert metrics["signed_rank_agreement"] == 0.0
    assert metrics["cosine_similarity"] == pytest.approx(-1.0)


def test_partial_overlap_by_hand() -> None:
    a = np.array([0.9, 0.8, -0.7, 0.0, 0.0])  # top-3: 0, 1, 2
    b = np.array([0.9, 0.0, 0.7, 0.8, 0.0])  # top-3: 0, 3, 2
    assert jaccard_at_k(a, b, top_k=3) == pytest.approx(2 / 4)
    assert feature_agreement(a, b, top_k=3) == pytest.approx(2 / 3)
    assert rank_agreement(a, b, top_k=3) == pytest.approx(2 / 3)  # ranks 1 and 3 match
    assert sign_agreement(a, b, top_k=3) == pytest.approx(1 / 3)  # feature 2 flips sign
    assert signed_rank_agreement(a, b, top_k=3) == pytest.approx(1 / 3)


def test_ties_are_broken_by_position() -> None:
    a = np.array([1.0, -1.0, 1.0, 0.5])
    assert top_k_features(a, k=4).tolist() == [0, 1, 2, 3]
    assert top_k_features(np.zeros(3), k=2).tolist() == [0, 1]
    # Constant vectors rank identically, so they agree with each other entirely.
    assert rank_correlation(np.zeros(4), np.ones(4)) == 1.0
    assert jaccard_at_k(np.zeros(4), np.ones(4), top_k=2) == 1.0


def test_k_larger_than_d_uses_d() -> None:
    a = np.array([0.3, -0.1])
    b = np.array([0.1, 0.3])
    assert top_k_features(a, k=10).tolist() == [0, 1]
    assert jaccard_at_k(a, b, top_k=10) == 1.0
    assert feature_agreement(a, b, top_k=10) == 1.0
    assert rank_agreement(a, b, top_k=10) == 0.0
    assert pairwise_rank_agreement(a, b, top_k=10) == 0.0


def test_single_feature() -> None:
    metrics = alignment_metrics([0.4], [-0.2], top_k=10)
    assert metrics["jaccard_at_k"] == 1.0
    assert metrics["rank_correlation"] == 1.0
    assert metrics["pairwise_rank_agreement"] == 1.0
    assert metrics["sign_agreement"] == 0.0


def test_cosine_zero_vectors() -> None:
    assert cosine_similarity(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine_similarity(np.zeros(3), np.array([1.0, 0.0, 0.0])) == 0.0


# --- independent references on random vectors ---------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_matches_plain_krishna_definitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = int(rng.integers(1, 25))
    k = int(rng.integers(1, 12))
    a = rng.normal(size=d)
    # Correlated second explanation, with some exact ties and sign flips to exercise the rules.
    b = a + rng.normal(scale=0.7, size=d)
    if d > 3:
        b[rng.integers(0, d)] = 0.0
        a[:2] = np.round(a[:2], 1)
    expected = reference_metrics(a.tolist(), b.tolist(), k)
    assert alignment_metrics(a, b, top_k=k) == pytest.approx(expected, abs=1e-12)


def test_rank_correlation_is_spearman_without_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        a, b = rng.normal(size=(2, 15))
        expected = stats.spearmanr(np.abs(a), np.abs(b)).statistic
        assert rank_correlation(a, b) == pytest.approx(expected, abs=1e-12)


def test_rank_correlation_averages_tied_ranks_like_scipy() -> None:
    # Position tie-breaking ranked the two zeros of b apart and gave +0.5: the sign flipped.
    assert rank_correlation([-0.43, 0.0, 0.0], [0.0, 0.39, 0.0]) == pytest.approx(-0.5)
    rng = np.random.default_rng(7)
    for _ in range(50):
        d = int(rng.integers(3, 20))
        # Few distinct magnitudes (and signs), so most vectors hold ties, some many.
        a = rng.integers(-3, 4, size=d) * 0.25
        b = rng.integers(-2, 3, size=d) * 0.5
        if np.ptp(np.abs(a)) == 0 or np.ptp(np.abs(b)) == 0:
            continue
        expected = stats.spearmanr(np.abs(a), np.abs(b)).statistic
        assert rank_correlation(a, b) == pytest.approx(expected, abs=1e-12)


def test_rank_correlation_of_constant_magnitudes() -> None:
    # scipy gives NaN here; ours is defined: all-tied against all-tied is the same ranking,
    # all-tied against a ranking carries no association.
    assert rank_correlation(np.zeros(4), np.ones(4)) == 1.0
    assert rank_correlation([1.0, -1.0, 1.0], [0.5, 0.5, -0.5]) == 1.0
    assert rank_correlation(np.zeros(4), [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert rank_correlation([0.4, 0.3, 0.2, 0.1], -np.ones(4)) == 0.0


# --- invariances, validation --------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALIGNMENT_METRICS))
def test_symmetry_and_scale_invariance(name: str) -> None:
    function, (low, high) = ALIGNMENT_METRICS[name]
    rng = np.random.default_rng(11)
    for _ in range(10):
        a, b = rng.normal(size=(2, 9))
        value = function(a, b, top_k=4)
        assert low <= value <= high
        assert function(b, a, top_k=4) == pytest.approx(value)
        assert function(3.0 * a, 0.5 * b, top_k=4) == pytest.approx(value)


@pytest.mark.parametrize("name", sorted(ALIGNMENT_METRICS))
def test_feature_permutation_invariance(name: str) -> None:
    # Relabelling the features the same way in both vectors changes nothing (no ties here).
    function, _ = ALIGNMENT_METRICS[name]
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(2, 12))
    permutation = rng.permutation(12)
    assert function(a[permutation], b[permutation], top_k=5) == pytest.approx(
        function(a, b, top_k=5)
    )


@pytest.mark.parametrize("name", sorted(ALIGNMENT_METRICS))
def test_invalid_inputs_raise(name: str) -> None:
    function, _ = ALIGNMENT_METRICS[name]
    with pytest.raises(ValueError, match="shapes differ"):
        function(np.ones(3), np.ones(4), top_k=2)
    with pytest.raises(ValueError, match="NaN"):
        function(np.array([1.0, np.nan]), np.ones(2), top_k=2)
    with pytest.raises(ValueError, match="empty"):
        function(np.array([]), np.array([]), top_k=2)
    with pytest.raises(ValueError, match="1-D"):
        function(np.ones((2, 2)), np.ones((2, 2)), top_k=2)


def test_invalid_top_k_raises() -> None:
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="top_k"):
            alignment_metrics(np.ones(3), np.ones(3), top_k=k)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_k"):
        top_k_features(np.ones(3), k=0)


# --- summaries ----------------------------------------------------------------------------


def test_summary_statistics_and_histogram() -> None:
    values = np.array([0.0, 0.25, 0.5, 1.0, 1.0])
    summary = summarize_metric(values, n_resamples=200, confidence_level=0.9, seed=1, bins=4)
    assert summary.mean == pytest.approx(0.55)
    assert summary.median == pytest.approx(0.5)
    assert summary.n == 5
    assert summary.ci_low is not None and summary.ci_high is not None and summary.mean is not None
    assert 0.0 <= summary.ci_low <= summary.mean <= summary.ci_high <= 1.0
    assert summary.histogram.edges == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert summary.histogram.counts == [1, 1, 1, 2]  # 1.0 lands in the last, closed bin
    again = summarize_metric(values, n_resamples=200, confidence_level=0.9, seed=1, bins=4)
    assert again == summary


def test_summary_signed_range_and_edge_cases() -> None:
    summary = summarize_metric(
        [-1.0, 0.0, 1.0], n_resamples=0, seed=0, bins=2, value_range=(-1.0, 1.0)
    )
    assert summary.histogram.counts == [1, 2]
    assert summary.ci_low is None and summary.ci_high is None
    empty = summarize_metric([], n_resamples=100, seed=0)
    assert empty.mean is None and empty.n == 0 and sum(empty.histogram.counts) == 0
    with pytest.raises(ValueError, match="NaN"):
        summarize_metric([0.1, float("nan")], seed=0)
    with pytest.raises(ValueError, match="outside"):
        summarize_metric([-0.5], seed=0)


def test_values_on_a_bin_edge_go_to_the_bin_above() -> None:
    # Every tenth that agreement@10 takes sits on an edge; float edges used to drop some a bin.
    summary = summarize_metric([0.3, 0.6, 0.7], n_resamples=0)
    assert summary.histogram.counts == [0, 0, 0, 1, 0, 0, 1, 1, 0, 0]
    tenths = [i / 10 for i in range(11)]
    assert summarize_metric(tenths, n_resamples=0).histogram.counts == [1] * 9 + [2]
    signed = summarize_metric(
        [-0.6, -0.2, 0.2, 0.6], n_resamples=0, bins=5, value_range=(-1.0, 1.0)
    )
    assert signed.histogram.counts == [0, 1, 1, 1, 1]
    thirds = summarize_metric([1 / 3, 2 / 3], n_resamples=0, bins=3)
    assert thirds.histogram.counts == [0, 1, 1]
