"""Explanation faithfulness (DeYoung et al. 2020, ERASER): does removing the words an
explanation ranks highest change the model's prediction, and do those words alone keep it?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trustdiff.metrics._checks import check_integer


@dataclass(frozen=True)
class ErasureMasks:
    """Keep-masks for the perturbed inputs of one explained instance, each of shape (k, d).

    Row j−1 belongs to k = j: `without_top[j−1]` drops the j top-ranked words (comprehensiveness),
    `only_top[j−1]` keeps just them (sufficiency). `order` (shape (d,)) is the ranking used.
    """

    order: NDArray[np.intp]
    without_top: NDArray[np.bool_]
    only_top: NDArray[np.bool_]


@dataclass(frozen=True)
class Faithfulness:
    """AOPC comprehensiveness and sufficiency of one explanation, each in [−1, 1].

    High comprehensiveness and low sufficiency mean a faithful explanation.
    """

    comprehensiveness: float
    sufficiency: float


def erasure_masks(attributions: ArrayLike, *, top_k: int) -> ErasureMasks:
    """The 2·k perturbations (k = min(top_k, d)) that comprehensiveness and sufficiency need.

    `attributions`: one explanation's signed scores towards the explained class, shape (d,).
    Words are ranked by signed score, highest first — the words that most support the class
    are removed first, as ERASER does with its importance scores (a word that argues against
    the class is not evidence for it); equal scores are ordered by position, lower first.
    """
    vector = np.asarray(attributions, dtype=np.float64)
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(f"attributions must be a non-empty 1-D array, got shape {vector.shape}")
    if not np.isfinite(vector).all():
        raise ValueError("attributions contain NaN or infinite values")
    k = min(check_integer(top_k, name="top_k", minimum=1), vector.size)
    order = np.lexsort((np.arange(vector.size), -vector))
    rank = np.empty(vector.size, dtype=np.intp)
    rank[order] = np.arange(vector.size)
    # Row j−1 (k = j) marks the words ranked below j as the top ones.
    in_top = rank[np.newaxis, :] < np.arange(1, k + 1)[:, np.newaxis]
    return ErasureMasks(order=order, without_top=~in_top, only_top=in_top)


def _check_probability(value: float, *, name: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:  # also refuses NaN
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return number


def _check_curve(values: ArrayLike, *, name: str) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN at index {int(np.flatnonzero(np.isnan(array))[0])}")
    if ((array < 0) | (array > 1)).any():
        bad = array[(array < 0) | (array > 1)][0]
        raise ValueError(f"{name} contains {bad!r}, outside [0, 1]")
    return array


def comprehensiveness(full_probability: float, without_top_probabilities: ArrayLike) -> float:
    """AOPC comprehensiveness, `1/k Σ_{j=1..k} (p(x) − p(x ∖ top_j))`, in [−1, 1].

    `full_probability`: the model's probability of the explained class on the whole input;
    `without_top_probabilities`: shape (k,), the same probability with the j top-ranked words
    removed, j = 1..k (rows of `erasure_masks(...).without_top`).
    """
    full = _check_probability(full_probability, name="full_probability")
    curve = _check_curve(without_top_probabilities, name="without_top_probabilities")
    return float(np.mean(full - curve))


def sufficiency(full_probability: float, only_top_probabilities: ArrayLike) -> float:
    """AOPC sufficiency, `1/k Σ_{j=1..k} (p(x) − p(top_j))`, in [−1, 1].

    `only_top_probabilities`: shape (k,), the probability of the explained class when only the
    j top-ranked words are kept, j = 1..k (rows of `erasure_masks(...).only_top`).
    """
    full = _check_probability(full_probability, name="full_probability")
    curve = _check_curve(only_top_probabilities, name="only_top_probabilities")
    return float(np.mean(full - curve))


def faithfulness(
    full_probability: float,
    without_top_probabilities: ArrayLike,
    only_top_probabilities: ArrayLike,
) -> Faithfulness:
    """Both AOPC scores of one explanation; shapes as `comprehensiveness` and `sufficiency`,
    and both curves must have the same length k."""
    without = _check_curve(without_top_probabilities, name="without_top_probabilities")
    only = _check_curve(only_top_probabilities, name="only_top_probabilities")
    if without.size != only.size:
        raise ValueError(
            f"inconsistent numbers of steps: without_top_probabilities has {without.size}, "
            f"only_top_probabilities has {only.size}"
        )
    return Faithfulness(
        comprehensiveness=comprehensiveness(full_probability, without),
        sufficiency=sufficiency(full_probability, only),
    )
