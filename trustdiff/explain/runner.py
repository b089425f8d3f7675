"""Explain sampled instances for both models at once, with the noise floor, and align them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trustdiff.config import ExplainMethod, ExplainSettings
from trustdiff.errors import ConfigError
from trustdiff.explain.ahead import explain_in_waves
from trustdiff.explain.instance import (
    CANDIDATE,
    REFERENCE,
    InstanceAttributions,
    RowExplainer,
)
from trustdiff.explain.lockstep import Models, ModelsPredict
from trustdiff.explain.registry import get_explainer
from trustdiff.explain.words import WordFeatures
from trustdiff.metrics.alignment import ALIGNMENT_METRICS, alignment_metrics, summarize_metric
from trustdiff.result import (
    AlignmentMetrics,
    Attributions,
    Explanation,
    Judged,
    MethodAlignment,
    NoiseFloor,
    TwinAlignment,
)

if TYPE_CHECKING:
    from trustdiff.explain.words import PredictFunction
    from trustdiff.inference import TextInput

# Bootstrap defaults of the per-metric summaries; an audit passes its calibration settings.
SUMMARY_RESAMPLES = 1000
SUMMARY_CONFIDENCE = 0.95
HISTOGRAM_BINS = 10
# Per-metric summaries of a list of per-instance metric rows (`_summaries` with its settings).
Summaries = Callable[[Sequence[dict[str, float]]], dict[str, Any]]
# Instances explained at once, each on its own thread, their model requests merged step by
# step into one evaluator call (`LockstepBatcher`), so the evaluator batches across instances
# (SHAP's Partition rounds alone are small) and results stay reproducible. On the 2-core CPU
# 1, 2 and 4 workers measured within noise of each other (bench/README.md); merged calls
# matter more on a GPU.
DEFAULT_WORKERS = 4


class Evaluator(Protocol):
    """What the explainers need of `trustdiff.inference.BatchingEvaluator`.

    Runner 0 is the reference, 1 the candidate and 2, when present, the twin.
    """

    @property
    def runners(self) -> Sequence[Any]: ...

    @property
    def cache_size(self) -> int:
        """Distinct inputs whose results the evaluator remembers; 0 when it has no cache."""
        ...

    def predict_proba(
        self, inputs: Sequence[TextInput], *, runners: Sequence[int] | None = None
    ) -> list[NDArray[np.float64]]: ...


class ExplainedDataset(Protocol):
    """What is read of `trustdiff.datasets.Dataset`: model inputs and gold label ids."""

    @property
    def inputs(self) -> list[TextInput]: ...

    @property
    def labels(self) -> list[int]: ...


# A re-run equal to the first run within these tolerances comes from a deterministic
# explainer: they absorb float32 recomputation (an input evaluated again in another batch,
# or coalitions summed in another order), orders of magnitude below any sampling noise.
DETERMINISTIC_RTOL = 1e-5
DETERMINISTIC_ATOL = 1e-7


def models_predict(evaluator: Evaluator) -> ModelsPredict:
    """Inputs, models -> (n, len(models) × K): the selected runners' columns side by side."""

    def predict(inputs: list[TextInput], models: Models) -> NDArray[np.float64]:
        return np.hstack(evaluator.predict_proba(inputs, runners=models))

    return predict


def joint_predict(evaluator: Evaluator) -> PredictFunction:
    """Inputs -> (n, 2K): the reference's K columns, then the candidate's, same inputs."""

    def predict(inputs: list[TextInput]) -> NDArray[np.float64]:
        return np.hstack(evaluator.predict_proba(inputs, runners=(REFERENCE, CANDIDATE)))

    return predict


@dataclass(frozen=True)
class InstanceSelection:
    """The explained rows (sorted), how many rows were eligible, and how many were asked."""

    indices: list[int]
    eligible: int
    requested: int


def select_instances(
    inputs: Sequence[TextInput], *, count: int, seed: int, top_k: int
) -> InstanceSelection:
    """A seeded sample of `count` row indices among the rows with more than `top_k` words.

    A row with no more than `top_k` words would score top-k overlap 1.0 for any two models,
    so it is never explained. With fewer eligible rows than `count`, all of them are.
    """
    eligible = [
        index for index, value in enumerate(inputs) if len(WordFeatures.from_input(value)) > top_k
    ]
    if count >= len(eligible):
        return InstanceSelection(indices=eligible, eligible=len(eligible), requested=count)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E1EC7]))
    chosen = sorted(int(index) for index in rng.choice(eligible, size=count, replace=False))
    return InstanceSelection(indices=chosen, eligible=len(eligible), requested=count)


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
    twin_proba: ArrayLike | None = None,
    n_resamples: int = SUMMARY_RESAMPLES,
    confidence_level: float = SUMMARY_CONFIDENCE,
) -> tuple[dict[str, MethodAlignment], dict[int, Explanation]]:
    """Explain a seeded sample of instances with every method; align reference and candidate.

    `reference_proba` and `candidate_proba` are (n, K) over all dataset rows, in the order of
    `labels` (the audit's label space; the evaluator returns the candidate in that order too).
    Only rows with more than `settings.top_k` words are eligible (`select_instances`). Each
    sampled instance is explained once per method for both models on the same perturbations
    (seed A) and, when `settings.noise_floor`, the reference alone again with seed B. The
    judged between-model figure is then metric(reference B, candidate A), like for like with
    the floor metric(reference B, reference A); metric(reference A, candidate A) is kept as
    the `shared_perturbations` diagnostic. A method whose re-run equals its first run on every
    instance is deterministic: it has no floor (`noise_floor.deterministic`).

    With `twin_proba` (n, K), the evaluator's runner 2 is the twin, explained with seed A in
    the candidate's evaluator calls, and each method gets a `twin` section built the same way.

    Returns the per-method summaries and, keyed by dataset row, each instance's explanation.
    `progress("explain", done, total)` reports instances; `should_cancel` is checked between
    instances and raises `AuditCancelledError`. Up to `workers` instances run at once.

    An audit explains its instances in fixed blocks instead (`explain_rows` per block, then
    `align_explained` over all of them), so that blocks can run in other processes.
    """
    probabilities = _checked_probabilities(
        reference_proba,
        candidate_proba,
        twin_proba,
        rows=len(dataset.inputs),
        n_classes=len(labels),
    )
    count = settings.instances if explained_methods(settings) else 0
    selection = select_instances(dataset.inputs, count=count, seed=seed, top_k=settings.top_k)
    indices = selection.indices
    if progress is not None:
        progress("explain", 0, len(indices))
    if not indices:
        return {}, {}
    targets = targets_by_row(indices, *probabilities, dataset.labels, settings)
    results = explain_rows(
        evaluator,
        dataset.inputs,
        indices,
        targets=targets,
        settings=settings,
        n_classes=len(labels),
        seed=seed,
        progress=progress,
        should_cancel=should_cancel,
        workers=workers,
    )
    return align_explained(
        dataset.inputs,
        results,
        targets=targets,
        settings=settings,
        labels=labels,
        seed=seed,
        selection=selection,
        n_resamples=n_resamples,
        confidence_level=confidence_level,
    )


def explained_methods(settings: ExplainSettings) -> list[ExplainMethod]:
    """The methods `settings` asks for, each once, in the order asked."""
    return list(dict.fromkeys(settings.methods))


def explain_rows(
    evaluator: Evaluator,
    inputs: Sequence[TextInput],
    indices: Sequence[int],
    *,
    targets: dict[int, tuple[int, int, int | None]],
    settings: ExplainSettings,
    n_classes: int,
    seed: int,
    progress: Callable[[str, int, int], None] | None,
    should_cancel: Callable[[], bool] | None,
    workers: int = DEFAULT_WORKERS,
) -> dict[int, dict[str, InstanceAttributions]]:
    """Every method's attributions of the rows `indices`, keyed by row then method.

    `targets[index]` is the (reference, candidate, twin or None) class explained at a row
    (`targets_by_row`); the twin is explained where it is not None (the evaluator's runner
    2). Instances run in waves (`explain_in_waves`), up to `workers` at once in lock-step.
    Every instance's seeds depend on (`seed`, row index, method) only, so the attributions
    of a row do not depend on which other rows are explained with it, up to the models'
    dependence on batch composition (float rounding, or int8-dynamic's scales).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    explain_row = RowExplainer(
        inputs=inputs,
        methods=explained_methods(settings),
        settings=settings,
        n_classes=n_classes,
        seed=seed,
        mask_token=reference_mask_token(evaluator) if settings.masking == "mask_token" else None,
        targets=targets,
    )
    return explain_in_waves(
        explain_row,
        indices,
        models_predict(evaluator),
        cache_size=evaluator.cache_size,
        workers=workers,
        progress=progress,
        should_cancel=should_cancel,
    )


def align_explained(
    inputs: Sequence[TextInput],
    results: dict[int, dict[str, InstanceAttributions]],
    *,
    targets: dict[int, tuple[int, int, int | None]],
    settings: ExplainSettings,
    labels: list[str],
    seed: int,
    selection: InstanceSelection,
    n_resamples: int = SUMMARY_RESAMPLES,
    confidence_level: float = SUMMARY_CONFIDENCE,
) -> tuple[dict[str, MethodAlignment], dict[int, Explanation]]:
    """Per-method summaries (with the noise floor and the twin) over the explained rows
    `results` (from `explain_rows`), and each row's explanation; no model is called. Each
    metric's interval is a bootstrap over the instances (`n_resamples`, `confidence_level`:
    an audit passes its calibration settings, so every interval of a document is alike)."""
    described = RowExplainer(
        inputs=inputs,
        methods=explained_methods(settings),
        settings=settings,
        n_classes=len(labels),
        seed=seed,
        mask_token=None,
        targets=targets,
    )
    return _aligned(
        described,
        results,
        labels=labels,
        selection=selection,
        n_resamples=n_resamples,
        confidence_level=confidence_level,
    )


def _checked_probabilities(
    reference_proba: ArrayLike,
    candidate_proba: ArrayLike,
    twin_proba: ArrayLike | None,
    *,
    rows: int,
    n_classes: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64] | None]:
    """The (rows, n_classes) arrays as float64, no twin kept None; `ValueError` on a shape."""
    reference = np.asarray(reference_proba, dtype=np.float64)
    candidate = np.asarray(candidate_proba, dtype=np.float64)
    twin = None if twin_proba is None else np.asarray(twin_proba, dtype=np.float64)
    expected_shape = (rows, n_classes)
    shapes = [array.shape for array in (reference, candidate, twin) if array is not None]
    if any(shape != expected_shape for shape in shapes):
        raise ValueError(f"probabilities must have shape {expected_shape}, got {shapes}")
    return reference, candidate, twin


def targets_by_row(
    indices: Sequence[int],
    reference_proba: NDArray[np.float64],
    candidate_proba: NDArray[np.float64],
    twin_proba: NDArray[np.float64] | None,
    gold: Sequence[int],
    settings: ExplainSettings,
) -> dict[int, tuple[int, int, int | None]]:
    """The (reference, candidate, twin or None) class explained at each row of `indices`."""

    def targets(index: int) -> tuple[int, int, int | None]:
        reference, candidate = explained_targets(
            settings,
            reference_proba=reference_proba,
            candidate_proba=candidate_proba,
            gold=gold,
            index=index,
        )
        twin = (
            None
            if twin_proba is None
            else explained_targets(
                settings,
                reference_proba=reference_proba,
                candidate_proba=twin_proba,
                gold=gold,
                index=index,
            )[1]
        )
        return reference, candidate, twin

    return {index: targets(index) for index in indices}


def _is_deterministic(attributions: Sequence[InstanceAttributions]) -> bool:
    """True when every instance was re-run and every re-run equals its first run."""
    return all(
        pair.reference_rerun is not None
        and np.allclose(
            pair.reference_rerun,
            pair.reference,
            rtol=DETERMINISTIC_RTOL,
            atol=DETERMINISTIC_ATOL,
        )
        for pair in attributions
    )


@dataclass(frozen=True)
class _MethodRows:
    """One method's per-instance metrics: judged, shared-perturbation and floor rows, for the
    candidate and the twin."""

    deterministic: bool
    judged: list[dict[str, float]]
    shared: list[dict[str, float]]
    floor: list[dict[str, float]]
    twin_judged: list[dict[str, float]]
    twin_shared: list[dict[str, float]]


def _method_rows(pairs: Sequence[InstanceAttributions], *, top_k: int) -> _MethodRows:
    deterministic = _is_deterministic(pairs)
    rows = _MethodRows(deterministic, [], [], [], [], [])
    for pair in pairs:
        rerun = None if deterministic else pair.reference_rerun
        shared = alignment_metrics(pair.reference, pair.candidate, top_k=top_k)
        rows.shared.append(shared)
        if rerun is None:
            rows.judged.append(shared)
        else:
            # The re-run first in every pair, so an identical candidate reproduces the floor.
            rows.judged.append(alignment_metrics(rerun, pair.candidate, top_k=top_k))
            rows.floor.append(alignment_metrics(rerun, pair.reference, top_k=top_k))
        if pair.twin is not None:
            twin_shared = alignment_metrics(pair.reference, pair.twin, top_k=top_k)
            rows.twin_shared.append(twin_shared)
            rows.twin_judged.append(
                twin_shared if rerun is None else alignment_metrics(rerun, pair.twin, top_k=top_k)
            )
    return rows


def _aligned(
    explain_row: RowExplainer,
    results: dict[int, dict[str, InstanceAttributions]],
    *,
    labels: list[str],
    selection: InstanceSelection,
    n_resamples: int,
    confidence_level: float,
) -> tuple[dict[str, MethodAlignment], dict[int, Explanation]]:
    """Per-method summaries over the explained rows, and each row's explanation."""
    indices = sorted(results)
    settings = explain_row.settings
    summaries = partial(
        _summaries,
        seed=explain_row.seed,
        n_resamples=n_resamples,
        confidence_level=confidence_level,
    )
    rows: dict[str, _MethodRows] = {
        method: _method_rows([results[i][method] for i in indices], top_k=settings.top_k)
        for method in explain_row.methods
    }
    alignment: dict[str, MethodAlignment] = {
        method: _method_alignment(
            method, rows[method], settings=settings, summaries=summaries, selection=selection
        )
        for method in explain_row.methods
    }
    explanations = {
        index: _explanation(explain_row, index, results[index], rows, position, labels=labels)
        for position, index in enumerate(indices)
    }
    return alignment, explanations


def _explanation(
    explain_row: RowExplainer,
    index: int,
    attributions: dict[str, InstanceAttributions],
    rows: dict[str, _MethodRows],
    position: int,
    *,
    labels: list[str],
) -> Explanation:
    documents = {
        method: Attributions(
            reference=pair.reference.tolist(),
            candidate=pair.candidate.tolist(),
            reference_rerun=None if pair.reference_rerun is None else pair.reference_rerun.tolist(),
            twin=None if pair.twin is None else pair.twin.tolist(),
        )
        for method, pair in attributions.items()
    }
    features = WordFeatures.from_input(explain_row.inputs[index])
    return Explanation(
        words=list(features.words),
        segments=list(features.segments),
        # With target="own_prediction" the candidate's class may differ; this names the
        # reference's (the document has one field).
        target=labels[explain_row.targets[index][0]],
        lime=documents.get("lime"),
        shap=documents.get("shap"),
        alignment={method: dict(rows[method].judged[position]) for method in attributions},
    )


def _method_alignment(
    method: ExplainMethod,
    rows: _MethodRows,
    *,
    settings: ExplainSettings,
    summaries: Summaries,
    selection: InstanceSelection,
) -> MethodAlignment:
    """One method's summaries over the explained instances, the noise floor beside them."""
    measured_floor = bool(rows.floor)
    noise_floor = None
    if rows.deterministic:
        noise_floor = NoiseFloor(deterministic=True)
    elif measured_floor:
        noise_floor = NoiseFloor(**summaries(rows.floor))
    judged: Judged = "rerun_vs_first_run"
    if not measured_floor:
        follows_outputs = get_explainer(method).perturbations_follow_outputs(settings)
        judged = "separate_runs" if follows_outputs else "shared_perturbations"
    twin = None
    if rows.twin_judged:
        twin = TwinAlignment(
            **summaries(rows.twin_judged),
            judged=judged,
            shared_perturbations=(
                AlignmentMetrics(**summaries(rows.twin_shared)) if measured_floor else None
            ),
        )
    return MethodAlignment(
        **summaries(rows.judged),
        top_k=settings.top_k,
        n_instances=len(rows.judged),
        settings=_method_settings(method, settings),
        noise_floor=noise_floor,
        judged=judged,
        shared_perturbations=(
            AlignmentMetrics(**summaries(rows.shared)) if measured_floor else None
        ),
        twin=twin,
        eligible_instances=selection.eligible,
        requested_instances=selection.requested,
    )


def _summaries(
    rows: Sequence[dict[str, float]], *, seed: int, n_resamples: int, confidence_level: float
) -> dict[str, Any]:
    return {
        name: summarize_metric(
            [row[name] for row in rows],
            n_resamples=n_resamples,
            confidence_level=confidence_level,
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
        "noise_floor": (
            "reference re-explained alone with another seed" if settings.noise_floor else None
        ),
    }
    return {**common, **get_explainer(method).describe(settings)}
