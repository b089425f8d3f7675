"""Calibration metrics: how well a model's probabilities match how often it is right."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trustdiff.metrics._checks import (
    check_class_labels,
    check_integer,
    check_probabilities,
    check_same_length,
)

Binning = Literal["equal_width", "equal_mass"]
BINNINGS: tuple[Binning, ...] = ("equal_width", "equal_mass")
# NLL clips the true-class probability here, so one confidently wrong instance adds at most
# −log(eps) ≈ 36.04 instead of infinity (the same clip as scikit-learn's `log_loss`).
NLL_EPSILON = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class ReliabilityBinStats:
    """One bin of a reliability diagram.

    `lower`, `upper`: the bin's range (equal-width: `(lower, upper]`; equal-mass: the lowest
    and highest confidence it holds). `mean_confidence` and `accuracy` are None when the bin
    is empty.
    """

    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    accuracy: float | None


@dataclass(frozen=True)
class CalibrationSummary:
    """All scalar calibration metrics of one model, computed from one validation pass."""

    ece: float
    mce: float
    classwise_ece: float
    brier: float
    nll: float


@dataclass(frozen=True)
class _Bins:
    index: NDArray[np.intp]  # each pair's bin, shape (n,)
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    counts: NDArray[np.int64]
    score_sums: NDArray[np.float64]
    hit_sums: NDArray[np.float64]


def _check_inputs(
    y_true: ArrayLike, y_proba: ArrayLike
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    probabilities = check_probabilities(y_proba, name="y_proba")
    truth = check_class_labels(y_true, name="y_true", n_classes=probabilities.shape[1])
    check_same_length(y_true=truth, y_proba=probabilities)
    return truth, probabilities


def _check_binning(n_bins: int, binning: str) -> None:
    check_integer(n_bins, name="n_bins", minimum=1)
    if binning not in BINNINGS:
        raise ValueError(f"binning must be one of {BINNINGS}, got {binning!r}")


def _bin(
    scores: NDArray[np.float64], hits: NDArray[np.float64], *, n_bins: int, binning: str
) -> _Bins:
    """Assign each (score, hit) pair to a bin and total each bin.

    Equal width: edges are the floats `m / M`; bin m (1-based) holds `((m−1)/M, m/M]`, and a
    score of exactly 0 joins the first bin. Equal mass: pairs sorted by score, ties broken by
    hit (misses first), split by `np.array_split` into M groups whose sizes differ by at most
    one (larger groups first; with n < M the last groups are empty). The tie rule makes the
    grouping independent of sample order.
    """
    if binning == "equal_width":
        edges = np.arange(n_bins + 1, dtype=np.float64) / n_bins
        index = np.clip(np.searchsorted(edges, scores, side="left") - 1, 0, n_bins - 1)
        lower, upper = edges[:-1], edges[1:]
    else:
        order = np.lexsort((hits, scores))
        sizes = np.array([len(part) for part in np.array_split(np.arange(scores.size), n_bins)])
        index = np.empty(scores.size, dtype=np.intp)
        index[order] = np.repeat(np.arange(n_bins), sizes)
        sorted_scores = scores[order]
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        lower = np.empty(n_bins)
        upper = np.empty(n_bins)
        previous_upper = 0.0
        for bin_index, (start, size) in enumerate(zip(starts, sizes, strict=True)):
            if size:
                lower[bin_index] = sorted_scores[start]
                upper[bin_index] = previous_upper = sorted_scores[start + size - 1]
            else:
                # An empty equal-mass bin has no range; pin it to its predecessor's top.
                lower[bin_index] = upper[bin_index] = previous_upper
    return _Bins(
        index=index,
        lower=lower,
        upper=upper,
        counts=np.bincount(index, minlength=n_bins).astype(np.int64),
        score_sums=np.bincount(index, weights=scores, minlength=n_bins).astype(np.float64),
        hit_sums=np.bincount(index, weights=hits, minlength=n_bins).astype(np.float64),
    )


def _confidence_and_correct(
    truth: NDArray[np.intp], probabilities: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    # argmax picks the lowest class id among tied maxima, as numpy and torch both do.
    predicted = probabilities.argmax(axis=1)
    return probabilities.max(axis=1), (predicted == truth).astype(np.float64)


def _ece(bins: _Bins, n: int) -> float:
    # Σ_m |B_m|/n · |acc_m − conf_m| = Σ_m |hits_m − scores_m| / n; empty bins add 0.
    return float(np.sum(np.abs(bins.hit_sums - bins.score_sums)) / n)


def _mce(bins: _Bins) -> float:
    filled = bins.counts > 0
    gaps = np.abs(bins.hit_sums[filled] - bins.score_sums[filled]) / bins.counts[filled]
    return float(gaps.max())


def _classwise_ece(
    truth: NDArray[np.intp], probabilities: NDArray[np.float64], *, n_bins: int, binning: str
) -> float:
    n, n_classes = probabilities.shape
    per_class = [
        _ece(
            _bin(
                probabilities[:, label],
                (truth == label).astype(np.float64),
                n_bins=n_bins,
                binning=binning,
            ),
            n,
        )
        for label in range(n_classes)
    ]
    return float(np.mean(per_class))


def _brier(truth: NDArray[np.intp], probabilities: NDArray[np.float64]) -> float:
    one_hot = np.zeros_like(probabilities)
    one_hot[np.arange(truth.size), truth] = 1.0
    return float(np.mean(np.sum((probabilities - one_hot) ** 2, axis=1)))


def _nll(truth: NDArray[np.intp], probabilities: NDArray[np.float64]) -> float:
    true_class = probabilities[np.arange(truth.size), truth]
    return float(-np.mean(np.log(np.clip(true_class, NLL_EPSILON, 1.0))))


def expected_calibration_error(
    y_true: ArrayLike, y_proba: ArrayLike, *, n_bins: int = 15, binning: Binning = "equal_width"
) -> float:
    """Top-label ECE, `Σ_m |B_m|/n · |acc(B_m) − conf(B_m)|`, in [0, 1].

    `y_true`: integer class ids, shape (n,). `y_proba`: probabilities, shape (n, K), rows
    summing to 1. Confidence `c_i = max_k p_ik`; correct when `argmax_k p_ik = y_i` (lowest
    id among ties). Bins: equal width, bin m holds `c ∈ ((m−1)/M, m/M]` with `c = 0` in the
    first bin and `c = 1` in the last; or equal mass (see `reliability_bins`). Empty bins
    contribute nothing.

    torchmetrics' `multiclass_calibration_error` agrees except for a confidence exactly on an
    inner edge `m/M`: it bins `[lower, upper)`, so that confidence joins the next bin.
    """
    _check_binning(n_bins, binning)
    truth, probabilities = _check_inputs(y_true, y_proba)
    confidence, correct = _confidence_and_correct(truth, probabilities)
    return _ece(_bin(confidence, correct, n_bins=n_bins, binning=binning), truth.size)


def expected_calibration_error_replicates(
    y_true: ArrayLike,
    y_proba: ArrayLike,
    resamples: ArrayLike,
    *,
    n_bins: int = 15,
    binning: Binning = "equal_width",
) -> NDArray[np.float64]:
    """`expected_calibration_error` on each resample of the rows, shape (r,).

    `resamples`: row indices, shape (r, m) (e.g. bootstrap draws, rows may repeat). Equal
    width: each row's bin does not depend on the resample, so all replicates are totalled at
    once; equal mass re-bins every resample (its bins depend on which rows are drawn).
    """
    _check_binning(n_bins, binning)
    truth, probabilities = _check_inputs(y_true, y_proba)
    draws = np.asarray(resamples)
    if draws.ndim != 2 or draws.shape[1] == 0 or draws.dtype.kind not in "iu":
        raise ValueError(f"resamples must be a (r, m) array of row indices, got {draws.shape}")
    if (draws < 0).any() or (draws >= truth.size).any():
        raise ValueError(f"resamples hold a row index outside 0..{truth.size - 1}")
    confidence, correct = _confidence_and_correct(truth, probabilities)
    if binning != "equal_width":
        return np.array(
            [
                _ece(
                    _bin(confidence[rows], correct[rows], n_bins=n_bins, binning=binning), rows.size
                )
                for rows in draws
            ]
        )
    bin_of_row = _bin(confidence, correct, n_bins=n_bins, binning=binning).index
    cells = (np.arange(draws.shape[0])[:, None] * n_bins + bin_of_row[draws]).ravel()
    size = draws.shape[0] * n_bins
    gaps = np.bincount(cells, weights=correct[draws].ravel(), minlength=size) - np.bincount(
        cells, weights=confidence[draws].ravel(), minlength=size
    )
    return np.abs(gaps.reshape(draws.shape[0], n_bins)).sum(axis=1) / draws.shape[1]


def maximum_calibration_error(
    y_true: ArrayLike, y_proba: ArrayLike, *, n_bins: int = 15, binning: Binning = "equal_width"
) -> float:
    """Top-label MCE, `max_m |acc(B_m) − conf(B_m)|` over non-empty bins, in [0, 1].

    Shapes and bin rule as `expected_calibration_error`.
    """
    _check_binning(n_bins, binning)
    truth, probabilities = _check_inputs(y_true, y_proba)
    confidence, correct = _confidence_and_correct(truth, probabilities)
    return _mce(_bin(confidence, correct, n_bins=n_bins, binning=binning))


def classwise_expected_calibration_error(
    y_true: ArrayLike, y_proba: ArrayLike, *, n_bins: int = 15, binning: Binning = "equal_width"
) -> float:
    """Mean over classes k of the one-vs-rest ECE of `p_ik` against `1[y_i = k]`, in [0, 1].

    Every class column is binned by its own probabilities with the same bin rule as
    `expected_calibration_error`; each class's ECE divides by all n instances.
    """
    _check_binning(n_bins, binning)
    truth, probabilities = _check_inputs(y_true, y_proba)
    return _classwise_ece(truth, probabilities, n_bins=n_bins, binning=binning)


def brier_score(y_true: ArrayLike, y_proba: ArrayLike) -> float:
    """Multiclass Brier score `1/n Σ_i Σ_k (p_ik − 1[y_i = k])²`, in [0, 2].

    `y_true`: (n,) class ids; `y_proba`: (n, K) probabilities. For K = 2 this is twice
    scikit-learn's binary `brier_score_loss(y, p[:, 1])`, which scores the positive column
    only (the "scale by half" convention); it equals `brier_score_loss(y, p,
    scale_by_half=False)`.
    """
    truth, probabilities = _check_inputs(y_true, y_proba)
    return _brier(truth, probabilities)


def negative_log_likelihood(y_true: ArrayLike, y_proba: ArrayLike) -> float:
    """Mean negative log-likelihood `−1/n Σ_i log p_i,y_i` (natural log), in [0, ≈36.04].

    The true-class probability is clipped to `[NLL_EPSILON, 1]` (float64 machine epsilon,
    ≈2.2e-16) so a zero probability gives a large finite loss rather than infinity.
    """
    truth, probabilities = _check_inputs(y_true, y_proba)
    return _nll(truth, probabilities)


def reliability_bins(
    y_true: ArrayLike, y_proba: ArrayLike, *, n_bins: int = 15, binning: Binning = "equal_width"
) -> list[ReliabilityBinStats]:
    """Reliability-diagram data: per bin its range, count, mean confidence and accuracy.

    Always `n_bins` entries, empty bins included (count 0, None statistics).
    Equal width: bin m covers `((m−1)/M, m/M]` (the first also holds 0). Equal mass: instances
    sorted by confidence, ties broken by correctness (wrong first) so the result does not
    depend on sample order, then split into M groups by `np.array_split` (sizes differ by at
    most one, larger groups first); `lower`/`upper` are the lowest/highest confidence in the
    group, and an empty group (only when n < M) takes its predecessor's upper value for both.
    """
    _check_binning(n_bins, binning)
    truth, probabilities = _check_inputs(y_true, y_proba)
    confidence, correct = _confidence_and_correct(truth, probabilities)
    bins = _bin(confidence, correct, n_bins=n_bins, binning=binning)
    result = []
    for index in range(n_bins):
        count = int(bins.counts[index])
        result.append(
            ReliabilityBinStats(
                lower=float(bins.lower[index]),
                upper=float(bins.upper[index]),
                count=count,
                mean_confidence=float(bins.score_sums[index] / count) if count else None,
                accuracy=float(bins.hit_sums[index] / count) if count else None,
            )
        )
    return result


def calibration_summary(
    y_true: ArrayLike, y_proba: ArrayLike, *, n_bins: int = 15, binning: Binning = "equal_width"
) -> CalibrationSummary:
    """ECE, MCE, classwise ECE, Brier and NLL at once, validating the inputs a single time.

    Each field equals its own function's result; this exists for bootstrap loops that
    compute all of them on thousands of resamples.
    """
    _check_binning(n_bins, binning)
    truth, probabilities = _check_inputs(y_true, y_proba)
    confidence, correct = _confidence_and_correct(truth, probabilities)
    bins = _bin(confidence, correct, n_bins=n_bins, binning=binning)
    return CalibrationSummary(
        ece=_ece(bins, truth.size),
        mce=_mce(bins),
        classwise_ece=_classwise_ece(truth, probabilities, n_bins=n_bins, binning=binning),
        brier=_brier(truth, probabilities),
        nll=_nll(truth, probabilities),
    )
