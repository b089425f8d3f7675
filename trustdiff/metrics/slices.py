"""Per-slice parity and calibration: where on the data the candidate departs from the reference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trustdiff.metrics._checks import (
    check_class_labels,
    check_integer,
    check_probability_pair,
    check_same_length,
)
from trustdiff.metrics.calibration import Binning, expected_calibration_error

DEFAULT_MIN_SLICE_SIZE = 50


@dataclass(frozen=True)
class SliceMetrics:
    """Both models on the rows of one slice (`column` = `value`), point values.

    Deltas are candidate − reference. `judged` is False for a slice with fewer than
    `min_slice_size` rows: it is listed, never held against the candidate.
    """

    column: str
    value: str
    n: int
    judged: bool
    reference_accuracy: float
    candidate_accuracy: float
    accuracy_delta: float
    agreement: float
    negative_flip_rate: float
    reference_ece: float
    candidate_ece: float
    ece_delta: float


def _check_rows(rows: ArrayLike, *, n: int) -> NDArray[np.intp]:
    index = np.asarray(rows)
    if index.ndim != 1 or index.size == 0:
        raise ValueError(
            f"rows must be a non-empty 1-D array of row indices, got shape {index.shape}"
        )
    if index.dtype.kind not in "iu":
        raise ValueError(f"rows must hold integer row indices, got dtype {index.dtype}")
    if (index < 0).any() or (index >= n).any():
        bad = int(index[(index < 0) | (index >= n)][0])
        raise ValueError(f"rows contains row index {bad}, outside 0..{n - 1}")
    return index.astype(np.intp, copy=False)


def slice_metrics(
    y_true: ArrayLike,
    reference_proba: ArrayLike,
    candidate_proba: ArrayLike,
    *,
    rows: ArrayLike,
    column: str,
    value: str,
    min_slice_size: int = DEFAULT_MIN_SLICE_SIZE,
    n_bins: int = 15,
    binning: Binning = "equal_width",
) -> SliceMetrics:
    """Accuracy of both models and its delta, agreement, negative flip rate, ECE of both and
    ΔECE on the instances `rows` (integer indices, shape (m,), m ≥ 1).

    `y_true`: class ids, shape (n,); `reference_proba`, `candidate_proba`: (n, K). Predictions
    are each model's argmax (lowest id among ties); ECE as `expected_calibration_error` with
    `n_bins` and `binning`, computed on the slice's rows alone. Negative flip rate: reference
    right and candidate wrong, as a fraction of the slice's rows.
    """
    check_integer(min_slice_size, name="min_slice_size", minimum=1)
    reference, candidate = check_probability_pair(reference_proba, candidate_proba)
    truth = check_class_labels(y_true, name="y_true", n_classes=reference.shape[1])
    check_same_length(y_true=truth, reference_proba=reference)
    index = _check_rows(rows, n=truth.size)
    truth, reference, candidate = truth[index], reference[index], candidate[index]
    reference_right = reference.argmax(axis=1) == truth
    candidate_right = candidate.argmax(axis=1) == truth
    reference_ece = expected_calibration_error(truth, reference, n_bins=n_bins, binning=binning)
    candidate_ece = expected_calibration_error(truth, candidate, n_bins=n_bins, binning=binning)
    reference_accuracy = float(reference_right.mean())
    candidate_accuracy = float(candidate_right.mean())
    return SliceMetrics(
        column=column,
        value=value,
        n=int(index.size),
        judged=bool(index.size >= min_slice_size),
        reference_accuracy=reference_accuracy,
        candidate_accuracy=candidate_accuracy,
        accuracy_delta=candidate_accuracy - reference_accuracy,
        agreement=float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1))),
        negative_flip_rate=float(np.mean(reference_right & ~candidate_right)),
        reference_ece=reference_ece,
        candidate_ece=candidate_ece,
        ece_delta=candidate_ece - reference_ece,
    )


def slice_rows(values: Sequence[object]) -> dict[str, NDArray[np.intp]]:
    """The row indices of each distinct value of a categorical column, shape (m,) each.

    `values`: one entry per row. Values are compared as strings (`str(v)`), so `1` and `"1"`
    are one slice; a missing value (`None`, or a float NaN) forms the slice `"(missing)"`.
    Keys are sorted by their string, so the result does not
    depend on the row order.
    """
    groups: dict[str, list[int]] = {}
    for row, value in enumerate(values):
        missing = value is None or (isinstance(value, float) and np.isnan(value))
        groups.setdefault("(missing)" if missing else str(value), []).append(row)
    return {key: np.asarray(groups[key], dtype=np.intp) for key in sorted(groups)}


def length_quartile_labels(lengths: ArrayLike) -> list[str]:
    """Each row's text-length quartile among the audited rows, as a label like "Q2: 8–12 words".

    `lengths`: non-negative integer word counts, shape (n,). Cut points are numpy's linear
    quantiles q25, q50, q75 of `lengths`; a row of length L is in Q1 if L ≤ q25, else Q2 if
    L ≤ q50, else Q3 if L ≤ q75, else Q4. Ties therefore stay together and a quartile can be
    empty (it then has no label). The label's range is the shortest and longest row it holds.
    """
    array = np.asarray(lengths)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"lengths must be a non-empty 1-D array, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise ValueError(f"lengths must be integer word counts, got dtype {array.dtype}")
    if (array < 0).any():
        raise ValueError(f"lengths contain a negative count {int(array.min())}")
    cuts = np.quantile(array, (0.25, 0.5, 0.75))
    quartile = np.searchsorted(cuts, array, side="left")
    labels = {}
    for index in np.unique(quartile):
        members = array[quartile == index]
        low, high = int(members.min()), int(members.max())
        span = f"{low} words" if low == high else f"{low}–{high} words"
        labels[int(index)] = f"Q{int(index) + 1}: {span}"
    return [labels[int(index)] for index in quartile]
