"""measure_faithfulness: each model's own erasures, 2·k calls per model, a direct loop's values."""

from __future__ import annotations

import numpy as np
import pytest

from tests.explain.bag_of_words import SHIFTED_WEIGHTS, WEIGHTS, BagOfWordsModel, words_of
from trustdiff.explain.faithfulness import FaithfulnessSettings, measure_faithfulness
from trustdiff.inference import TextInput
from trustdiff.result import Attributions, Explanation

TEXTS = {
    0: "the excellent movie was dull and fun",
    3: "awful plot and good acting but fun",
    5: "excellent good fun with a dull awful ending",
}
SETTINGS = FaithfulnessSettings(
    top_k=3, masking="remove", mask_token=None, n_resamples=200, confidence_level=0.95, seed=0
)


def _explanations(with_shap: bool = False) -> dict[int, Explanation]:
    # Each model's attribution is its own true word weight (exact for a bag of words).
    explanations = {}
    for index, text in TEXTS.items():
        words = text.split()
        attributions = Attributions(
            reference=[WEIGHTS.get(word, 0.0) for word in words],
            candidate=[SHIFTED_WEIGHTS.get(word, 0.0) for word in words],
        )
        explanations[index] = Explanation(
            words=words,
            segments=[0] * len(words),
            target="positive",
            lime=attributions,
            shap=attributions if with_shap else None,
        )
    return explanations


def _direct(model: BagOfWordsModel, words: list[str], scores: list[float], top_k: int):
    """Comprehensiveness and sufficiency by sorting and calling the model once per k."""
    ranked = sorted(range(len(words)), key=lambda i: (-scores[i], i))
    full = model.predict_proba([" ".join(words)])[0, 1]
    k_max = min(top_k, len(words))
    comprehensiveness = sufficiency = 0.0
    for k in range(1, k_max + 1):
        top = set(ranked[:k])
        removed = " ".join(w for i, w in enumerate(words) if i not in top)
        kept = " ".join(w for i, w in enumerate(words) if i in top)
        comprehensiveness += full - model.predict_proba([removed])[0, 1]
        sufficiency += full - model.predict_proba([kept])[0, 1]
    return comprehensiveness / k_max, sufficiency / k_max


def _run(explanations: dict[int, Explanation]):
    reference, candidate = BagOfWordsModel(), BagOfWordsModel(weights=SHIFTED_WEIGHTS)
    full_calls: list[list[TextInput]] = []

    def full_predict(inputs: list[TextInput]) -> np.ndarray:
        # Stands in for the evaluator's cache: not counted as model calls.
        full_calls.append(inputs)
        return np.hstack(
            [
                BagOfWordsModel().predict_proba(inputs),
                BagOfWordsModel(weights=SHIFTED_WEIGHTS).predict_proba(inputs),
            ]
        )

    summaries, per_row = measure_faithfulness(
        explanations,
        targets={index: (1, 1) for index in explanations},
        full_predict=full_predict,
        model_predicts=[reference.predict_proba, candidate.predict_proba],
        settings=SETTINGS,
    )
    return summaries, per_row, reference, candidate, full_calls


def test_values_match_a_direct_per_k_loop() -> None:
    summaries, per_row, *_ = _run(_explanations())
    for index, text in TEXTS.items():
        words = text.split()
        for model_name, model, weights in (
            ("reference", BagOfWordsModel(), WEIGHTS),
            ("candidate", BagOfWordsModel(weights=SHIFTED_WEIGHTS), SHIFTED_WEIGHTS),
        ):
            expected = _direct(model, words, [weights.get(w, 0.0) for w in words], top_k=3)
            measured = per_row[index]["lime"][model_name]
            assert measured["comprehensiveness"] == pytest.approx(expected[0])
            assert measured["sufficiency"] == pytest.approx(expected[1])
    summary = summaries["lime"]
    assert summary.n_instances == len(TEXTS)
    reference_mean = np.mean(
        [row["lime"]["reference"]["comprehensiveness"] for row in per_row.values()]
    )
    candidate_mean = np.mean(
        [row["lime"]["candidate"]["comprehensiveness"] for row in per_row.values()]
    )
    assert summary.reference.comprehensiveness.mean == pytest.approx(reference_mean)
    assert summary.comprehensiveness_delta.value == pytest.approx(candidate_mean - reference_mean)
    assert summary.comprehensiveness_delta.ci_low <= summary.comprehensiveness_delta.value
    assert summary.comprehensiveness_delta.value <= summary.comprehensiveness_delta.ci_high


def test_each_model_sees_only_its_own_two_k_erasures() -> None:
    _, _, reference, candidate, full_calls = _run(_explanations())
    # k = 3 per explanation: at most 2·k inputs per model per explained instance.
    assert len(reference.seen) <= 2 * 3 * len(TEXTS)
    assert len(candidate.seen) <= 2 * 3 * len(TEXTS)
    # Row 3: the reference's top word is "good" (1.5), the candidate's "plot" (2.0, and "good"
    # is −1.5 for it), so only the reference evaluates the row without "good".
    reference_erasures = {" ".join(words_of(value)) for value in reference.seen}
    assert "awful plot and acting but fun" in reference_erasures
    assert "awful plot and acting but fun" not in {" ".join(words_of(v)) for v in candidate.seen}
    # The whole inputs come from the joint function (the evaluator's cache), once each.
    assert sorted(full_calls[0]) == sorted(TEXTS.values())
    assert len(full_calls) == 1


def test_methods_share_one_call_per_model() -> None:
    summaries, per_row, reference, _, _ = _run(_explanations(with_shap=True))
    assert set(summaries) == {"lime", "shap"}
    # Identical attributions: the shap erasures repeat lime's and are not evaluated again.
    assert len(reference.seen) <= 2 * 3 * len(TEXTS)
    assert per_row[0]["shap"] == per_row[0]["lime"]


def test_nothing_explained_nothing_measured() -> None:
    summaries, per_row, reference, _, full_calls = _run({})
    assert summaries == {} and per_row == {}
    assert reference.seen == [] and full_calls == []
