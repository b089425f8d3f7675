"""The explainer registry: every configurable method is registered, and looked up there."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, get_args

import numpy as np
import pytest

from tests.explain.bag_of_words import BagOfWordsModel, FakeEvaluator, SimpleDataset
from trustdiff.config import ExplainMethod, ExplainSettings
from trustdiff.explain import registry
from trustdiff.explain.attributions import WordAttributions
from trustdiff.explain.instance import explain_instance, instance_seed
from trustdiff.explain.registry import EXPLAINERS, Explainer, get_explainer
from trustdiff.explain.runner import explain_and_align
from trustdiff.explain.words import WordFeatures

if TYPE_CHECKING:
    from trustdiff.explain.words import PredictFunction


def test_every_configurable_method_is_registered_once_with_its_own_seed() -> None:
    assert sorted(EXPLAINERS) == sorted(get_args(ExplainMethod))
    assert all(name == explainer.name for name, explainer in EXPLAINERS.items())
    assert len({explainer.seed_id for explainer in EXPLAINERS.values()}) == len(EXPLAINERS)
    # The seeds are part of every seeded result: they must not move.
    assert instance_seed(0, 5, "lime", 0) != instance_seed(0, 5, "shap", 0)
    assert (get_explainer("lime").seed_id, get_explainer("shap").seed_id) == (0, 1)


def test_unknown_methods_raise_naming_them() -> None:
    with pytest.raises(ValueError, match="unknown explanation method 'anchors'"):
        get_explainer("anchors")
    features = WordFeatures.from_input("a good film")
    with pytest.raises(ValueError, match="'anchors'"):
        explain_instance(
            features,
            lambda inputs, models: np.ones((len(inputs), 4)) / 4,
            method="anchors",  # type: ignore[arg-type]
            settings=ExplainSettings(),
            n_classes=2,
            reference_target=0,
            candidate_target=0,
            seed=0,
            rerun_seed=None,
            mask_token=None,
        )


def test_the_runner_calls_whatever_the_registry_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Sequence[int], int]] = []

    def position_scores(
        features: WordFeatures,
        predict: PredictFunction,
        *,
        columns: Sequence[int],
        settings: ExplainSettings,
        seed: int,
        mask_token: str | None,
    ) -> WordAttributions:
        calls.append((tuple(columns), seed))
        d = len(features)
        scores = [np.arange(d, 0, -1.0) * (1 + column) for column in columns]
        return WordAttributions(
            words=features.words, targets=tuple(columns), scores=scores, base_values=[0.0] * 2
        )

    stand_in = Explainer(
        name="lime", seed_id=0, explain=position_scores, describe=lambda _: {"stand_in": True}
    )
    monkeypatch.setitem(registry.EXPLAINERS, "lime", stand_in)
    model = BagOfWordsModel()
    evaluator = FakeEvaluator(model, model)
    data = SimpleDataset(inputs=["a good film", "an awful plot indeed"], labels=[1, 0])
    reference, candidate = evaluator.predict_proba(data.inputs)
    alignment, explanations = explain_and_align(
        evaluator,
        data,
        reference_proba=reference,
        candidate_proba=candidate,
        settings=ExplainSettings(instances=2, methods=("lime",), noise_floor=False, top_k=2),
        labels=["negative", "positive"],
        seed=0,
        progress=None,
        should_cancel=None,
    )
    assert len(calls) == 2
    assert alignment["lime"].settings["stand_in"] is True
    assert explanations[0].lime is not None
    target = ["negative", "positive"].index(explanations[0].target)
    assert explanations[0].lime.reference == [3.0 * (1 + target), 2.0 * (1 + target), 1 + target]
    assert explanations[0].lime.candidate == [3.0 * (3 + target), 2.0 * (3 + target), 3 + target]
    assert alignment["lime"].rank_correlation.mean == 1.0
