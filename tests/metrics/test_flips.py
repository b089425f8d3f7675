"""Directional flip rates: hand-computed, then identities with the parity metrics."""

from __future__ import annotations

import numpy as np
import pytest

from trustdiff.metrics.flips import FlipRates, flip_rates, negative_flip_rate, positive_flip_rate
from trustdiff.metrics.parity import accuracy, flip_counts

Y_TRUE = [0, 0, 1, 1, 2, 2]
REFERENCE_PRED = [0, 0, 1, 0, 1, 2]  # right on rows 0, 1, 2, 5
CANDIDATE_PRED = [0, 1, 0, 1, 0, 2]  # right on rows 0, 3, 5


def test_flip_rates_by_hand() -> None:
    # negative: rows 1, 2 (reference right, candidate wrong); positive: row 3.
    # Row 4 is wrong for both (with different classes): no flip.
    assert flip_rates(Y_TRUE, REFERENCE_PRED, CANDIDATE_PRED) == FlipRates(
        negative=2 / 6, positive=1 / 6
    )
    assert negative_flip_rate(Y_TRUE, REFERENCE_PRED, CANDIDATE_PRED) == pytest.approx(1 / 3)
    assert positive_flip_rate(Y_TRUE, REFERENCE_PRED, CANDIDATE_PRED) == pytest.approx(1 / 6)


def test_identical_models_never_flip() -> None:
    assert flip_rates([0, 1, 2], [2, 1, 0], [2, 1, 0]) == FlipRates(negative=0.0, positive=0.0)


@pytest.mark.parametrize("seed", range(5))
def test_rates_match_flip_counts_and_the_accuracy_delta(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 200
    truth, reference, candidate = (rng.integers(0, 3, n) for _ in range(3))
    rates = flip_rates(truth, reference, candidate)
    counts = flip_counts(truth, reference, candidate)
    assert rates.negative * n == pytest.approx(counts.broken)
    assert rates.positive * n == pytest.approx(counts.fixed)
    assert rates.positive - rates.negative == pytest.approx(
        accuracy(truth, candidate) - accuracy(truth, reference)
    )
