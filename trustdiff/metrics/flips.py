"""Directional flips: how often the candidate breaks, or fixes, what the reference got right."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from trustdiff.metrics.parity import flip_counts


@dataclass(frozen=True)
class FlipRates:
    """`negative`: reference right → candidate wrong; `positive`: reference wrong → candidate
    right; both as fractions of all n instances (not of the discordant ones)."""

    negative: float
    positive: float


def flip_rates(
    y_true: ArrayLike, reference_pred: ArrayLike, candidate_pred: ArrayLike
) -> FlipRates:
    """Negative and positive flip rates over all instances (Yan et al. 2021, "Positive-congruent
    training"; Dutta et al. 2024, "Accuracy is not all you need").

    All arguments: integer class ids, shape (n,).
    `negative = 1/n Σ_i 1[ŷ_ref,i = y_i ∧ ŷ_cand,i ≠ y_i]`,
    `positive = 1/n Σ_i 1[ŷ_ref,i ≠ y_i ∧ ŷ_cand,i = y_i]`. An instance both models get wrong
    is never a flip, even when the two wrong classes differ. `positive − negative` equals the
    accuracy delta `acc(cand) − acc(ref)`. The rates are `parity.flip_counts` over n.
    """
    counts = flip_counts(y_true, reference_pred, candidate_pred)
    n = len(np.asarray(y_true))  # flip_counts has checked it: 1-D, n >= 1
    return FlipRates(negative=counts.broken / n, positive=counts.fixed / n)


def negative_flip_rate(
    y_true: ArrayLike, reference_pred: ArrayLike, candidate_pred: ArrayLike
) -> float:
    """Fraction of all instances the reference gets right and the candidate gets wrong.

    Shapes and rules as `flip_rates`; in [0, 1].
    """
    return flip_rates(y_true, reference_pred, candidate_pred).negative


def positive_flip_rate(
    y_true: ArrayLike, reference_pred: ArrayLike, candidate_pred: ArrayLike
) -> float:
    """Fraction of all instances the reference gets wrong and the candidate gets right.

    Shapes and rules as `flip_rates`; in [0, 1].
    """
    return flip_rates(y_true, reference_pred, candidate_pred).positive
