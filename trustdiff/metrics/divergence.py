"""Per-instance distances between the two models' probability vectors, and their tails."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trustdiff.metrics._checks import check_integer, check_probability_pair

# KL clips the candidate's probabilities here, so a class the reference gives mass and the
# candidate's float32 softmax rounds to exactly 0 adds a large finite amount, not infinity
# (the same floor as the NLL's).
KL_EPSILON = float(np.finfo(np.float64).eps)
TAIL_QUANTILES = (0.5, 0.9, 0.99)


def _kl_rows(p: NDArray[np.float64], q: NDArray[np.float64]) -> NDArray[np.float64]:
    """Σ_k p_k log(p_k / q_k) per row, natural log, 0·log(0/q) = 0, q already positive."""
    positive = p > 0
    ratio = np.divide(p, q, out=np.ones_like(p), where=positive)
    return np.sum(np.where(positive, p * np.log(ratio), 0.0), axis=1)


def kl_divergence_per_instance(
    reference_proba: ArrayLike, candidate_proba: ArrayLike, *, epsilon: float = KL_EPSILON
) -> NDArray[np.float64]:
    """`KL(p_ref,i ‖ p_cand,i) = Σ_k p_ik log(p_ik / q_ik)` per instance, natural log, shape (n,).

    `reference_proba` (p), `candidate_proba` (q): probability matrices of the same shape
    (n, K). Terms with `p_ik = 0` contribute 0. The candidate's probabilities are clipped to
    `[epsilon, 1]` (no renormalisation) before the logarithm, so a row the reference supports
    and the candidate rules out has a large finite divergence (≤ −log ε ≈ 36.04 at the
    default) instead of infinity; with every `q_ik ≥ ε` this is exactly scipy's
    `entropy(p, q)`. Rounding can leave a tiny negative value for identical rows; it is
    clipped to 0. KL is asymmetric: the reference is the distribution the candidate is judged
    against (llama.cpp's convention for a quantized model).
    """
    if not 0.0 < epsilon < 1.0:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon!r}")
    reference, candidate = check_probability_pair(reference_proba, candidate_proba)
    return np.clip(_kl_rows(reference, np.clip(candidate, epsilon, 1.0)), 0.0, None)


def jensen_shannon_distance_per_instance(
    reference_proba: ArrayLike, candidate_proba: ArrayLike
) -> NDArray[np.float64]:
    """`sqrt(JSD₂(p_ref,i, p_cand,i))` per instance, shape (n,), in [0, 1].

    `JSD₂(p, q) = ½ KL₂(p ‖ m) + ½ KL₂(q ‖ m)`, `m = (p + q) / 2`, base-2 logarithms (so the
    distance is 1 for disjoint supports) and `0 · log 0 = 0`; no clipping is needed since
    `m_k ≥ p_k / 2`. Equals scipy's `jensenshannon(p, q, base=2)`; a true metric.
    """
    reference, candidate = check_probability_pair(reference_proba, candidate_proba)
    middle = (reference + candidate) / 2.0
    divergence = (0.5 * _kl_rows(reference, middle) + 0.5 * _kl_rows(candidate, middle)) / np.log(
        2.0
    )
    # Rounding can leave a tiny negative divergence for identical rows; sqrt would give NaN.
    return np.sqrt(np.clip(divergence, 0.0, 1.0))


@dataclass(frozen=True)
class TailSummary:
    """Location and tail of a per-instance distance: the tail is what a mean hides.

    Quantiles use numpy's default (linear interpolation between order statistics).
    `histogram_edges` has `len(histogram_counts) + 1` entries.
    """

    mean: float
    median: float
    p90: float
    p99: float
    max: float
    histogram_edges: tuple[float, ...]
    histogram_counts: tuple[int, ...]


def tail_summary(
    values: ArrayLike, *, n_bins: int = 10, value_range: tuple[float, float] | None = None
) -> TailSummary:
    """Mean, median, 90th and 99th percentile, maximum and histogram of `values`, shape (n,).

    The histogram has `n_bins` equal-width bins over `value_range`, by default
    `(0, max(values))` (`(0, 1)` when every value is 0); every bin is `[lower, upper)` except
    the last, which includes its upper edge. Values must be finite and non-negative.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError("values is empty")
    if not np.isfinite(array).all():
        raise ValueError(
            f"values contain NaN or infinity at index {int(np.argmin(np.isfinite(array)))}"
        )
    if (array < 0).any():
        raise ValueError(f"values contain a negative distance {float(array.min())!r}")
    check_integer(n_bins, name="n_bins", minimum=1)
    top = float(array.max())
    low, high = value_range if value_range is not None else (0.0, top if top > 0 else 1.0)
    if not low < high:
        raise ValueError(f"value_range must be increasing, got {(low, high)!r}")
    counts, edges = np.histogram(array, bins=n_bins, range=(low, high))
    median, p90, p99 = np.quantile(array, TAIL_QUANTILES)
    return TailSummary(
        mean=float(array.mean()),
        median=float(median),
        p90=float(p90),
        p99=float(p99),
        max=top,
        histogram_edges=tuple(float(edge) for edge in edges),
        histogram_counts=tuple(int(count) for count in counts),
    )


def largest(values: ArrayLike, *, count: int) -> NDArray[np.intp]:
    """Indices of the `min(count, n)` largest `values` (shape (n,)), largest first.

    Equal values keep index order (lower index first), so the list is deterministic.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError("values contain NaN")
    count = check_integer(count, name="count", minimum=0)
    order = np.lexsort((np.arange(array.size), -array))
    return order[: min(count, array.size)]
