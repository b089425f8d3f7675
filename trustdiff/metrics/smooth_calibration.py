"""SmoothECE (Błasiok & Nakkiran 2023): calibration error without bins, and its smooth curve."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trustdiff.metrics._checks import (
    check_class_labels,
    check_integer,
    check_probabilities,
    check_same_length,
)

# The kernel sums are evaluated on t_j = j / GRID_INTERVALS, j = 0..GRID_INTERVALS, after
# linear binning of the scores onto that grid: a relative error of order h²/(8σ²), under
# 0.2% for σ ≥ 0.01 (real models' bandwidths), and at the 0.001 floor, where SmoothECE is
# itself below 0.001, an absolute error of about 1e-4. The Gaussian's Fourier coefficients
# are exact, so no other discretisation enters.
GRID_INTERVALS = 1024
# Where the density falls below this share of its peak, the FFT's kernel sums are round-off
# (about 1e-16 of the peak), and so is their ratio: the curve's residual is held there.
RESOLVED_DENSITY = 1e-9
# The automatic bandwidth is searched in [MIN_BANDWIDTH, 1] (relplot's floor, 0.001).
MIN_BANDWIDTH = 1e-3
BANDWIDTH_TOLERANCE = 1e-5


@dataclass(frozen=True)
class SmoothReliabilityCurve:
    """The kernel-smoothed reliability diagram of one model at the SmoothECE bandwidth.

    `confidence`, `accuracy`, `density`: shape (n_points,). `accuracy(t) = t + r̂(t)`, the
    diagonal plus the smoothed residual; `density(t) = 1/n Σ_i K_σ(t, c_i)` integrates to 1
    over [0, 1] — where it is near 0 the curve rests on almost no data.
    """

    smooth_ece: float
    bandwidth: float
    confidence: tuple[float, ...]
    accuracy: tuple[float, ...]
    density: tuple[float, ...]


class _KernelSmoother:
    """Reflected-Gaussian kernel sums of fixed scores, for any bandwidth, by FFT.

    Reflecting at 0 and 1 makes the kernel `K_σ(t, c) = Σ_k∈ℤ φ_σ(t − c − 2k) + φ_σ(t + c −
    2k)`, the density of c + N(0, σ²) folded back into [0, 1]; it integrates to 1 over [0, 1].
    On the mirrored grid of period 2 that kernel is a circular convolution with the wrapped
    Gaussian, whose Fourier coefficients are known exactly: `exp(−π²σ²m²/2)` at frequency m.
    """

    def __init__(
        self, scores: NDArray[np.float64], values: NDArray[np.float64], weights: NDArray[np.float64]
    ) -> None:
        intervals = GRID_INTERVALS
        position = scores * intervals
        left = np.clip(np.floor(position).astype(np.intp), 0, intervals - 1)
        fraction = position - left
        on_grid = np.bincount(
            left, weights=weights * values * (1.0 - fraction), minlength=intervals + 1
        ) + np.bincount(left + 1, weights=weights * values * fraction, minlength=intervals + 1)
        mirrored = np.zeros(2 * intervals)
        mirrored[: intervals + 1] += on_grid
        mirrored[(2 * intervals - np.arange(intervals + 1)) % (2 * intervals)] += on_grid
        self._spectrum = np.fft.rfft(mirrored)
        self._frequencies = np.arange(self._spectrum.size, dtype=np.float64)
        self._total_weight = float(weights.sum())

    def at_grid(self, bandwidth: float) -> NDArray[np.float64]:
        """`1/n Σ_i w_i v_i K_σ(t_j, c_i)` at the grid points t_j, shape (GRID_INTERVALS + 1,)."""
        decay = np.exp(-((np.pi * bandwidth * self._frequencies) ** 2) / 2.0)
        smoothed = np.fft.irfft(self._spectrum * decay, n=2 * GRID_INTERVALS)
        # The grid spacing h = 1 / GRID_INTERVALS turns point masses into a density.
        return smoothed[: GRID_INTERVALS + 1] * GRID_INTERVALS / self._total_weight


def _integral_of_absolute(values: NDArray[np.float64]) -> float:
    """Trapezoid rule over [0, 1] on the grid."""
    absolute = np.abs(values)
    return float((absolute.sum() - 0.5 * (absolute[0] + absolute[-1])) / GRID_INTERVALS)


def _bandwidth_gap(residuals: _KernelSmoother, bandwidth: float) -> float:
    """smECE_σ − σ at σ = `bandwidth`: decreasing in σ, zero at the SmoothECE bandwidth."""
    return _integral_of_absolute(residuals.at_grid(bandwidth)) - bandwidth


def _fixed_point_bandwidth(residuals: _KernelSmoother) -> float:
    """The σ* with smECE_σ* = σ*: smECE_σ does not increase with σ, so σ* is unique."""
    from scipy.optimize import brentq

    gap = partial(_bandwidth_gap, residuals)
    if gap(MIN_BANDWIDTH) <= 0.0:
        return MIN_BANDWIDTH
    if gap(1.0) >= 0.0:
        return 1.0
    return float(brentq(gap, MIN_BANDWIDTH, 1.0, xtol=BANDWIDTH_TOLERANCE))


def _check_scores(
    scores: ArrayLike, outcomes: ArrayLike, weights: ArrayLike | None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    score_array = np.asarray(scores)
    outcome_array = np.asarray(outcomes)
    for name, array in (("scores", score_array), ("outcomes", outcome_array)):
        if array.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
        if array.size == 0:
            raise ValueError(f"{name} is empty")
        if array.dtype.kind not in "iufb":
            raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
        if array.dtype.kind == "f" and np.isnan(array).any():
            raise ValueError(
                f"{name} contains NaN at index {int(np.flatnonzero(np.isnan(array))[0])}"
            )
    score_array = score_array.astype(np.float64)
    outcome_array = outcome_array.astype(np.float64)
    check_same_length(scores=score_array, outcomes=outcome_array)
    if ((score_array < 0) | (score_array > 1)).any():
        bad = score_array[(score_array < 0) | (score_array > 1)][0]
        raise ValueError(f"scores contain {bad!r}, outside [0, 1]")
    if not np.isin(outcome_array, (0.0, 1.0)).all():
        bad = outcome_array[~np.isin(outcome_array, (0.0, 1.0))][0]
        raise ValueError(f"outcomes must be 0 or 1, got {bad!r}")
    if weights is None:
        weight_array = np.ones_like(score_array)
    else:
        weight_array = np.asarray(weights, dtype=np.float64)
        check_same_length(scores=score_array, weights=weight_array)
        if not np.isfinite(weight_array).all() or (weight_array < 0).any():
            raise ValueError("weights must be finite and non-negative")
        if weight_array.sum() <= 0:
            raise ValueError("weights sum to 0")
    return score_array, outcome_array, weight_array


def _check_bandwidth(bandwidth: float | None) -> None:
    if bandwidth is not None and not 0.0 < bandwidth <= 1.0:
        raise ValueError(f"bandwidth must be in (0, 1], got {bandwidth!r}")


def _smooth_ece_and_bandwidth(
    scores: NDArray[np.float64],
    outcomes: NDArray[np.float64],
    weights: NDArray[np.float64],
    bandwidth: float | None,
) -> tuple[float, float, _KernelSmoother]:
    residuals = _KernelSmoother(scores, outcomes - scores, weights)
    chosen = _fixed_point_bandwidth(residuals) if bandwidth is None else float(bandwidth)
    return _integral_of_absolute(residuals.at_grid(chosen)), chosen, residuals


def smooth_calibration_error(
    scores: ArrayLike,
    outcomes: ArrayLike,
    *,
    bandwidth: float | None = None,
    weights: ArrayLike | None = None,
) -> float:
    """SmoothECE of scores against binary outcomes, in [0, 1].

    `scores`: predicted probabilities of the event, shape (n,), in [0, 1]; `outcomes`: 0/1,
    shape (n,); `weights` (optional, shape (n,), non-negative): instance weights, e.g. the
    counts of a bootstrap resample.

    `smECE_σ = ∫_0^1 |1/n Σ_i K_σ(t, f_i)(y_i − f_i)| dt` with the reflected Gaussian kernel
    `K_σ` (Gaussian of width σ folded back into [0, 1] at both ends). With `bandwidth=None`
    σ is the fixed point `smECE_σ = σ` (unique: smECE_σ does not increase with σ), searched in
    [0.001, 1] to 1e-5; if even σ = 0.001 gives smECE ≤ 0.001, σ = 0.001. This is the paper's
    definition; the `relplot` package computes it to about 1e-3 (a coarser search).
    """
    _check_bandwidth(bandwidth)
    score_array, outcome_array, weight_array = _check_scores(scores, outcomes, weights)
    return _smooth_ece_and_bandwidth(score_array, outcome_array, weight_array, bandwidth)[0]


def top_label_scores(
    y_true: ArrayLike, y_proba: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Confidence `max_k p_ik` and correctness `1[argmax_k p_ik = y_i]` (lowest id among ties).

    `y_true`: (n,) class ids; `y_proba`: (n, K) probabilities. Both results have shape (n,).
    """
    probabilities = check_probabilities(y_proba, name="y_proba")
    truth = check_class_labels(y_true, name="y_true", n_classes=probabilities.shape[1])
    check_same_length(y_true=truth, y_proba=probabilities)
    return probabilities.max(axis=1), (probabilities.argmax(axis=1) == truth).astype(np.float64)


def smooth_expected_calibration_error(
    y_true: ArrayLike, y_proba: ArrayLike, *, bandwidth: float | None = None
) -> float:
    """Top-label SmoothECE: `smooth_calibration_error` of confidence against correctness.

    `y_true`: integer class ids, shape (n,); `y_proba`: probabilities, shape (n, K). The same
    confidence and correctness as the binned `expected_calibration_error`, without its bins.
    """
    _check_bandwidth(bandwidth)
    confidence, correct = top_label_scores(y_true, y_proba)
    return _smooth_ece_and_bandwidth(confidence, correct, np.ones_like(correct), bandwidth)[0]


def smooth_reliability_curve(
    y_true: ArrayLike, y_proba: ArrayLike, *, bandwidth: float | None = None, n_points: int = 101
) -> SmoothReliabilityCurve:
    """The smoothed top-label reliability curve on `n_points` equally spaced confidences.

    Shapes as `smooth_expected_calibration_error`. `accuracy(t) = t + Σ_i K(t, c_i)(y_i − c_i)
    / Σ_i K(t, c_i)` and `density(t) = 1/n Σ_i K(t, c_i)`, at the SmoothECE bandwidth by
    default; the SmoothECE is the integral of `|accuracy(t) − t| · density(t)`. Where the
    density is under `RESOLVED_DENSITY` of its peak both sums are round-off, so the residual
    `accuracy(t) − t` is that of the nearest confidence where it is resolved (far from the
    data the kernel ratio tends to the nearest data's residual anyway).
    """
    _check_bandwidth(bandwidth)
    n_points = check_integer(n_points, name="n_points", minimum=2)
    confidence, correct = top_label_scores(y_true, y_proba)
    weights = np.ones_like(correct)
    value, chosen, residuals = _smooth_ece_and_bandwidth(confidence, correct, weights, bandwidth)
    grid = np.arange(GRID_INTERVALS + 1) / GRID_INTERVALS
    density = _KernelSmoother(confidence, np.ones_like(correct), weights).at_grid(chosen)
    residual = residuals.at_grid(chosen)
    points = np.linspace(0.0, 1.0, n_points)
    density_at = np.interp(points, grid, density)
    residual_at = np.interp(points, grid, residual)
    accuracy = points + _held_where_unresolved(
        np.divide(residual_at, density_at, out=np.zeros_like(points), where=density_at > 0),
        density_at > RESOLVED_DENSITY * density_at.max(),
    )
    return SmoothReliabilityCurve(
        smooth_ece=value,
        bandwidth=chosen,
        confidence=tuple(points.tolist()),
        accuracy=tuple(np.clip(accuracy, 0.0, 1.0).tolist()),
        density=tuple(np.clip(density_at, 0.0, None).tolist()),
    )


def _held_where_unresolved(values: NDArray[np.float64], resolved: NDArray[np.bool_]) -> NDArray:
    """`values` with each unresolved entry replaced by the nearest resolved one's."""
    kept = np.flatnonzero(resolved)
    if kept.size == 0 or kept.size == values.size:
        return values
    positions = np.arange(values.size)
    after = np.clip(np.searchsorted(kept, positions), 0, kept.size - 1)
    before = np.clip(after - 1, 0, kept.size - 1)
    nearer = np.where(
        np.abs(kept[before] - positions) <= np.abs(kept[after] - positions),
        kept[before],
        kept[after],
    )
    return values[nearer]


def smooth_calibration_error_replicates(
    scores: ArrayLike, outcomes: ArrayLike, weights: ArrayLike
) -> NDArray[np.float64]:
    """`smooth_calibration_error(scores, outcomes, weights=w)` for every row w of `weights`.

    `scores`, `outcomes`: shape (n,) as in `smooth_calibration_error`; `weights`: shape
    (r, n), e.g. the counts of r bootstrap resamples. Returns shape (r,), each value equal
    to the single computation's up to the 1e-5 bandwidth tolerance. Faster than r calls: the
    inputs are checked once, and each row's fixed point is first searched in [σ*/2, 2σ*]
    around the unweighted one (a resample's bandwidth is rarely far from it).
    """
    from scipy.optimize import brentq

    score_array, outcome_array, _ = _check_scores(scores, outcomes, None)
    weight_matrix = np.asarray(weights, dtype=np.float64)
    if weight_matrix.ndim != 2 or weight_matrix.shape[1] != score_array.size:
        raise ValueError(
            f"weights must have shape (r, {score_array.size}), got {weight_matrix.shape}"
        )
    if not np.isfinite(weight_matrix).all() or (weight_matrix < 0).any():
        raise ValueError("weights must be finite and non-negative")
    empty = weight_matrix.sum(axis=1) <= 0
    if empty.any():
        raise ValueError(f"weights row {int(np.flatnonzero(empty)[0])} sums to 0")
    residual = outcome_array - score_array
    centre = _fixed_point_bandwidth(_KernelSmoother(score_array, residual, np.ones_like(residual)))
    low, high = max(centre / 2, MIN_BANDWIDTH), min(centre * 2, 1.0)
    values = np.empty(weight_matrix.shape[0])
    for row, row_weights in enumerate(weight_matrix):
        smoother = _KernelSmoother(score_array, residual, row_weights)
        gap = partial(_bandwidth_gap, smoother)
        if low < high and gap(low) > 0 > gap(high):
            bandwidth = float(brentq(gap, low, high, xtol=BANDWIDTH_TOLERANCE))
        else:
            bandwidth = _fixed_point_bandwidth(smoother)
        values[row] = _integral_of_absolute(smoother.at_grid(bandwidth))
    return values
