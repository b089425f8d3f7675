"""Input validation shared by the metric functions: one rule set, one wording of each error."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Rows of a probability matrix must sum to 1 within this absolute tolerance; float32 softmax
# outputs are off by ~1e-7, logits or unnormalized scores by far more.
ROW_SUM_TOLERANCE = 1e-6


def check_class_labels(
    values: ArrayLike, *, name: str, n_classes: int | None = None
) -> NDArray[np.intp]:
    """`values` as a 1-D array of class ids in `[0, n_classes)`, shape (n,), n >= 1.

    Integer dtypes only: float labels are refused rather than rounded, booleans too.
    """
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if array.dtype.kind == "f" and np.isnan(array).any():
        raise ValueError(f"{name} contains NaN at index {int(np.flatnonzero(np.isnan(array))[0])}")
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class ids, got dtype {array.dtype}")
    if (array < 0).any():
        raise ValueError(f"{name} contains a negative class id {int(array.min())}")
    if n_classes is not None and (array >= n_classes).any():
        raise ValueError(f"{name} contains class id {int(array.max())}, outside 0..{n_classes - 1}")
    return array.astype(np.intp, copy=False)


def check_probabilities(values: ArrayLike, *, name: str) -> NDArray[np.float64]:
    """`values` as an (n, K) float64 probability matrix: n >= 1, K >= 2, rows summing to 1.

    Refuses NaN or infinite entries, entries outside [0, 1] and rows whose sum differs from 1
    by more than `ROW_SUM_TOLERANCE` — never softmaxes what might be logits.
    """
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_classes), got shape {array.shape}; "
            f"give both columns for a binary problem"
        )
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if array.shape[1] < 2:
        raise ValueError(f"{name} must have at least 2 class columns, got {array.shape[1]}")
    finite = np.isfinite(array)
    if not finite.all():
        row, column = np.argwhere(~finite)[0]
        raise ValueError(
            f"{name} contains {array[row, column]} (NaN or infinite) at row {row}, column {column}"
        )
    outside = (array < 0.0) | (array > 1.0)
    if outside.any():
        row, column = np.argwhere(outside)[0]
        raise ValueError(
            f"{name} contains {array[row, column]!r} at row {row}, column {column}, "
            f"outside [0, 1]: probabilities are required, not logits"
        )
    sums = array.sum(axis=1)
    off = np.abs(sums - 1.0) > ROW_SUM_TOLERANCE
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise ValueError(
            f"{name} row {row} sums to {sums[row]!r}, not 1 (tolerance {ROW_SUM_TOLERANCE})"
        )
    return array


def check_integer(value: object, *, name: str, minimum: int) -> int:
    """`value` as an `int`, when it is an integer (Python or numpy) of at least `minimum`.

    A float, even 3.0, and a bool are refused rather than coerced.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_probability_pair(
    reference_proba: ArrayLike, candidate_proba: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Both models' probability matrices (`check_probabilities`), of one shape (n, K)."""
    reference = check_probabilities(reference_proba, name="reference_proba")
    candidate = check_probabilities(candidate_proba, name="candidate_proba")
    if reference.shape != candidate.shape:
        raise ValueError(
            f"reference_proba has shape {reference.shape}, candidate_proba {candidate.shape}"
        )
    return reference, candidate


def check_same_length(**arrays: NDArray) -> None:
    """Raise naming every length when the arrays' first dimensions differ."""
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name} has {length}" for name, length in lengths.items())
        raise ValueError(f"inconsistent numbers of samples: {described}")
