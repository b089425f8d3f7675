"""Explain sampled instances for both models at once, with the noise floor, and align them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trustdiff.config import ExplainMethod, ExplainSettings
from trustdiff.errors import ConfigError
from trustdiff.explain.lockstep import run_in_lockstep
from trustdiff.explain.registry import get_explainer
from trustdiff.explain.words import WordFeatures
from trustdiff.metrics.alignment import ALIGNMENT_METRICS, alignment_metrics, summarize_metric
from trustdiff.result import AlignmentMetrics, Attributions, Explanation, MethodAlignment

if TYPE_CHECKING:
    from trustdiff.explain.words import PredictFunction
    from trustdiff.inference import TextInput

# Bootstrap settings of the per-metric summaries (the explain settings carry none).
SUMMARY_RESAMPLES = 1000
SUMMARY_CONFIDENCE = 0.95
HISTOGRAM_BINS = 10
# Instances explained at once, each on its own thread, their model requests merged step by
# step into one evaluator call (`LockstepBatcher`), so the evaluator batches across instances
# (SHAP's Partition rounds alone are small) and results stay reproducible. On the 2-core CPU
# 1, 2 and 4 workers measured within noise of each other (bench/README.md); merged calls
# matter more on a GPU.
DEFAULT_WORKERS = 4


class Evaluator(Protocol):
    """What the explainers need of `trustdiff.inference.BatchingEvaluator`."""

    @property
    def runners(self) -> Sequence[Any]: ...

    def predict_proba(self, inputs: Sequence[TextInput]) -> list[NDArray[np.float64]]: ...


class ExplainedDataset(Protocol):
    """What is read of `trustdiff.datasets.Dataset`: model inputs and gold label ids."""

    @property
    def inputs(self) -> list[TextInput]: ...

    @property
    def labels(self) -> list[int]: ...


@dataclass(frozen=True)
class InstanceAttributions:
    """One method's attributions for one instance, each of shape (d,)."""

    reference: NDArray[np.float64]
    candidate: NDArray[np.float64]
    reference_rerun: NDArray[np.float64] | None


def instance_seed(seed: int, index: int, method: ExplainMethod, run: int) -> int:
    """The explainer seed of (audit seed, dataset row, method, run); run 1 is the noise floor."""
    sequence = np.random.SeedSequence([seed, index, get_explainer(method).seed_id, run])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


def joint_predict(evaluator: Evaluator) -> PredictFunction:
    """Inputs -> (n, 2K): the reference's K columns, then the candidate's, same inputs."""

    def predict(inputs: list[TextInput]) -> NDArray[np.float64]:
        reference, candidate = evaluator.predict_proba(inputs)[:2]
        return np.hstack([reference, candidate])

    return predict


def explain_instance(
    features: WordFeatures,
    predict: PredictFunction,
    *,
    method: ExplainMethod,
    settings: ExplainSettings,
    n_classes: int,
    reference_target: int,
    candidate_target: int,
    seed: int,
    rerun_seed: int | None,
    mask_token: str | None,
) -> InstanceAttributions:
    """Explain one instance for both models with one method; optionally re-run the reference.

    `predict` returns (n, 2K) probabilities: reference columns 0..K−1, candidate K..2K−1.
    The re-run repeats the same joint explanation with `rerun_seed`; repeated perturbations
    are answered by the evaluator's cache, so only new ones cost a forward pass.
    """
    columns = (reference_target, n_classes + candidate_target)
    explainer = get_explainer(method)

    def run(run_seed: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        attributions = explainer.explain(
            features,
            predict,
            columns=columns,
            settings=settings,
            seed=run_seed,
            mask_token=mask_token,
        )
        return attributions.scores_of(columns[0]), attributions.scores_of(columns[1])

    reference, candidate = run(seed)
    rerun = None if rerun_seed is None else run(rerun_seed)[0]
    return InstanceAttributions(reference=reference, candidate=candidate, reference_rerun=rerun)


def select_instances(inputs: Sequence[TextInput], *, count: int, seed: int) -> list[int]:
    """A seeded sample of `count` row indices (sorted) among the rows that have any word."""
    eligible = [index for index, value in enumerate(inputs) if len(WordFeatures.from_input(value))]
    if count >= len(eligible):
        return eligible
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E1EC7]))
    return sorted(int(index) for index in rng.choice(eligible, size=count, replace=False))


def explained_targets(
    settings: ExplainSettings,
    *,
    reference_proba: NDArray[np.float64],
    candidate_proba: NDArray[np.float64],
    gold: Sequence[int],
    index: int,
) -> tuple[int, int]:
    """The (reference, candidate) class explained for row `index` under `settings.target`."""
    reference_prediction = int(np.argmax(reference_proba[index]))
    if settings.target == "reference_prediction":
        return reference_prediction, reference_prediction
    if settings.target == "gold":
        return int(gold[index]), int(gold[index])
    if settings.target == "own_prediction":
        return reference_prediction, int(np.argmax(candidate_proba[index]))
    raise ValueError(f"unknown explained target {settings.target!r}")


def reference_mask_token(evaluator: Evaluator) -> str:
    """The reference tokenizer's mask token, for `masking="mask_token"`."""
    tokenizer = getattr(evaluator.runners[0], "tokenizer", None)
    token = getattr(tokenizer, "mask_token", None)
    if not isinstance(token, str) or not token:
        raise ConfigError(
            'masking="mask_token" needs a reference tokenizer with a mask token; this one has '
            'none: use masking="remove"'
        )
    return token


def explain_and_align(
    evaluator: Evaluator,
    dataset: ExplainedDataset,
    *,
    reference_proba: ArrayLike,
    candidate_proba: ArrayLike,
    settings: ExplainSettings,
    labels: list[str],
    seed: int,
    progress: Callable[[str, int, int], None] | None,
    should_cancel: Callable[[], bool] | None,
    workers: int = DEFAULT_WORKERS,
) -> tuple[dict[str, MethodAlignment], dict[int, Explanation]]:
    """Explain a seeded sample of instances with every method; align reference and candidate.

    `reference_proba` and `candidate_proba` are (n, K) over all dataset rows, in the order of
    `labels` (the audit's label space; the evaluator returns the candidate in that order too).
    Each sampled instance is explained once per method for both models (one prediction
    function returning both models' probabilities), and, when `settings.noise_floor`, the
    reference again with another seed. Returns the per-method summaries (between models, with
    the noise floor beside them) and, keyed by dataset row, each instance's explanation.
    `progress("explain", done, total)` reports instances; `should_cancel` is checked between
    instances and raises `AuditCancelledError`. Up to `workers` instances run at once.
    """
    reference, candidate = _checked_probabilities(
        reference_proba, candidate_proba, rows=len(dataset.inputs), n_classes=len(labels)
    )
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    methods: list[ExplainMethod] = list(dict.fromkeys(settings.methods))
    indices = (
        select_instances(dataset.inputs, count=settings.instances, seed=seed) if methods else []
    )
    if progress is not None:
        progress("explain", 0, len(indices))
    if not indices:
        return {}, {}
    explain_row = _RowExplainer(
        inputs=dataset.inputs,
        methods=methods,
        settings=settings,
        n_classes=len(labels),
        seed=seed,
        mask_token=reference_mask_token(evaluator) if settings.masking == "mask_token" else None,
        targets=_targets_by_row(indices, reference, candidate, dataset.labels, settings),
    )
    results = run_in_lockstep(
        explain_row,
        indices,
        joint_predict(evaluator),
        workers=workers,
        progress=progress,
        should_cancel=should_cancel,
    )
    return _aligned(explain_row, results, labels=labels)


def _checked_probabilities(
    reference_proba: ArrayLike, candidate_proba: ArrayLike, *, rows: int, n_classes: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    reference = np.asarray(reference_proba, dtype=np.float64)
    candidate = np.asarray(candidate_proba, dtype=np.float64)
    expected_shape = (rows, n_classes)
    if reference.shape != expected_shape or candidate.shape != expected_shape:
        raise ValueError(
            f"probabilities must have shape {expected_shape}, got {reference.shape} and "
            f"{candidate.shape}"
        )
    return reference, candidate


def _targets_by_row(
    indices: Sequence[int],
    reference_proba: NDArray[np.float64],
    candidate_proba: NDArray[np.float64],
    gold: Sequence[int],
    settings: ExplainSettings,
) -> dict[int, tuple[int, int]]:
    return {
        index: explained_targets(
            settings,
            reference_proba=reference_proba,
            candidate_proba=candidate_proba,
            gold=gold,
            index=index,
        )
        for index in indices
    }


@dataclass(frozen=True)
class _RowExplainer:
    """Explains one dataset row with every method, on the predict function it is handed."""

    inputs: Sequence[TextInput]
    methods: Sequence[ExplainMethod]
    settings: ExplainSettings
    n_classes: int
    seed: int
    mask_token: str | None
    # Dataset row -> the (reference, candidate) class explained there.
    targets: dict[int, tuple[int, int]]

    def __call__(self, predict: PredictFunction, index: int) -> dict[str, InstanceAttributions]:
        features = WordFeatures.from_input(self.inputs[index])
        noise_floor = self.settings.noise_floor
        return {
            method: explain_instance(
                features,
                predict,
                method=method,
                settings=self.settings,
                n_classes=self.n_classes,
                reference_target=self.targets[index][0],
                candidate_target=self.targets[index][1],
                seed=instance_seed(self.seed, index, method, 0),
                rerun_seed=instance_seed(self.seed, index, method, 1) if noise_floor else None,
                mask_token=self.mask_token,
            )
            for method in self.methods
        }


def _aligned(
    explain_row: _RowExplainer,
    results: dict[int, dict[str, InstanceAttributions]],
    *,
    labels: list[str],
) -> tuple[dict[str, MethodAlignment], dict[int, Explanation]]:
    """Per-method summaries over the explained rows, and each row's explanation."""
    indices = sorted(results)
    instances = [_align_instance(explain_row, i, results[i], labels=labels) for i in indices]
    alignment: dict[str, MethodAlignment] = {
        method: _method_alignment(
            method, instances, settings=explain_row.settings, seed=explain_row.seed
        )
        for method in explain_row.methods
    }
    explanations = {i: instance.explanation for i, instance in zip(indices, instances, strict=True)}
    return alignment, explanations


@dataclass(frozen=True)
class _AlignedInstance:
    """One explained row: its document entry and, per method, the alignment metrics between
    the models and (with a re-run) of the reference against itself."""

    explanation: Explanation
    between: dict[str, dict[str, float]]
    floor: dict[str, dict[str, float]]


def _align_instance(
    explain_row: _RowExplainer,
    index: int,
    attributions: dict[str, InstanceAttributions],
    *,
    labels: list[str],
) -> _AlignedInstance:
    top_k = explain_row.settings.top_k
    between: dict[str, dict[str, float]] = {}
    floor: dict[str, dict[str, float]] = {}
    documents: dict[str, Attributions] = {}
    for method, pair in attributions.items():
        between[method] = alignment_metrics(pair.reference, pair.candidate, top_k=top_k)
        rerun = pair.reference_rerun
        if rerun is not None:
            floor[method] = alignment_metrics(pair.reference, rerun, top_k=top_k)
        documents[method] = Attributions(
            reference=pair.reference.tolist(),
            candidate=pair.candidate.tolist(),
            reference_rerun=None if rerun is None else rerun.tolist(),
        )
    features = WordFeatures.from_input(explain_row.inputs[index])
    explanation = Explanation(
        words=list(features.words),
        segments=list(features.segments),
        # With target="own_prediction" the candidate's class may differ; this names the
        # reference's (the document has one field).
        target=labels[explain_row.targets[index][0]],
        lime=documents.get("lime"),
        shap=documents.get("shap"),
        alignment={method: dict(metrics) for method, metrics in between.items()},
    )
    return _AlignedInstance(explanation=explanation, between=between, floor=floor)


def _method_alignment(
    method: ExplainMethod,
    instances: Sequence[_AlignedInstance],
    *,
    settings: ExplainSettings,
    seed: int,
) -> MethodAlignment:
    """One method's summaries over the explained instances, the noise floor beside them."""
    floor = [instance.floor[method] for instance in instances if method in instance.floor]
    return MethodAlignment(
        **_summaries([instance.between[method] for instance in instances], seed=seed),
        top_k=settings.top_k,
        n_instances=len(instances),
        settings=_method_settings(method, settings),
        noise_floor=AlignmentMetrics(**_summaries(floor, seed=seed)) if floor else None,
    )


def _summaries(rows: Sequence[dict[str, float]], *, seed: int) -> dict[str, Any]:
    return {
        name: summarize_metric(
            [row[name] for row in rows],
            n_resamples=SUMMARY_RESAMPLES,
            confidence_level=SUMMARY_CONFIDENCE,
            seed=seed,
            bins=HISTOGRAM_BINS,
            value_range=value_range,
        )
        for name, (_, value_range) in ALIGNMENT_METRICS.items()
    }


def _method_settings(method: ExplainMethod, settings: ExplainSettings) -> dict[str, object]:
    common: dict[str, object] = {
        "method": method,
        "masking": settings.masking,
        "target": settings.target,
        "top_k": settings.top_k,
        "features": "words",
        "noise_floor": "reference re-explained with another seed" if settings.noise_floor else None,
    }
    return {**common, **get_explainer(method).describe(settings)}
