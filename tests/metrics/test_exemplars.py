"""Disagreement exemplars: groups, order and caps by hand; shifts against a direct loop."""

from __future__ import annotations

import numpy as np
import pytest

from trustdiff.metrics.exemplars import ExemplarGroup, disagreement_exemplars, probability_shift

REFERENCE = np.array(
    [
        [0.9, 0.1, 0.0],  # 0: ref 0, cand 1, shift 0.8
        [0.6, 0.4, 0.0],  # 1: ref 0, cand 1, shift 0.2
        [0.2, 0.8, 0.0],  # 2: ref 1, cand 0, shift 0.6
        [0.5, 0.3, 0.2],  # 3: agree (0)
        [0.8, 0.2, 0.0],  # 4: ref 0, cand 1, shift 0.8 (tie with row 0)
        [0.1, 0.1, 0.8],  # 5: ref 2, cand 0, shift 0.7
    ]
)
CANDIDATE = np.array(
    [
        [0.1, 0.9, 0.0],
        [0.4, 0.6, 0.0],
        [0.8, 0.2, 0.0],
        [0.6, 0.2, 0.2],
        [0.0, 1.0, 0.0],
        [0.8, 0.1, 0.1],
    ]
)


def test_groups_by_hand() -> None:
    groups = disagreement_exemplars(REFERENCE, CANDIDATE, per_group=2)
    assert groups == [
        ExemplarGroup(0, 1, count=3, rows=(0, 4), shifts=pytest.approx((0.8, 0.8))),
        ExemplarGroup(1, 0, count=1, rows=(2,), shifts=pytest.approx((0.6,))),
        ExemplarGroup(2, 0, count=1, rows=(5,), shifts=pytest.approx((0.7,))),
    ]


def test_no_flip_no_group() -> None:
    assert disagreement_exemplars(REFERENCE, REFERENCE) == []


def test_probability_shift_against_a_direct_loop() -> None:
    rng = np.random.default_rng(0)
    reference = rng.dirichlet(np.ones(4), size=30)
    candidate = rng.dirichlet(np.ones(4), size=30)
    expected = [
        max(sum(max(p - q, 0.0) for p, q in zip(row_p, row_q, strict=True)), 0.0)
        for row_p, row_q in zip(reference, candidate, strict=True)
    ]
    np.testing.assert_allclose(probability_shift(reference, candidate), expected, atol=1e-12)


def test_bad_per_group_raises() -> None:
    with pytest.raises(ValueError, match="per_group must be"):
        disagreement_exemplars(REFERENCE, CANDIDATE, per_group=0)
