"""Alignment metrics between two attribution vectors over the same word features."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trustdiff.metrics._checks import check_integer
from trustdiff.metrics.bootstrap import bootstrap_mean_interval
from trustdiff.result import Histogram, MetricSummary

FloatVector = NDArray[np.float64]

UNIT_RANGE = (0.0, 1.0)
SIGNED_RANGE = (-1.0, 1.0)


def _validated_pair(
    attributions_a: ArrayLike, attributions_b: ArrayLike
) -> tuple[FloatVector, FloatVector]:
    a = np.asarray(attributions_a, dtype=np.float64)
    b = np.asarray(attributions_b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"attributions must be 1-D, got shapes {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise ValueError(f"attribution shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("attributions are empty: an explanation needs at least one feature")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("attributions contain NaN or infinite values")
    return a, b


def _ranks(attributions: FloatVector) -> NDArray[np.intp]:
    """Rank of each feature (0 = most important) by |attribution|, ties broken by position."""
    order = np.lexsort((np.arange(attributions.size), -np.abs(attributions)))
    ranks = np.empty(attributions.size, dtype=np.intp)
    ranks[order] = np.arange(attributions.size)
    return ranks


def top_k_features(attributions: ArrayLike, *, k: int) -> NDArray[np.intp]:
    """The indices of the `min(k, d)` most important features, most important first.

    `attributions` has shape (d,). Importance is |attribution|; equal magnitudes are ordered
    by position, lower index first, so the result is a deterministic function of the vector.
    """
    vector = np.asarray(attributions, dtype=np.float64)
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(f"attributions must be a non-empty 1-D array, got shape {vector.shape}")
    if not np.isfinite(vector).all():
        raise ValueError("attributions contain NaN or infinite values")
    k = check_integer(k, name="top_k", minimum=1)
    order = np.lexsort((np.arange(vector.size), -np.abs(vector)))
    return order[: min(k, vector.size)]


def jaccard_at_k(attributions_a: ArrayLike, attributions_b: ArrayLike, *, top_k: int) -> float:
    """`|T_a ∩ T_b| / |T_a ∪ T_b|` of the two top-k feature sets; shapes (d,), in [0, 1]."""
    a, b = _validated_pair(attributions_a, attributions_b)
    top_a = set(top_k_features(a, k=top_k).tolist())
    top_b = set(top_k_features(b, k=top_k).tolist())
    return len(top_a & top_b) / len(top_a | top_b)


def feature_agreement(attributions_a: ArrayLike, attributions_b: ArrayLike, *, top_k: int) -> float:
    """Krishna et al. 2022 feature agreement: `|T_a ∩ T_b| / k`, `k = min(top_k, d)`."""
    a, b = _validated_pair(attributions_a, attributions_b)
    top_a = top_k_features(a, k=top_k)
    top_b = top_k_features(b, k=top_k)
    return len(set(top_a.tolist()) & set(top_b.tolist())) / top_a.size


def rank_agreement(attributions_a: ArrayLike, attributions_b: ArrayLike, *, top_k: int) -> float:
    """Krishna et al. rank agreement: the fraction of the k ranks holding the same feature."""
    a, b = _validated_pair(attributions_a, attributions_b)
    top_a = top_k_features(a, k=top_k)
    top_b = top_k_features(b, k=top_k)
    return float(np.mean(top_a == top_b))


def sign_agreement(attributions_a: ArrayLike, attributions_b: ArrayLike, *, top_k: int) -> float:
    """Krishna et al. sign agreement: shared top-k features with the same sign, over k.

    Signs compare with `numpy.sign`, so a zero attribution agrees only with another zero.
    """
    a, b = _validated_pair(attributions_a, attributions_b)
    top_a = top_k_features(a, k=top_k)
    shared = set(top_a.tolist()) & set(top_k_features(b, k=top_k).tolist())
    agreeing = sum(1 for feature in shared if np.sign(a[feature]) == np.sign(b[feature]))
    return agreeing / top_a.size


def signed_rank_agreement(
    attributions_a: ArrayLike, attributions_b: ArrayLike, *, top_k: int
) -> float:
    """Krishna et al. signed rank agreement: same feature at the same rank with the same sign."""
    a, b = _validated_pair(attributions_a, attributions_b)
    top_a = top_k_features(a, k=top_k)
    top_b = top_k_features(b, k=top_k)
    same = (top_a == top_b) & (np.sign(a[top_a]) == np.sign(b[top_a]))
    return float(np.mean(same))


def _average_ranks(values: FloatVector) -> FloatVector:
    """Rank of each value in ascending order (1 = smallest); tied values share their mean rank."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # Positions in the sorted order where a run of equal values starts, plus the end.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1], True])
    run_lengths = np.diff(starts)
    mean_ranks = starts[:-1] + (run_lengths + 1) / 2.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_ranks, run_lengths)
    return ranks


def rank_correlation(attributions_a: ArrayLike, attributions_b: ArrayLike) -> float:
    """Spearman correlation of |attribution| over all d features, in [−1, 1].

    The Pearson correlation of the two rank vectors, tied magnitudes sharing their average
    rank — equal to `scipy.stats.spearmanr(|a|, |b|)` wherever that is defined. (Breaking ties
    by position instead, as the top-k metrics do, can flip the sign when many attributions are
    exactly 0.) When a vector's magnitudes are all equal its ranks are constant and Pearson is
    0/0, where scipy returns NaN; we define: both constant (this includes d = 1) → 1.0, the same
    ranking; one constant → 0.0, no association.
    """
    a, b = _validated_pair(attributions_a, attributions_b)
    ranks_a = _average_ranks(np.abs(a))
    ranks_b = _average_ranks(np.abs(b))
    centred_a = ranks_a - ranks_a.mean()
    centred_b = ranks_b - ranks_b.mean()
    spread_a = float(np.dot(centred_a, centred_a))
    spread_b = float(np.dot(centred_b, centred_b))
    if spread_a == 0.0 and spread_b == 0.0:
        return 1.0
    if spread_a == 0.0 or spread_b == 0.0:
        return 0.0
    # Rounding can push |ρ| a hair past 1; clip so histograms over [−1, 1] hold every value.
    correlation = np.dot(centred_a, centred_b) / np.sqrt(spread_a * spread_b)
    return float(np.clip(correlation, -1.0, 1.0))


def pairwise_rank_agreement(
    attributions_a: ArrayLike, attributions_b: ArrayLike, *, top_k: int
) -> float:
    """Krishna et al. pairwise rank agreement over `F = T_a ∪ T_b`, in [0, 1].

    The fraction of unordered pairs {i, j} ⊂ F whose relative order by |attribution| (ties
    broken by position) is the same in both explanations. Krishna et al. leave the feature set
    F to the user; we take the union of the two top-k sets, so the metric, like the other
    "@k" ones, judges the features either explanation deems important — over all d features
    the many near-zero words of a long text would dominate (all d is what `rank_correlation`
    already covers). With fewer than two features in F there is no pair to disagree: 1.0.
    """
    a, b = _validated_pair(attributions_a, attributions_b)
    union = np.union1d(top_k_features(a, k=top_k), top_k_features(b, k=top_k))
    if union.size < 2:
        return 1.0
    ranks_a = _ranks(a)[union]
    ranks_b = _ranks(b)[union]
    upper = np.triu_indices(union.size, k=1)
    order_a = np.sign(ranks_a[:, None] - ranks_a[None, :])[upper]
    order_b = np.sign(ranks_b[:, None] - ranks_b[None, :])[upper]
    return float(np.mean(order_a == order_b))


def cosine_similarity(attributions_a: ArrayLike, attributions_b: ArrayLike) -> float:
    """Cosine of the signed vectors, in [−1, 1].

    Two all-zero vectors are identical explanations (1.0); one all-zero vector against a
    non-zero one shares no direction (0.0).
    """
    a, b = _validated_pair(attributions_a, attributions_b)
    norm_a = float(np.linalg.norm(a))
    norm_b = float(np.linalg.norm(b))
    if norm_a == 0.0 and norm_b == 0.0:
        return 1.0
    if norm_a == 0.0 or norm_b == 0.0:
        return 0.0
    # Rounding can push |cos| a hair past 1; clip so histograms over [−1, 1] hold every value.
    return float(np.clip(np.dot(a, b) / (norm_a * norm_b), -1.0, 1.0))


def _rank_correlation_at_k(a: ArrayLike, b: ArrayLike, *, top_k: int) -> float:
    return rank_correlation(a, b)


def _cosine_at_k(a: ArrayLike, b: ArrayLike, *, top_k: int) -> float:
    return cosine_similarity(a, b)


# name -> (function taking top_k, value range). The names are the result document's keys.
ALIGNMENT_METRICS: dict[str, tuple[Callable[..., float], tuple[float, float]]] = {
    "jaccard_at_k": (jaccard_at_k, UNIT_RANGE),
    "feature_agreement": (feature_agreement, UNIT_RANGE),
    "rank_agreement": (rank_agreement, UNIT_RANGE),
    "sign_agreement": (sign_agreement, UNIT_RANGE),
    "signed_rank_agreement": (signed_rank_agreement, UNIT_RANGE),
    "rank_correlation": (_rank_correlation_at_k, SIGNED_RANGE),
    "pairwise_rank_agreement": (pairwise_rank_agreement, UNIT_RANGE),
    "cosine_similarity": (_cosine_at_k, SIGNED_RANGE),
}


def alignment_metrics(
    attributions_a: ArrayLike, attributions_b: ArrayLike, *, top_k: int
) -> dict[str, float]:
    """Every alignment metric between two attribution vectors of shape (d,), by name."""
    a, b = _validated_pair(attributions_a, attributions_b)
    top_k = check_integer(top_k, name="top_k", minimum=1)
    return {name: function(a, b, top_k=top_k) for name, (function, _) in ALIGNMENT_METRICS.items()}


# Bin positions within this many bin widths of an edge count as on it: sums of float
# attributions land a few ulps off the fractions (3/10, 2/3) that the metrics take.
_EDGE_TOLERANCE = 1e-9


def histogram_counts(
    values: ArrayLike, *, bins: int, value_range: tuple[float, float]
) -> NDArray[np.int64]:
    """Counts of `values` (shape (n,)) in `bins` equal-width bins over `value_range`.

    Bin `m` (0-based) holds `low + m·w <= v < low + (m + 1)·w`, `w = (high − low) / bins`; the
    last bin also holds `v = high`. The bin index is `floor((v − low) / w)`, computed from the
    position in bin units snapped to an edge within `_EDGE_TOLERANCE`, so a value exactly on
    an edge (0.3 with ten bins over [0, 1]) lands in the bin above it; `numpy.histogram`
    compares against floating-point edges and puts some of them one bin low. Values outside
    the range raise.
    """
    array = np.asarray(values, dtype=np.float64)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    low, high = value_range
    if not low < high:
        raise ValueError(f"value_range must be increasing, got {value_range}")
    if array.size and (array.min() < low or array.max() > high):
        raise ValueError(f"values fall outside value_range {value_range}")
    position = (array - low) * bins / (high - low)
    nearest_edge = np.round(position)
    on_edge = np.abs(position - nearest_edge) <= _EDGE_TOLERANCE
    index = np.clip(np.floor(np.where(on_edge, nearest_edge, position)), 0, bins - 1)
    return np.bincount(index.astype(np.intp), minlength=bins).astype(np.int64)


def summarize_metric(
    values: ArrayLike,
    *,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
    bins: int = 10,
    value_range: tuple[float, float] = UNIT_RANGE,
) -> MetricSummary:
    """Mean, median, percentile-bootstrap interval of the mean, and a histogram of `values`.

    `values` has shape (n,), one per explained instance. The histogram has `bins` equal-width
    bins over `value_range`, counted by `histogram_counts` (a value on an edge goes to the bin
    above it; the last bin includes its upper edge). With no values every statistic is None
    and the counts are zero; with `n_resamples = 0` the interval is None.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("values contain NaN or infinite values")
    counts = histogram_counts(array, bins=bins, value_range=value_range)
    histogram = Histogram(
        edges=np.linspace(*value_range, bins + 1).tolist(), counts=counts.tolist()
    )
    if array.size == 0:
        return MetricSummary(
            mean=None, median=None, ci_low=None, ci_high=None, n=0, histogram=histogram
        )
    ci_low: float | None = None
    ci_high: float | None = None
    if n_resamples > 0:
        ci_low, ci_high = bootstrap_mean_interval(
            array, n_resamples=n_resamples, confidence_level=confidence_level, seed=seed
        )
    return MetricSummary(
        mean=float(array.mean()),
        median=float(np.median(array)),
        ci_low=ci_low,
        ci_high=ci_high,
        n=int(array.size),
        histogram=histogram,
    )
