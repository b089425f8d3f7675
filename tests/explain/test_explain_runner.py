"""explain_and_align: sampling, both models on shared perturbations, noise floor, alignment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from lime.lime_text import LimeTextExplainer

from tests.explain.bag_of_words import (
    SHIFTED_WEIGHTS,
    WEIGHTS,
    BagOfWordsModel,
    FakeEvaluator,
    SimpleDataset,
)
from trustdiff.config import ExplainSettings
from trustdiff.errors import AuditCancelledError, ConfigError
from trustdiff.explain import explain_and_align
from trustdiff.explain.instance import instance_seed
from trustdiff.explain.runner import select_instances
from trustdiff.inference import TextInput
from trustdiff.metrics.alignment import ALIGNMENT_METRICS
from trustdiff.result import Explanation, MethodAlignment

LABELS = ["negative", "positive"]
TEXTS: list[str] = [
    "the excellent movie was dull",
    "awful plot and good acting",
    "",
    "fun fun and the ending was good",
    "the cast was dull and the music awful",
    "excellent",
    "a good film with an awful ending and excellent music",
]
SETTINGS = ExplainSettings(instances=4, lime_samples=60, shap_max_evals=80, top_k=3)


def dataset(texts: Sequence[TextInput] = TEXTS) -> SimpleDataset:
    return SimpleDataset(inputs=list(texts), labels=[i % 2 for i in range(len(texts))])


def audit(
    evaluator: FakeEvaluator,
    data: SimpleDataset,
    settings: ExplainSettings = SETTINGS,
    **options: Any,
) -> tuple[dict[str, MethodAlignment], dict[int, Explanation]]:
    reference, candidate = evaluator.predict_proba(data.inputs)
    evaluator.requests.clear()
    evaluator.selections.clear()
    return explain_and_align(
        evaluator,
        data,
        reference_proba=reference,
        candidate_proba=candidate,
        settings=settings,
        labels=LABELS,
        seed=options.pop("seed", 0),
        progress=options.pop("progress", None),
        should_cancel=options.pop("should_cancel", None),
        **options,
    )


def test_a_model_audited_against_itself_is_judged_exactly_at_the_floor() -> None:
    model = BagOfWordsModel()
    alignment, explanations = audit(FakeEvaluator(model, model), dataset())
    assert set(alignment) == {"lime", "shap"}
    lime, shap = alignment["lime"], alignment["shap"]
    # LIME samples: the judged figure metric(re-run, candidate) is the floor's distribution,
    # exactly, while the shared-perturbation diagnostic is perfect agreement.
    assert lime.judged == "rerun_vs_first_run"
    assert lime.noise_floor is not None and not lime.noise_floor.deterministic
    assert lime.shared_perturbations is not None
    for name in ALIGNMENT_METRICS:
        assert getattr(lime, name) == getattr(lime.noise_floor, name)
        assert getattr(lime.shared_perturbations, name).mean == pytest.approx(1.0)
    assert lime.jaccard_at_k.n == 4 and lime.n_instances == 4
    # Partition SHAP is deterministic: no floor; each model was explained in its own run.
    assert shap.noise_floor is not None and shap.noise_floor.deterministic
    assert shap.noise_floor.jaccard_at_k is None
    assert shap.judged == "separate_runs"
    for name in ALIGNMENT_METRICS:
        summary = getattr(shap, name)
        assert summary.mean == pytest.approx(1.0) and summary.ci_low == pytest.approx(1.0)
    assert len(explanations) == 4
    for explanation in explanations.values():
        assert explanation.lime is not None and explanation.shap is not None
        assert explanation.lime.reference == explanation.lime.candidate
        assert explanation.lime.reference_rerun is not None
        assert explanation.shap.reference_rerun == explanation.shap.reference
        assert explanation.alignment["shap"]["jaccard_at_k"] == 1.0


def test_a_different_candidate_is_flagged_and_noise_floor_is_reported() -> None:
    evaluator = FakeEvaluator(BagOfWordsModel(), BagOfWordsModel(weights=SHIFTED_WEIGHTS))
    settings = SETTINGS.model_copy(update={"instances": 6, "lime_samples": 200})
    alignment, explanations = audit(evaluator, dataset(), settings)
    lime = alignment["lime"]
    assert lime.noise_floor is not None
    # "good" flips sign in the candidate: the models disagree more than LIME disagrees with
    # itself under another seed.
    floor = lime.noise_floor
    for name in ("sign_agreement", "cosine_similarity"):
        summary, floor_summary = getattr(lime, name), getattr(floor, name)
        assert floor_summary is not None and summary.mean < floor_summary.mean
    assert alignment["shap"].noise_floor is not None
    assert alignment["shap"].noise_floor.deterministic
    assert alignment["shap"].cosine_similarity.mean < 1.0
    assert lime.settings["samples"] == 200
    assert alignment["shap"].settings["algorithm"] == "partition"
    # Empty rows are never sampled; every explanation is over the row's own words.
    assert 2 not in explanations
    for index, explanation in explanations.items():
        assert explanation.words == TEXTS[index].split()
        assert explanation.lime is not None
        assert len(explanation.lime.reference) == len(explanation.words)


def test_both_models_share_perturbations_and_the_rerun_forwards_the_reference_only() -> None:
    reference, candidate = BagOfWordsModel(), BagOfWordsModel(weights=SHIFTED_WEIGHTS)
    evaluator = FakeEvaluator(reference, candidate)
    data = dataset()
    reference.seen.clear()
    candidate.seen.clear()
    audit(evaluator, data, SETTINGS.model_copy(update={"methods": ("lime",)}))
    shared = [
        value
        for request, models in zip(evaluator.requests, evaluator.selections, strict=True)
        if models == (0, 1)
        for value in request
    ]
    # The first request is the whole dataset, predicted before explaining.
    assert candidate.seen[len(data.inputs) :] == shared and len(shared) > 100
    assert (0,) in evaluator.selections
    assert len(reference.seen) > len(candidate.seen)
    assert set(evaluator.selections) == {(0, 1), (0,)}


def test_seeded_and_deterministic_across_worker_counts() -> None:
    evaluator = FakeEvaluator(BagOfWordsModel(), BagOfWordsModel(weights=SHIFTED_WEIGHTS))
    settings = SETTINGS.model_copy(update={"shap_algorithm": "permutation"})
    one = audit(evaluator, dataset(), settings, workers=1)
    three = audit(evaluator, dataset(), settings, workers=3)
    assert one[0] == three[0]
    assert one[1] == three[1]
    other_seed = audit(evaluator, dataset(), settings, seed=1)
    assert other_seed[1] != one[1]


def test_lockstep_merging_is_reproducible_with_a_batch_dependent_model() -> None:
    # Outputs that depend on the batch (as int8-dynamic ones do) are still reproduced exactly:
    # the merged calls are the same on every run.
    def run() -> tuple[dict[str, MethodAlignment], dict[int, Explanation]]:
        candidate = BagOfWordsModel(weights=SHIFTED_WEIGHTS, batch_dependence=0.05)
        evaluator = FakeEvaluator(BagOfWordsModel(), candidate)
        return audit(evaluator, dataset(), SETTINGS, workers=3)

    first = run()
    for _ in range(3):
        assert run() == first


def test_engine_lime_equals_direct_lime_call() -> None:
    reference = BagOfWordsModel(bias=0.4)
    evaluator = FakeEvaluator(reference, BagOfWordsModel(weights=SHIFTED_WEIGHTS))
    data = dataset()
    settings = SETTINGS.model_copy(update={"methods": ("lime",), "masking": "mask_token"})
    _, explanations = audit(evaluator, data, settings, seed=5)
    for index, explanation in explanations.items():
        text = TEXTS[index]
        d = len(text.split())
        direct = LimeTextExplainer(
            split_expression=r"\s+",
            bow=False,
            mask_string="[MASK]",
            random_state=instance_seed(5, index, "lime", 0),
            feature_selection="none",
        ).explain_instance(
            text, reference.predict_proba, labels=(1,), num_features=d, num_samples=60
        )
        expected = np.zeros(d)
        for feature, weight in direct.local_exp[1]:
            expected[feature] = weight
        explained_class = LABELS.index(explanation.target)
        if explained_class == 0:  # binary: the negative class's weights are the negatives
            expected = -expected
        assert explanation.lime is not None
        np.testing.assert_allclose(explanation.lime.reference, expected, atol=1e-12)


def test_sentence_pairs_keep_the_boundary() -> None:
    pairs = [("the excellent movie", "was dull"), ("awful plot", "good acting and fun")]
    model = BagOfWordsModel()
    evaluator = FakeEvaluator(model, BagOfWordsModel(weights=SHIFTED_WEIGHTS))
    _, explanations = audit(evaluator, dataset(pairs), SETTINGS)
    assert set(explanations) == {0, 1}
    requested = [value for request in evaluator.requests for value in request]
    assert all(isinstance(value, tuple) and len(value) == 2 for value in requested)
    for index, explanation in explanations.items():
        assert "[SEP]" not in explanation.words
        first, second = pairs[index]
        assert explanation.segments == [0] * len(first.split()) + [1] * len(second.split())
    # Some perturbation emptied a whole segment, and the pair survived as a pair.
    assert any(value[0] == "" or value[1] == "" for value in requested)


def test_explained_class_options() -> None:
    reference = BagOfWordsModel()
    candidate = BagOfWordsModel(bias=-10.0)  # always predicts negative
    data = dataset()
    evaluator = FakeEvaluator(reference, candidate)
    settings = SETTINGS.model_copy(update={"methods": ("lime",), "noise_floor": False})
    _, by_reference = audit(evaluator, data, settings)
    _, own = audit(evaluator, data, settings.model_copy(update={"target": "own_prediction"}))
    _, gold = audit(evaluator, data, settings.model_copy(update={"target": "gold"}))
    for index in by_reference:
        reference_class = int(np.argmax(reference.predict_proba([TEXTS[index]])[0]))
        assert by_reference[index].target == LABELS[reference_class]
        assert gold[index].target == LABELS[index % 2]
        assert own[index].target == LABELS[reference_class]
        lime_by_reference, lime_own = by_reference[index].lime, own[index].lime
        assert lime_by_reference is not None and lime_own is not None
        # The candidate's own prediction is "negative": its weights flip when the reference
        # explained "positive", and agree otherwise.
        sign = -1.0 if reference_class == 1 else 1.0
        np.testing.assert_allclose(
            lime_own.candidate, sign * np.array(lime_by_reference.candidate), atol=1e-12
        )
        assert lime_by_reference.reference_rerun is None


def test_progress_cancel_and_empty_selection() -> None:
    model = BagOfWordsModel()
    evaluator = FakeEvaluator(model, model)
    calls: list[tuple[str, int, int]] = []
    audit(evaluator, dataset(), SETTINGS, progress=lambda *event: calls.append(event))
    assert calls[0] == ("explain", 0, 4) and calls[-1] == ("explain", 4, 4)
    assert [done for _, done, _ in calls] == [0, 1, 2, 3, 4]

    answers = iter([False, False, True])
    with pytest.raises(AuditCancelledError):
        audit(evaluator, dataset(), SETTINGS, should_cancel=lambda: next(answers, True), workers=1)

    none = SETTINGS.model_copy(update={"instances": 0})
    assert audit(evaluator, dataset(), none) == ({}, {})


def test_mask_token_needs_a_tokenizer_mask() -> None:
    model = BagOfWordsModel()
    evaluator = FakeEvaluator(model, model, mask_token=None)
    with pytest.raises(ConfigError, match="mask token"):
        audit(evaluator, dataset(), SETTINGS.model_copy(update={"masking": "mask_token"}))


def test_instance_sample_is_seeded() -> None:
    inputs = [f"word{i} other" for i in range(50)] + ["", "two words"]
    first = select_instances(inputs, count=10, seed=3, top_k=1)
    assert first == select_instances(inputs, count=10, seed=3, top_k=1)
    assert first.indices != select_instances(inputs, count=10, seed=4, top_k=1).indices
    assert first.indices == sorted(first.indices) and len(set(first.indices)) == 10
    assert (first.eligible, first.requested) == (51, 10)
    everything = select_instances(inputs, count=99, seed=0, top_k=1)
    assert everything.indices == [*range(50), 51] and everything.eligible == 51


def test_rows_with_no_more_than_k_words_are_never_explained() -> None:
    # k = 3: "excellent" (1 word) and "" are not eligible; 5 rows are.
    alignment, explanations = audit(
        FakeEvaluator(BagOfWordsModel(), BagOfWordsModel()),
        dataset(),
        SETTINGS.model_copy(update={"instances": 20, "methods": ("lime",)}),
    )
    assert sorted(explanations) == [0, 1, 3, 4, 6]
    assert alignment["lime"].eligible_instances == 5
    assert alignment["lime"].requested_instances == 20
    assert alignment["lime"].n_instances == 5
    short = select_instances(["a b c", "a b c d"], count=2, seed=0, top_k=3)
    assert short.indices == [1] and short.eligible == 1


def test_partition_shap_is_deterministic_and_permutation_shap_gets_a_measured_floor() -> None:
    evaluator = FakeEvaluator(BagOfWordsModel(), BagOfWordsModel(weights=SHIFTED_WEIGHTS))
    settings = SETTINGS.model_copy(update={"methods": ("shap",)})
    partition, _ = audit(evaluator, dataset(), settings)
    floor = partition["shap"].noise_floor
    assert floor is not None and floor.deterministic and floor.jaccard_at_k is None
    assert partition["shap"].judged == "separate_runs"
    permutation, explanations = audit(
        evaluator, dataset(), settings.model_copy(update={"shap_algorithm": "permutation"})
    )
    floor = permutation["shap"].noise_floor
    assert floor is not None and not floor.deterministic
    assert floor.jaccard_at_k is not None and floor.jaccard_at_k.n == 4
    assert permutation["shap"].judged == "rerun_vs_first_run"
    assert permutation["shap"].shared_perturbations is not None
    assert any(
        e.shap is not None and e.shap.reference_rerun != e.shap.reference
        for e in explanations.values()
    )


def test_the_twin_is_explained_on_the_candidates_perturbations() -> None:
    reference = BagOfWordsModel()
    candidate = BagOfWordsModel(weights=SHIFTED_WEIGHTS)
    twin = BagOfWordsModel(bias=0.3)
    evaluator = FakeEvaluator(reference, candidate, twin)
    data = dataset()
    probabilities = evaluator.predict_proba(data.inputs)
    evaluator.requests.clear()
    evaluator.selections.clear()
    candidate.seen.clear()
    twin.seen.clear()
    alignment, explanations = explain_and_align(
        evaluator,
        data,
        reference_proba=probabilities[0],
        candidate_proba=probabilities[1],
        twin_proba=probabilities[2],
        settings=SETTINGS.model_copy(update={"methods": ("lime",)}),
        labels=LABELS,
        seed=0,
        progress=None,
        should_cancel=None,
    )
    # LIME: one run for all three models, in the same evaluator calls.
    assert set(evaluator.selections) == {(0, 1, 2), (0,)}
    assert twin.seen == candidate.seen
    lime = alignment["lime"]
    assert lime.twin is not None and lime.twin.judged == "rerun_vs_first_run"
    assert lime.twin.jaccard_at_k.n == lime.jaccard_at_k.n == 4
    assert all(e.lime is not None and e.lime.twin is not None for e in explanations.values())


# 23 words, 9 of them weighted: a 40-evaluation budget cannot expand Partition's whole tree.
LONG_TEXT = (
    "the excellent cast was dull at times but the good music and the fun plot made up for "
    "an awful ending that was good fun"
)


def partition_attributions(*models: BagOfWordsModel) -> Explanation:
    settings = ExplainSettings(
        instances=1, methods=("shap",), shap_max_evals=40, top_k=3, target="gold"
    )
    alignment, explanations = audit(FakeEvaluator(*models), dataset([LONG_TEXT]), settings)
    shap = alignment["shap"]
    assert shap.noise_floor is not None and shap.noise_floor.deterministic
    assert shap.judged == "separate_runs" and shap.shared_perturbations is None
    return explanations[0]


def test_partition_shap_explains_each_model_as_it_would_be_alone() -> None:
    reference = BagOfWordsModel()
    shifted = BagOfWordsModel(weights=SHIFTED_WEIGHTS)
    other = BagOfWordsModel(weights={**WEIGHTS, "the": -0.8, "music": 1.1})
    against_shifted = partition_attributions(reference, shifted).shap
    against_other = partition_attributions(reference, other).shap
    shifted_as_reference = partition_attributions(shifted, reference).shap
    assert against_shifted is not None and against_other is not None
    assert shifted_as_reference is not None
    # The reference's attributions do not depend on the candidate beside it, and a candidate
    # is explained as it would be as the reference.
    assert against_shifted.reference == against_other.reference
    assert against_shifted.candidate == shifted_as_reference.reference
    assert against_shifted.reference_rerun == against_shifted.reference
    assert against_shifted.candidate != against_other.candidate


def test_alignment_intervals_follow_the_audits_resampling_settings() -> None:
    evaluator = FakeEvaluator(BagOfWordsModel(), BagOfWordsModel(weights=SHIFTED_WEIGHTS))
    settings = SETTINGS.model_copy(update={"instances": 6, "methods": ("lime",)})
    wide, _ = audit(evaluator, dataset(), settings, confidence_level=0.99)
    narrow, _ = audit(evaluator, dataset(), settings, confidence_level=0.5)
    none, _ = audit(evaluator, dataset(), settings, n_resamples=0)
    widths = []
    for name in ALIGNMENT_METRICS:
        high, low = getattr(wide["lime"], name), getattr(narrow["lime"], name)
        assert high.mean == low.mean == getattr(none["lime"], name).mean
        assert high.ci_high - high.ci_low >= low.ci_high - low.ci_low
        widths.append(high.ci_high - high.ci_low - (low.ci_high - low.ci_low))
        assert getattr(none["lime"], name).ci_low is None
    assert max(widths) > 0
