"""LIME and SHAP on word features: known attributions, additivity, seeds, the direct lime call."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import pytest
from lime.lime_text import LimeTextExplainer

from tests.explain.bag_of_words import SHIFTED_WEIGHTS, WEIGHTS, BagOfWordsModel
from trustdiff.config import Masking, ShapAlgorithm
from trustdiff.explain.lime_explainer import explain_lime, lime_inputs
from trustdiff.explain.shap_explainer import (
    GlobalRandomStream,
    explain_shap,
    partition_inputs,
    word_partition_tree,
)
from trustdiff.explain.words import WordFeatures
from trustdiff.metrics.alignment import top_k_features

if TYPE_CHECKING:
    from trustdiff.explain.words import PredictFunction
    from trustdiff.inference import TextInput

TEXT = "the excellent movie was dull but the acting good and the plot awful"
TRUE_TOP = ["excellent", "awful", "good", "dull"]  # by |weight|


def joint(reference: BagOfWordsModel, candidate: BagOfWordsModel) -> PredictFunction:
    """Both models' probabilities side by side, as the engine's prediction function."""

    def predict(inputs: list[TextInput]) -> np.ndarray:
        return np.hstack([reference.predict_proba(inputs), candidate.predict_proba(inputs)])

    return predict


def top_words(features: WordFeatures, attributions: np.ndarray, k: int) -> list[str]:
    return [features.words[i] for i in top_k_features(attributions, k=k)]


@pytest.mark.parametrize("masking", ["remove", "mask_token"])
def test_lime_recovers_the_true_top_words(masking: Masking) -> None:
    features = WordFeatures.from_input(TEXT)
    model = BagOfWordsModel()
    result = explain_lime(
        features,
        joint(model, model),
        columns=(1, 3),
        num_samples=300,
        seed=0,
        masking=masking,
        mask_token="[MASK]",
    )
    assert set(top_words(features, result.scores_of(1), 4)) == set(TRUE_TOP)
    assert top_words(features, result.scores_of(1), 2) == TRUE_TOP[:2]
    weights = result.scores_of(1)
    assert weights[features.words.index("excellent")] > 0 > weights[features.words.index("awful")]
    # Both models saw the same perturbations, so identical models get identical weights.
    np.testing.assert_array_equal(result.scores_of(1), result.scores_of(3))


@pytest.mark.parametrize("algorithm", ["partition", "permutation", "kernel"])
def test_shap_recovers_true_words_and_is_additive(algorithm: ShapAlgorithm) -> None:
    features = WordFeatures.from_input(TEXT)
    model = BagOfWordsModel(bias=0.3)
    predict = joint(model, model)
    result = explain_shap(
        features,
        predict,
        columns=(1, 2),
        algorithm=algorithm,
        max_evals=600,
        seed=3,
    )
    assert top_words(features, result.scores_of(1), 4) == TRUE_TOP
    neutral = [i for i, word in enumerate(features.words) if word not in WEIGHTS]
    assert np.abs(result.scores_of(1)[neutral]).max() < 0.02
    full = predict([features.original()])[0]
    for column in (1, 2):
        total = result.base_value_of(column) + result.scores_of(column).sum()
        assert total == pytest.approx(full[column], abs=1e-6)
    # Column 2 is the candidate's negative class: 1 − p, so its values are the negatives.
    np.testing.assert_allclose(result.scores_of(2), -result.scores_of(1), atol=1e-9)


@pytest.mark.parametrize("algorithm", ["partition", "permutation", "kernel"])
def test_shap_same_seed_same_values_even_concurrently(algorithm: ShapAlgorithm) -> None:
    features = WordFeatures.from_input(TEXT + " fun fun")
    model = BagOfWordsModel()

    def run(seed: int) -> np.ndarray:
        return explain_shap(
            features,
            joint(model, model),
            columns=(1, 3),
            algorithm=algorithm,
            max_evals=120,
            seed=seed,
        ).scores_of(1)

    first = run(7)
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(run, [7, 8, 7, 8]))
    np.testing.assert_array_equal(concurrent[0], first)
    np.testing.assert_array_equal(concurrent[2], first)
    np.testing.assert_array_equal(concurrent[1], concurrent[3])


def test_lime_same_seed_same_weights_other_seed_differs() -> None:
    features = WordFeatures.from_input(TEXT)
    model = BagOfWordsModel()

    def run(seed: int) -> np.ndarray:
        return explain_lime(
            features, joint(model, model), columns=(1,), num_samples=100, seed=seed
        ).scores_of(1)

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


@pytest.mark.parametrize(("masking", "mask_string"), [("mask_token", "[MASK]"), ("remove", "")])
def test_lime_equals_a_direct_lime_text_explainer_call(masking: Masking, mask_string: str) -> None:
    """Engine LIME for one model = `LimeTextExplainer.explain_instance` on the real text."""
    model = BagOfWordsModel(bias=-0.2)
    other = BagOfWordsModel(weights={"plot": 1.0})
    features = WordFeatures.from_input(TEXT)
    d = len(features)
    direct_explainer = LimeTextExplainer(
        split_expression=r"\s+",
        bow=False,
        mask_string=mask_string,
        random_state=11,
        feature_selection="none",
    )
    direct = direct_explainer.explain_instance(
        TEXT, model.predict_proba, labels=(1,), num_features=d, num_samples=250
    )
    expected = np.zeros(d)
    for feature, weight in direct.local_exp[1]:
        expected[feature] = weight
    engine = explain_lime(
        features,
        joint(model, other),
        columns=(1, 3),
        num_samples=250,
        seed=11,
        masking=masking,
        mask_token="[MASK]",
    )
    np.testing.assert_array_equal(engine.scores_of(1), expected)  # lime's own fit, bit for bit
    assert engine.base_values[0] == direct.intercept[1]


@pytest.mark.parametrize(
    ("value", "num_samples", "seed", "masking"),
    [
        (TEXT, 250, 11, "remove"),
        ("one", 30, 0, "mask_token"),
        ("two words", 40, 2**32 - 1, "remove"),
        (("good film , really", "bad plot"), 120, 7, "mask_token"),
        (" ".join(f"word{index}" for index in range(45)), 400, 123_456, "remove"),
    ],
)
def test_lime_inputs_are_exactly_what_lime_sends(
    value: TextInput, num_samples: int, seed: int, masking: Masking
) -> None:
    """The inputs computed ahead, and sent by the engine's LIME, are the lime library's own
    draws in its order: lime run on a stand-in of d "1" words, writing "0" for a hidden word,
    reads out the keep-masks it draws."""
    features = WordFeatures.from_input(value)
    d = len(features)
    stand_ins: list[str] = []

    def record(batch: list[str]) -> np.ndarray:
        stand_ins.extend(batch)
        return np.full((len(batch), 2), 0.5)

    LimeTextExplainer(
        split_expression=r"\s", bow=False, mask_string="0", random_state=seed
    ).explain_instance(
        " ".join(["1"] * d), record, labels=(1,), num_features=d, num_samples=num_samples
    )
    lime_masks = np.array([stand_in.split(" ") for stand_in in stand_ins]) == "1"
    model = BagOfWordsModel()
    explain_lime(
        features,
        joint(model, model),
        columns=(1,),
        num_samples=num_samples,
        seed=seed,
        masking=masking,
        mask_token="[MASK]",
    )
    ahead = lime_inputs(
        features, num_samples=num_samples, seed=seed, masking=masking, mask_token="[MASK]"
    )
    assert len(ahead) == num_samples
    assert ahead == features.compose_many(lime_masks, masking=masking, mask_token="[MASK]")
    assert model.seen == ahead + ahead  # joint() asks the same model twice


class CallRecorder:
    """A prediction function that records each call's inputs."""

    def __init__(self, model: BagOfWordsModel) -> None:
        self.model = model
        self.calls: list[list[TextInput]] = []

    def __call__(self, inputs: list[TextInput]) -> np.ndarray:
        self.calls.append(list(inputs))
        return self.model.predict_proba(inputs)


@pytest.mark.parametrize(
    ("value", "max_evals", "masking"),
    [
        (TEXT, 500, "remove"),
        (TEXT, 40, "mask_token"),
        (TEXT + " , fun and good", 9, "remove"),
        (TEXT, 2, "remove"),
        ("one", 50, "mask_token"),
        ("two words", 50, "remove"),
        (("good film , really", "bad plot"), 60, "mask_token"),
        (("excellent", "dull"), 500, "remove"),
    ],
)
def test_partition_inputs_are_the_rounds_shap_sends_whatever_the_outputs(
    value: TextInput, max_evals: int, masking: Masking
) -> None:
    """The inputs computed ahead are shap's first calls (the two ends, then each round that
    pops its whole queue), call by call; what follows is the round the limit cut short."""
    features = WordFeatures.from_input(value)
    ahead = partition_inputs(features, max_evals=max_evals, masking=masking, mask_token="[MASK]")
    for model in (BagOfWordsModel(), BagOfWordsModel(weights=SHIFTED_WEIGHTS, bias=-0.4)):
        recorder = CallRecorder(model)
        explain_shap(
            features,
            recorder,
            columns=(1,),
            max_evals=max_evals,
            seed=5,
            masking=masking,
            mask_token="[MASK]",
        )
        start = 0
        for call in recorder.calls:
            if start == len(ahead):
                break
            # Within a round shap pops clusters by priority, which the outputs set.
            assert sorted(ahead[start : start + len(call)], key=repr) == sorted(call, key=repr)
            start += len(call)
        assert start == len(ahead)
        evaluated = sum(len(call) for call in recorder.calls)
        if evaluated > len(ahead):
            # Only a round the limit cut short (and what follows) is left to shap.
            assert evaluated >= max_evals - 1
    assert len(ahead) >= 2


def test_pair_partition_tree_joins_segments_at_the_root() -> None:
    features = WordFeatures.from_input(("good film , really", "bad plot"))
    tree = word_partition_tree(features)
    d = len(features)
    assert tree.shape == (d - 1, 4)
    members: dict[int, set[int]] = {i: {i} for i in range(d)}
    for row, (left, right, _, size) in enumerate(tree):
        members[d + row] = members[int(left)] | members[int(right)]
        assert len(members[d + row]) == size
        cluster = members[d + row]
        if row < len(tree) - 1:  # only the root mixes the two segments
            assert {features.segments[i] for i in cluster} in ({0}, {1})
    assert members[2 * d - 2] == set(range(d))


def test_single_word_inputs() -> None:
    model = BagOfWordsModel()
    features = WordFeatures.from_input("excellent")
    algorithms: tuple[ShapAlgorithm, ...] = ("partition", "permutation", "kernel")
    for algorithm in algorithms:
        values = explain_shap(
            features,
            joint(model, model),
            columns=(1,),
            algorithm=algorithm,
            max_evals=50,
        ).scores_of(1)
        assert values[0] == pytest.approx(1 / (1 + np.exp(-3.0)) - 0.5)
    weights = explain_lime(features, joint(model, model), columns=(1,), num_samples=20, seed=0)
    assert weights.scores_of(1).shape == (1,)


def test_global_random_stream_is_private_and_restores_the_outer_state() -> None:
    np.random.seed(123)
    outer = np.random.random(3)
    np.random.seed(123)
    stream = GlobalRandomStream(5)
    with stream.installed():
        first = np.random.random(2)
        with stream.set_aside():
            # Set aside: the outer generator, untouched by the stream's draws.
            np.testing.assert_array_equal(np.random.random(1), outer[:1])
        second = np.random.random(2)
    # The stream continues where it left off, with the same draws a fresh seed gives.
    np.testing.assert_array_equal(np.r_[first, second], np.random.RandomState(5).random(4))
    np.testing.assert_array_equal(np.random.random(2), outer[1:])
    # Leaving on an error still restores the outer state and lets go of the lock.
    with pytest.raises(RuntimeError), stream.installed():
        raise RuntimeError("shap failed")
    with GlobalRandomStream(5).installed():
        np.testing.assert_array_equal(np.random.random(1), first[:1])
