"""The explainers' one return type: shapes checked on construction, read-only, by target."""

from __future__ import annotations

import numpy as np
import pytest

from tests.explain.bag_of_words import BagOfWordsModel
from trustdiff.explain.attributions import WordAttributions
from trustdiff.explain.lime_explainer import explain_lime
from trustdiff.explain.shap_explainer import explain_shap
from trustdiff.explain.words import WordFeatures

WORDS = ("a", "good", "film")


def make(**changes: object) -> WordAttributions:
    fields: dict[str, object] = {
        "words": WORDS,
        "targets": (1, 3),
        "scores": [[0.1, 0.5, -0.2], [0.0, 0.4, 0.3]],
        "base_values": [0.5, 0.6],
    }
    fields.update(changes)
    return WordAttributions(**fields)  # type: ignore[arg-type]


def test_scores_and_base_values_by_target() -> None:
    attributions = make()
    np.testing.assert_array_equal(attributions.scores_of(3), [0.0, 0.4, 0.3])
    assert attributions.base_value_of(1) == 0.5
    assert attributions.scores.shape == (2, 3)
    assert attributions.scores_of(1).flags.c_contiguous
    with pytest.raises(ValueError, match="target 2 was not explained"):
        attributions.scores_of(2)


def test_the_container_owns_read_only_copies() -> None:
    scores = np.array([[0.1, 0.5, -0.2], [0.0, 0.4, 0.3]])
    attributions = make(scores=scores)
    scores[0, 0] = 9.0
    assert attributions.scores[0, 0] == 0.1
    with pytest.raises(ValueError, match="read-only"):
        attributions.scores[0, 0] = 1.0
    with pytest.raises(AttributeError):
        attributions.words = ("x",)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"words": ()}, "words is empty"),
        ({"words": ("a", 2, "film")}, "words must be strings"),
        ({"targets": ()}, "targets is empty"),
        ({"targets": (1, 1)}, "targets repeat a column"),
        ({"targets": (1, -3)}, "got -3"),
        ({"targets": (1, True)}, "got True"),
        ({"scores": [[0.1, 0.5], [0.0, 0.4]]}, r"scores has shape \(2, 2\), expected \(2, 3\)"),
        ({"scores": [0.1, 0.5, -0.2]}, r"scores has shape \(3,\)"),
        ({"scores": [[0.1, np.nan, 0.0], [0.0, 0.4, 0.3]]}, "scores contain NaN"),
        ({"base_values": [0.5]}, r"base_values has shape \(1,\), expected \(2,\)"),
        ({"base_values": [0.5, np.inf]}, "base_values contain NaN or infinite"),
    ],
)
def test_bad_shapes_and_values_raise_naming_them(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**changes)


def test_lime_and_shap_return_the_same_type() -> None:
    features = WordFeatures.from_input("the excellent movie was dull")
    model = BagOfWordsModel()

    def predict(inputs: list) -> np.ndarray:  # type: ignore[type-arg]
        probabilities = model.predict_proba(inputs)
        return np.hstack([probabilities, probabilities])

    lime = explain_lime(features, predict, columns=(1, 3), num_samples=40, seed=0)
    shap = explain_shap(features, predict, columns=(1, 3), max_evals=40, seed=0)
    for attributions in (lime, shap):
        assert isinstance(attributions, WordAttributions)
        assert attributions.words == features.words
        assert attributions.targets == (1, 3)
        assert attributions.scores.shape == (2, len(features))
        # Identical models on identical perturbations: identical rows.
        np.testing.assert_array_equal(attributions.scores_of(1), attributions.scores_of(3))
