"""ERASER comprehensiveness and sufficiency: hand-computed, then a direct per-k loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trustdiff.metrics.faithfulness import (
    Faithfulness,
    comprehensiveness,
    erasure_masks,
    faithfulness,
    sufficiency,
)


def test_masks_by_hand() -> None:
    # Ranking by signed score: word 2 (0.9), then words 0 and 3 (0.5, tie: position), word 1.
    masks = erasure_masks([0.5, -2.0, 0.9, 0.5], top_k=3)
    assert masks.order.tolist() == [2, 0, 3, 1]
    assert masks.without_top.tolist() == [
        [True, True, False, True],
        [False, True, False, True],
        [False, True, False, False],
    ]
    assert (masks.only_top == ~masks.without_top).all()


def test_top_k_is_capped_at_the_number_of_words() -> None:
    masks = erasure_masks([0.1, 0.2], top_k=10)
    assert masks.without_top.shape == (2, 2)
    assert not masks.without_top[-1].any()  # k = d removes every word


def test_scores_by_hand() -> None:
    # p(x) = 0.9; removing top-1, top-2 gives 0.6, 0.3; keeping them gives 0.7, 0.85.
    assert comprehensiveness(0.9, [0.6, 0.3]) == pytest.approx((0.3 + 0.6) / 2)
    assert sufficiency(0.9, [0.7, 0.85]) == pytest.approx((0.2 + 0.05) / 2)
    assert faithfulness(0.9, [0.6, 0.3], [0.7, 0.85]) == Faithfulness(
        comprehensiveness=pytest.approx(0.45), sufficiency=pytest.approx(0.125)
    )


# A bag-of-words logistic model: its exact attribution of a word is the word's weight.
WEIGHTS = {"great": 2.0, "fun": 1.2, "plot": 0.1, "boring": -1.5, "the": 0.0, "long": -0.4}
BIAS = -0.2


def _positive_probability(words: list[str]) -> float:
    return 1.0 / (1.0 + math.exp(-(BIAS + sum(WEIGHTS[word] for word in words))))


@pytest.mark.parametrize(
    "sentence",
    ["the plot is great fun but long", "boring long plot", "great great fun the the"],
)
@pytest.mark.parametrize("top_k", [1, 3, 10])
def test_against_a_direct_per_k_loop(sentence: str, top_k: int) -> None:
    words = [word for word in sentence.split() if word in WEIGHTS]
    attributions = np.array([WEIGHTS[word] for word in words])
    full = _positive_probability(words)

    # Vectorised: masks, one batch of model calls, the metric functions.
    masks = erasure_masks(attributions, top_k=top_k)
    without = [
        _positive_probability([w for w, keep in zip(words, row, strict=True) if keep])
        for row in masks.without_top
    ]
    only = [
        _positive_probability([w for w, keep in zip(words, row, strict=True) if keep])
        for row in masks.only_top
    ]
    scores = faithfulness(full, without, only)

    # Direct: for each k, sort the words, drop or keep the first k, call the model.
    ranked = sorted(range(len(words)), key=lambda i: (-attributions[i], i))
    k_max = min(top_k, len(words))
    comprehensiveness_terms, sufficiency_terms = [], []
    for k in range(1, k_max + 1):
        top = set(ranked[:k])
        removed = [word for i, word in enumerate(words) if i not in top]
        kept = [word for i, word in enumerate(words) if i in top]
        comprehensiveness_terms.append(full - _positive_probability(removed))
        sufficiency_terms.append(full - _positive_probability(kept))
    assert len(without) == len(only) == k_max  # 2·k model calls, no more
    assert scores.comprehensiveness == pytest.approx(sum(comprehensiveness_terms) / k_max)
    assert scores.sufficiency == pytest.approx(sum(sufficiency_terms) / k_max)


def test_the_true_ranking_beats_a_reversed_one() -> None:
    words = ["the", "plot", "great", "fun", "long"]
    attributions = np.array([WEIGHTS[word] for word in words])
    full = _positive_probability(words)

    def score(ranking_scores: np.ndarray) -> float:
        masks = erasure_masks(ranking_scores, top_k=3)
        curve = [
            _positive_probability([w for w, keep in zip(words, row, strict=True) if keep])
            for row in masks.without_top
        ]
        return comprehensiveness(full, curve)

    assert score(attributions) > score(-attributions)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: erasure_masks([], top_k=2), "non-empty"),
        (lambda: erasure_masks([0.1, np.nan], top_k=2), "NaN"),
        (lambda: erasure_masks([0.1], top_k=0), "top_k must be"),
        (lambda: comprehensiveness(1.2, [0.5]), r"full_probability must be a probability"),
        (lambda: comprehensiveness(float("nan"), [0.5]), "full_probability"),
        (lambda: sufficiency(0.5, [0.5, 1.5]), r"outside \[0, 1\]"),
        (lambda: sufficiency(0.5, []), "non-empty"),
        (lambda: faithfulness(0.5, [0.5], [0.5, 0.4]), "inconsistent numbers of steps"),
    ],
)
def test_bad_input_raises(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]
