"""LIME over word positions through `lime.lime_text.LimeTextExplainer`, several outputs at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from trustdiff.config import Masking
from trustdiff.explain.words import WordFeatures

if TYPE_CHECKING:
    from trustdiff.explain.words import PredictFunction

# LIME is handed a stand-in document of d "1" words. With bow=False it hides a word by writing
# `mask_string` in its place, so each perturbed stand-in reads as the keep-mask itself ("1 0 1")
# and we rebuild the real text (or text pair) from it. LIME's sampling depends only on d and
# the number of samples, so the draws, distances and fits are exactly those of a direct call on
# the real text with `split_expression=r"\s+"`, `bow=False`.
_KEPT = "1"
_HIDDEN = "0"


@dataclass(frozen=True)
class LimeAttributions:
    """LIME weights for each explained output column: `weights[column]` has shape (d,)."""

    weights: dict[int, NDArray[np.float64]]
    intercepts: dict[int, float]


def explain_lime(
    features: WordFeatures,
    predict: PredictFunction,
    *,
    columns: Sequence[int],
    num_samples: int,
    seed: int,
    masking: Masking = "remove",
    mask_token: str | None = None,
) -> LimeAttributions:
    """Explain the output `columns` of `predict` around `features` with one LIME neighbourhood.

    `predict(inputs)` returns an (n, C) array; every explained column is fitted on the same
    perturbed inputs, which is how both models are explained on identical texts. Every word is
    a feature (`feature_selection="none"`), so each weight vector has shape (d,).
    """
    from lime.lime_text import LimeTextExplainer

    d = len(features)
    if d == 0:
        raise ValueError("cannot explain an input without words")
    explainer = LimeTextExplainer(
        split_expression=r"\s",
        bow=False,
        mask_string=_HIDDEN,
        feature_selection="none",
        random_state=seed,
    )

    def classifier_fn(stand_ins: list[str]) -> NDArray[np.float64]:
        keep = np.array([stand_in.split(" ") for stand_in in stand_ins]) == _KEPT
        inputs = features.compose_many(keep, masking=masking, mask_token=mask_token)
        return np.asarray(predict(inputs), dtype=np.float64)

    explanation = explainer.explain_instance(
        " ".join([_KEPT] * d),
        classifier_fn,
        labels=tuple(columns),
        num_features=d,
        num_samples=num_samples,
    )
    weights: dict[int, NDArray[np.float64]] = {}
    for column in columns:
        vector = np.zeros(d, dtype=np.float64)
        for feature, weight in explanation.local_exp[column]:
            vector[feature] = weight
        weights[column] = vector
    return LimeAttributions(
        weights=weights,
        intercepts={column: float(explanation.intercept[column]) for column in columns},
    )
