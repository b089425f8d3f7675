"""Faithfulness of each model's explanations to that model: ERASER comprehensiveness and
sufficiency, measured by erasing the words the model's own attribution ranks highest."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from trustdiff.config import AuditConfig, Masking
from trustdiff.explain.instance import InstanceAttributions
from trustdiff.explain.runner import joint_predict, reference_mask_token
from trustdiff.explain.words import WordFeatures
from trustdiff.metrics.alignment import summarize_metric
from trustdiff.metrics.bootstrap import bootstrap_mean_interval
from trustdiff.metrics.faithfulness import erasure_masks, faithfulness
from trustdiff.result import (
    Attributions,
    Explanation,
    Faithfulness,
    Interval,
    MethodAlignment,
    MetricSummary,
    ModelFaithfulness,
)

if TYPE_CHECKING:
    from trustdiff.inference import BatchingEvaluator, TextInput

# One prediction function per model: inputs -> that model's (n, K) probabilities.
ModelPredict = Callable[[list["TextInput"]], NDArray[np.float64]]
MODELS = ("reference", "candidate")
SIGNED_UNIT_RANGE = (-1.0, 1.0)
SUMMARY_BINS = 10


@dataclass(frozen=True)
class FaithfulnessSettings:
    """The explained words' ranking depth, how erased words are hidden, intervals."""

    top_k: int
    masking: Masking
    mask_token: str | None
    n_resamples: int
    confidence_level: float
    seed: int


@dataclass(frozen=True)
class _Request:
    index: int
    method: str
    model: int
    target: int
    full: TextInput
    without_top: list[TextInput]
    only_top: list[TextInput]


def _requests(
    explanations: dict[int, Explanation],
    targets: dict[int, tuple[int, int]],
    settings: FaithfulnessSettings,
) -> list[_Request]:
    requests = []
    for index, explanation in sorted(explanations.items()):
        features = WordFeatures(
            words=tuple(explanation.words),
            segments=tuple(explanation.segments),
            is_pair=1 in explanation.segments,
        )
        for method in ("lime", "shap"):
            attributions = getattr(explanation, method)
            if attributions is None:
                continue
            for model, scores in enumerate((attributions.reference, attributions.candidate)):
                masks = erasure_masks(scores, top_k=settings.top_k)

                def compose(rows: NDArray[np.bool_], features: WordFeatures = features) -> list:
                    return features.compose_many(
                        rows, masking=settings.masking, mask_token=settings.mask_token
                    )

                requests.append(
                    _Request(
                        index=index,
                        method=method,
                        model=model,
                        target=targets[index][model],
                        full=features.original(),
                        without_top=compose(masks.without_top),
                        only_top=compose(masks.only_top),
                    )
                )
    return requests


# Row -> method -> model ("reference", "candidate") -> comprehensiveness and sufficiency.
FaithfulnessByRow = dict[int, dict[str, dict[str, dict[str, float]]]]


def measure_faithfulness(
    explanations: dict[int, Explanation],
    *,
    targets: dict[int, tuple[int, int]],
    full_predict: ModelPredict,
    model_predicts: Sequence[ModelPredict],
    settings: FaithfulnessSettings,
) -> tuple[dict[str, Faithfulness], FaithfulnessByRow]:
    """Comprehensiveness and sufficiency of every explanation, for the model it explains.

    `targets[index]` is the (reference, candidate) class explained at that row.
    `full_predict(inputs)` gives both models' probabilities as (n, 2K) (the evaluator's joint
    function: the whole inputs were evaluated while explaining, so it answers from its cache);
    `model_predicts[m](inputs)` gives model m's (n, K) probabilities — one call per model for
    all instances and methods, and for each explanation only its 2·k erased inputs (k =
    min(top_k, d)), so no model sees the other's perturbations.

    Returns per method the summaries (means with bootstrap intervals, and the paired
    candidate − reference deltas), and per row method -> model -> both scores.
    """
    per_row = faithfulness_scores(
        explanations,
        targets=targets,
        full_predict=full_predict,
        model_predicts=model_predicts,
        settings=settings,
    )
    return summarize_faithfulness(per_row, settings), per_row


def faithfulness_scores(
    explanations: dict[int, Explanation],
    *,
    targets: dict[int, tuple[int, int]],
    full_predict: ModelPredict,
    model_predicts: Sequence[ModelPredict],
    settings: FaithfulnessSettings,
) -> FaithfulnessByRow:
    """The per-row half of `measure_faithfulness`: row -> method -> model -> both scores."""
    requests = _requests(explanations, targets, settings)
    if not requests:
        return {}
    full_inputs = list(dict.fromkeys(request.full for request in requests))
    joint = full_predict(full_inputs)
    n_classes = joint.shape[1] // 2
    full_rows = {value: row for row, value in enumerate(full_inputs)}
    erased: list[dict[TextInput, NDArray[np.float64]]] = []
    for model, predict in enumerate(model_predicts):
        inputs = list(
            dict.fromkeys(
                value
                for request in requests
                if request.model == model
                for value in (*request.without_top, *request.only_top)
            )
        )
        probabilities = predict(inputs) if inputs else np.empty((0, n_classes))
        erased.append(dict(zip(inputs, probabilities, strict=True)))

    per_row: FaithfulnessByRow = {}
    for request in requests:
        full = float(joint[full_rows[request.full], request.model * n_classes + request.target])
        table = erased[request.model]
        result = faithfulness(
            full,
            [float(table[value][request.target]) for value in request.without_top],
            [float(table[value][request.target]) for value in request.only_top],
        )
        per_row.setdefault(request.index, {}).setdefault(request.method, {})[
            MODELS[request.model]
        ] = {"comprehensiveness": result.comprehensiveness, "sufficiency": result.sufficiency}
    return per_row


def summarize_faithfulness(
    per_row: FaithfulnessByRow, settings: FaithfulnessSettings
) -> dict[str, Faithfulness]:
    """Per method, the summaries over the rows of `per_row` (in row order)."""
    scores: dict[str, dict[int, dict[int, tuple[float, float]]]] = {}
    for index in sorted(per_row):
        for method, by_model in per_row[index].items():
            for model, name in enumerate(MODELS):
                values = by_model[name]
                scores.setdefault(method, {}).setdefault(index, {})[model] = (
                    values["comprehensiveness"],
                    values["sufficiency"],
                )
    return {method: _summary(by_row, settings) for method, by_row in scores.items()}


def _summary(
    by_row: dict[int, dict[int, tuple[float, float]]], settings: FaithfulnessSettings
) -> Faithfulness:
    rows = sorted(by_row)
    # (instances, model, [comprehensiveness, sufficiency])
    values = np.array([[by_row[row][0], by_row[row][1]] for row in rows], dtype=np.float64)

    def summarize(scores: NDArray[np.float64]) -> MetricSummary:
        return summarize_metric(
            scores,
            n_resamples=settings.n_resamples,
            confidence_level=settings.confidence_level,
            seed=settings.seed,
            bins=SUMMARY_BINS,
            value_range=SIGNED_UNIT_RANGE,
        )

    def delta(score: int) -> Interval:
        # Per-instance differences resampled together: the paired bootstrap of the mean delta.
        differences = values[:, 1, score] - values[:, 0, score]
        if settings.n_resamples == 0:
            return Interval(value=float(differences.mean()))
        low, high = bootstrap_mean_interval(
            differences,
            n_resamples=settings.n_resamples,
            confidence_level=settings.confidence_level,
            seed=settings.seed,
        )
        return Interval(value=float(differences.mean()), ci_low=low, ci_high=high)

    return Faithfulness(
        top_k=settings.top_k,
        n_instances=len(rows),
        reference=ModelFaithfulness(
            comprehensiveness=summarize(values[:, 0, 0]),
            sufficiency=summarize(values[:, 0, 1]),
        ),
        candidate=ModelFaithfulness(
            comprehensiveness=summarize(values[:, 1, 0]),
            sufficiency=summarize(values[:, 1, 1]),
        ),
        comprehensiveness_delta=delta(0),
        sufficiency_delta=delta(1),
    )


def faithfulness_settings(config: AuditConfig, *, mask_token: str | None) -> FaithfulnessSettings:
    """The audit's faithfulness settings: its explanations' top-k and masking, and the
    calibration's bootstrap for the intervals."""
    settings = config.explain
    return FaithfulnessSettings(
        top_k=settings.top_k,
        masking=settings.masking,
        mask_token=mask_token,
        n_resamples=config.calibration.n_bootstrap,
        confidence_level=config.calibration.confidence_level,
        seed=config.seed,
    )


def faithfulness_of_rows(
    evaluator: BatchingEvaluator,
    results: dict[int, dict[str, InstanceAttributions]],
    *,
    inputs: Sequence[TextInput],
    targets: dict[int, tuple[int, int, int | None]],
    config: AuditConfig,
) -> FaithfulnessByRow:
    """The faithfulness scores of explained rows (`explain_rows`'s `results`), measured
    through `evaluator`, the one that explained them.

    The whole inputs are answered by the evaluator's cache (the explainers evaluated them);
    each model's erased inputs go through a one-model evaluator with the same batching, so
    a model is never run on the other's perturbations.
    """
    explanations = {
        index: Explanation(
            words=list(features.words),
            segments=list(features.segments),
            target=str(targets[index][0]),
            **{
                method: Attributions(
                    reference=pair.reference.tolist(), candidate=pair.candidate.tolist()
                )
                for method, pair in by_method.items()
            },
        )
        for index, by_method in results.items()
        for features in (WordFeatures.from_input(inputs[index]),)
    }
    masking = config.explain.masking
    return faithfulness_scores(
        explanations,
        targets={index: (targets[index][0], targets[index][1]) for index in results},
        full_predict=joint_predict(evaluator),
        model_predicts=[
            _first_model_of(evaluator.with_runners([model])) for model in range(len(MODELS))
        ],
        settings=faithfulness_settings(
            config,
            mask_token=reference_mask_token(evaluator) if masking == "mask_token" else None,
        ),
    )


def with_faithfulness(
    alignment: dict[str, MethodAlignment],
    explanations: dict[int, Explanation],
    per_row: FaithfulnessByRow,
    *,
    config: AuditConfig,
) -> tuple[dict[str, MethodAlignment], dict[int, Explanation]]:
    """`alignment` with each method's faithfulness summaries over `per_row`, and each
    explanation with its row's scores."""
    summaries = summarize_faithfulness(per_row, faithfulness_settings(config, mask_token=None))
    return (
        {
            method: summary.model_copy(update={"faithfulness": summaries.get(method)})
            for method, summary in alignment.items()
        },
        {
            index: explanation.model_copy(update={"faithfulness": per_row.get(index, {})})
            for index, explanation in explanations.items()
        },
    )


def _first_model_of(evaluator: BatchingEvaluator) -> ModelPredict:
    def predict(inputs: list[TextInput]) -> NDArray[np.float64]:
        return evaluator.predict_proba(inputs)[0]

    return predict
