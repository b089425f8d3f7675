"""A bag-of-words logistic model with known word weights, and a fake evaluator around it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from trustdiff.inference import TextInput

WEIGHTS: dict[str, float] = {
    "excellent": 3.0,
    "awful": -2.5,
    "good": 1.5,
    "dull": -1.0,
    "fun": 0.6,
}
SHIFTED_WEIGHTS: dict[str, float] = {**WEIGHTS, "good": -1.5, "plot": 2.0}


def words_of(value: TextInput) -> list[str]:
    if isinstance(value, tuple):
        return value[0].split() + value[1].split()
    return value.split()


@dataclass
class BagOfWordsModel:
    """p(positive) = sigmoid(bias + Σ weight(word)): each word's true effect is its weight."""

    weights: Mapping[str, float] = field(default_factory=lambda: dict(WEIGHTS))
    bias: float = 0.0
    # Like int8 dynamic quantization, outputs then depend on the rest of the batch.
    batch_dependence: float = 0.0
    seen: list[TextInput] = field(default_factory=list)

    def predict_proba(self, inputs: Sequence[TextInput]) -> NDArray[np.float64]:
        self.seen.extend(inputs)
        logits = np.array(
            [self.bias + sum(self.weights.get(word, 0.0) for word in words_of(v)) for v in inputs]
        )
        if self.batch_dependence and len(logits):
            logits = logits + self.batch_dependence * logits.mean()
        positive = 1.0 / (1.0 + np.exp(-logits))
        return np.column_stack([1.0 - positive, positive])


@dataclass
class FakeTokenizer:
    mask_token: str | None = "[MASK]"


@dataclass
class FakeRunner:
    model: BagOfWordsModel
    tokenizer: FakeTokenizer = field(default_factory=FakeTokenizer)


class FakeEvaluator:
    """`BatchingEvaluator`'s interface over numpy models, recording every requested input."""

    # No cache: nothing is sent ahead, every explainer call reaches the models.
    cache_size = 0

    def __init__(self, *models: BagOfWordsModel, mask_token: str | None = "[MASK]") -> None:
        self.runners = [FakeRunner(model, FakeTokenizer(mask_token)) for model in models]
        self.requests: list[list[TextInput]] = []
        # Per request: the runner indices asked for (None: all).
        self.selections: list[tuple[int, ...] | None] = []

    def predict_proba(
        self, inputs: Sequence[TextInput], *, runners: Sequence[int] | None = None
    ) -> list[NDArray[np.float64]]:
        self.requests.append(list(inputs))
        self.selections.append(None if runners is None else tuple(runners))
        selected = range(len(self.runners)) if runners is None else runners
        return [self.runners[index].model.predict_proba(inputs) for index in selected]


@dataclass
class SimpleDataset:
    inputs: list[TextInput]
    labels: list[int]
