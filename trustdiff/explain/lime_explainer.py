"""LIME over word positions through `lime.lime_text.LimeTextExplainer`, several outputs at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from trustdiff.config import Masking
from trustdiff.explain.attributions import WordAttributions
from trustdiff.explain.words import WordFeatures

if TYPE_CHECKING:
    from trustdiff.explain.words import PredictFunction
    from trustdiff.inference import TextInput

# LIME is handed a stand-in document of d "1" words. With bow=False it hides a word by writing
# `mask_string` in its place, so each perturbed stand-in reads as the keep-mask itself ("1 0 1")
# and we rebuild the real text (or text pair) from it. LIME's sampling depends only on d and
# the number of samples, so the draws, distances and fits are exactly those of a direct call on
# the real text with `split_expression=r"\s+"`, `bow=False`.
_KEPT = "1"
_HIDDEN = "0"


def lime_keep_masks(d: int, *, num_samples: int, seed: int) -> NDArray[np.bool_]:
    """The keep-masks LIME evaluates for d words, shape (num_samples, d), row 0 all kept.

    The draws of lime 0.2.0.1's `LimeTextExplainer` seeded with `seed` (its private
    `__data_labels_distances`): a `RandomState(seed)` draws num_samples − 1 sizes in
    [1, d], then for each hides `size` distinct words (`choice(range(d), size,
    replace=False)`). They depend on nothing but d, the sample count and the seed, which is
    what lets every LIME input be evaluated before LIME runs (`inputs_ahead`); a test holds
    them equal to what LIME asks for.
    """
    random_state = np.random.RandomState(seed)
    sizes = random_state.randint(1, d + 1, num_samples - 1)
    masks = np.ones((num_samples, d), dtype=bool)
    for row, size in enumerate(sizes, start=1):
        masks[row, random_state.choice(range(d), size, replace=False)] = False
    return masks


def lime_inputs(
    features: WordFeatures,
    *,
    num_samples: int,
    seed: int,
    masking: Masking = "remove",
    mask_token: str | None = None,
) -> list[TextInput]:
    """Every input `explain_lime` with these arguments sends to `predict`, in its order."""
    keep = lime_keep_masks(len(features), num_samples=num_samples, seed=seed)
    return features.compose_many(keep, masking=masking, mask_token=mask_token)


def explain_lime(
    features: WordFeatures,
    predict: PredictFunction,
    *,
    columns: Sequence[int],
    num_samples: int,
    seed: int,
    masking: Masking = "remove",
    mask_token: str | None = None,
) -> WordAttributions:
    """Explain the output `columns` of `predict` around `features` with one LIME neighbourhood.

    `predict(inputs)` returns an (n, C) array; every explained column is fitted on the same
    perturbed inputs, which is how both models are explained on identical texts. Every word is
    a feature (`feature_selection="none"`), so each column gets d weights; the base values are
    LIME's intercepts.
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
    scores = np.zeros((len(columns), d), dtype=np.float64)
    for row, column in enumerate(columns):
        for feature, weight in explanation.local_exp[column]:
            scores[row, feature] = weight
    return WordAttributions(
        words=features.words,
        targets=tuple(columns),
        scores=scores,
        base_values=np.array([explanation.intercept[column] for column in columns]),
    )
