"""The last step of a planned audit: every measurement from the shards' and blocks' outputs,
the twin, the rows file, the gate and the manifest, in one `AuditResult`. Loads no model."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from trustdiff.cache import PREDICTIONS, AuditCache
from trustdiff.dataset_cache import DatasetCache
from trustdiff.datasets import Dataset
from trustdiff.errors import ConfigError
from trustdiff.explain.instance import InstanceAttributions
from trustdiff.explain.runner import InstanceSelection
from trustdiff.gate import evaluate_gate
from trustdiff.manifest import build_manifest
from trustdiff.plan import AuditPlan
from trustdiff.prediction_summary import summarize_predictions
from trustdiff.result import (
    AuditResult,
    Calibration,
    Explanation,
    Instance,
    MethodAlignment,
    Parity,
    RowsSummary,
    TwinCacheManifest,
)
from trustdiff.rows import RowOutcomes, write_rows
from trustdiff.sections import Breakdown, measure_breakdown
from trustdiff.shards import ExplainedBlock, Probabilities, ShardPredictions, validated_inputs
from trustdiff.stages import CancelCheck, ProgressCallback, Stages, add_timings
from trustdiff.twin import Twin, twin_figures, with_twin
from trustdiff.twin_cache import TwinCache, TwinFigures
from trustdiff.validation import ValidatedAudit


@dataclass(frozen=True)
class _Predictions:
    """Gold labels (n,), both models' probabilities (n, K), the twin's when it has any."""

    y_true: NDArray[np.intp]
    reference_proba: NDArray[np.float64]
    candidate_proba: NDArray[np.float64]
    twin_proba: NDArray[np.float64] | None = None

    @property
    def reference_pred(self) -> NDArray[np.intp]:
        return self.reference_proba.argmax(axis=1)

    @property
    def candidate_pred(self) -> NDArray[np.intp]:
        return self.candidate_proba.argmax(axis=1)


@dataclass(frozen=True)
class _Sections:
    parity: Parity
    calibration: Calibration
    breakdown: Breakdown
    # The twin measured against the reference, when this audit measures the twin.
    twin: tuple[Parity, Calibration] | None


def finish_audit(
    plan: AuditPlan,
    shards: Sequence[ShardPredictions],
    blocks: Sequence[ExplainedBlock],
    *,
    cache: AuditCache | None = None,
    twin_cache: TwinCache | None = None,
    datasets: DatasetCache | None = None,
    rows_path: str | os.PathLike[str] | None = None,
    rows_text: bool = False,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> AuditResult:
    """The audit's result from every shard's and block's output (in any order); the dataset
    from `datasets` when given, as in the other steps.

    Measures parity, calibration and the breakdown on all rows, aligns the explanations, adds
    the twin's figures (stored in `twin_cache` when this audit measured them), stores the
    reference's predictions in `cache` when it had none, writes the rows file, judges the
    gate and writes the manifest: its timings add up every step's seconds per stage.
    """
    stages = Stages(progress, should_cancel)
    validated = validated_inputs(plan, datasets, stages)
    probabilities = Probabilities.of_shards(plan, shards)
    cached_twin = _cached_twin(plan, twin_cache)
    _store_reference_predictions(plan, cache, probabilities)
    twin_proba = (
        probabilities.twin
        if cached_twin is None
        else np.asarray(cached_twin.probabilities, dtype=np.float64)
    )
    predictions = _Predictions(
        np.asarray(validated.dataset.labels, dtype=np.intp),
        probabilities.reference,
        probabilities.candidate,
        twin_proba,
    )
    sections = _measure(validated, predictions, stages, measure_twin=plan.load_twin)
    alignment, explanations = _explanations(plan, validated, blocks, probabilities)
    parity, calibration = sections.parity, sections.calibration
    twin = _twin(
        plan, validated, shards[0], sections, predictions, (alignment, explanations), twin_cache
    )
    if twin is not None:
        parity, calibration, alignment, explanations = with_twin(
            twin.figures, parity, calibration, alignment, explanations
        )
    rows = _write_rows(
        _row_outcomes(validated, predictions), rows_path, rows_text=rows_text, stages=stages
    )
    with stages.stage("gate"):
        gate = evaluate_gate(
            parity,
            calibration,
            alignment,
            plan.config.gate,
            slices=sections.breakdown.slices,
            divergence=sections.breakdown.divergence,
        )
    models = shards[0].models
    return AuditResult(
        manifest=build_manifest(
            validated,
            (plan.reference_fingerprint, plan.candidate_fingerprint),
            (models["reference"], models["candidate"]),
            _timings(plan, shards, blocks, stages),
            twin=None if twin is None else twin.figures.manifest,
            twin_cache=None if twin is None else twin.cache_manifest,
        ),
        parity=parity,
        calibration=calibration,
        alignment=alignment,
        gate=gate,
        slices=sections.breakdown.slices,
        divergence=sections.breakdown.divergence,
        exemplars=sections.breakdown.exemplars,
        rows=rows,
        instances=_explained_instances(
            validated.dataset, validated.labels, predictions, explanations
        ),
    )


def _store_reference_predictions(
    plan: AuditPlan, cache: AuditCache | None, probabilities: Probabilities
) -> None:
    """The reference's predictions, into the cache the plan found without them."""
    key = plan.reference_predictions_key
    if cache is not None and key is not None and not plan.reference_cached:
        cache.store_arrays(PREDICTIONS, key, {"proba": probabilities.reference})


def _cached_twin(plan: AuditPlan, twin_cache: TwinCache | None) -> TwinFigures | None:
    """The twin's cached figures when the plan found them; `ConfigError` if they have gone."""
    if not plan.twin_cached or plan.twin_key is None:
        return None
    figures = None if twin_cache is None else twin_cache.load(plan.twin_key)
    if figures is None:
        raise ConfigError(
            "the twin's cached figures were removed while the audit ran: submit it again"
        )
    return figures


def _measure(
    validated: ValidatedAudit, predictions: _Predictions, stages: Stages, *, measure_twin: bool
) -> _Sections:
    config = validated.config
    with stages.stage("metrics"):
        parity, calibration = summarize_predictions(
            predictions.y_true,
            predictions.reference_proba,
            predictions.candidate_proba,
            labels=validated.labels,
            settings=config.calibration,
            seed=config.seed,
        )
        breakdown = measure_breakdown(
            predictions.y_true,
            predictions.reference_proba,
            predictions.candidate_proba,
            dataset=validated.dataset,
            labels=validated.labels,
            config=config,
        )
        calibration = calibration.model_copy(update={"smooth": breakdown.smooth_calibration})
        twin = None
        if measure_twin and predictions.twin_proba is not None:
            twin = summarize_predictions(
                predictions.y_true,
                predictions.reference_proba,
                predictions.twin_proba,
                labels=validated.labels,
                settings=config.calibration,
                seed=config.seed,
            )
    return _Sections(parity, calibration, breakdown, twin)


def _explanations(
    plan: AuditPlan,
    validated: ValidatedAudit,
    blocks: Sequence[ExplainedBlock],
    probabilities: Probabilities,
) -> tuple[dict[str, MethodAlignment], dict[int, Explanation]]:
    """Alignment per method and explanation per row from every block; empty when none ran."""
    results: dict[int, dict[str, InstanceAttributions]] = {}
    for block in blocks:
        results.update(block.attributions)
    if sorted(results) != sorted(plan.explained):
        raise ValueError("the blocks' rows are not the plan's explained rows")
    if not results:
        return {}, {}
    from trustdiff.explain.faithfulness import with_faithfulness
    from trustdiff.explain.runner import align_explained

    config, dataset = plan.config, validated.dataset
    indices = plan.explained
    alignment, explanations = align_explained(
        dataset.inputs,
        results,
        targets=probabilities.targets(indices, dataset.labels, config.explain),
        settings=config.explain,
        labels=validated.labels,
        seed=config.seed,
        selection=InstanceSelection(
            indices=sorted(indices),
            eligible=plan.eligible_instances,
            requested=plan.requested_instances,
        ),
        n_resamples=config.calibration.n_bootstrap,
        confidence_level=config.calibration.confidence_level,
    )
    if not config.explain.faithfulness:
        return alignment, explanations
    faithfulness = {index: row for block in blocks for index, row in block.faithfulness.items()}
    return with_faithfulness(alignment, explanations, faithfulness, config=config)


def _twin(
    plan: AuditPlan,
    validated: ValidatedAudit,
    first_shard: ShardPredictions,
    sections: _Sections,
    predictions: _Predictions,
    explained: tuple[dict[str, MethodAlignment], dict[int, Explanation]],
    twin_cache: TwinCache | None,
) -> Twin | None:
    """The twin's figures: read from the cache, or taken from this audit and stored there."""
    if plan.twin_key is None:
        return None
    if plan.twin_cached:
        figures = _cached_twin(plan, twin_cache)
    else:
        if sections.twin is None or predictions.twin_proba is None:
            raise RuntimeError("the twin was loaded but not measured")
        figures = twin_figures(
            validated,
            first_shard.models["twin"],
            plan.twin_fingerprint or "",
            sections.twin,
            predictions.twin_proba,
            *explained,
        )
        if twin_cache is not None:
            twin_cache.store(plan.twin_key, figures)
    if figures is None:
        raise RuntimeError("no twin figures")
    return Twin(
        figures=figures,
        cache_manifest=TwinCacheManifest(
            key=plan.twin_key,
            hit=plan.twin_cached,
            location=None if twin_cache is None else str(twin_cache.folder),
        ),
    )


def _timings(
    plan: AuditPlan,
    shards: Sequence[ShardPredictions],
    blocks: Sequence[ExplainedBlock],
    stages: Stages,
) -> dict[str, float]:
    """Seconds per stage summed over every step; `forward` counts every model call (with
    those that left the cached reference out), `total` the audit's wall time."""
    timings: dict[str, float] = {}
    for part in [plan.timings, *(shard.timings for shard in shards)]:
        add_timings(timings, part)
    for block in blocks:
        add_timings(timings, block.timings)
    add_timings(timings, stages.timings)
    timings["forward"] = timings.get("forward", 0.0) + timings.get("forward_without_reference", 0.0)
    timings["total"] = time.time() - plan.planned_at
    return timings


def _explained_instances(
    dataset: Dataset,
    labels: list[str],
    predictions: _Predictions,
    explanations: dict[int, Explanation],
) -> list[Instance]:
    """The explained rows, in row order; every row's outcome goes to the rows file instead."""
    reference_pred, candidate_pred = predictions.reference_pred, predictions.candidate_pred
    twin_proba = predictions.twin_proba
    return [
        Instance(
            index=index,
            text=dataset.texts[index],
            text_pair=None if dataset.text_pairs is None else dataset.text_pairs[index],
            label=labels[dataset.labels[index]],
            reference_proba=predictions.reference_proba[index].tolist(),
            candidate_proba=predictions.candidate_proba[index].tolist(),
            reference_prediction=labels[int(reference_pred[index])],
            candidate_prediction=labels[int(candidate_pred[index])],
            twin_proba=None if twin_proba is None else twin_proba[index].tolist(),
            twin_prediction=None if twin_proba is None else labels[int(twin_proba[index].argmax())],
            explanations=explanations[index],
        )
        for index in sorted(explanations)
    ]


def _row_outcomes(validated: ValidatedAudit, predictions: _Predictions) -> RowOutcomes:
    dataset = validated.dataset
    return RowOutcomes(
        y_true=predictions.y_true,
        reference_proba=predictions.reference_proba,
        candidate_proba=predictions.candidate_proba,
        labels=validated.labels,
        row_numbers=dataset.row_numbers,
        texts=dataset.texts,
        text_pairs=dataset.text_pairs,
    )


def _write_rows(
    outcomes: RowOutcomes,
    rows_path: str | os.PathLike[str] | None,
    *,
    rows_text: bool,
    stages: Stages,
) -> RowsSummary:
    flipped = int(outcomes.flipped.sum())
    if rows_path is None:
        return RowsSummary(count=len(outcomes), flipped=flipped)
    with stages.stage("rows"):
        Path(rows_path).parent.mkdir(parents=True, exist_ok=True)
        info = write_rows(rows_path, outcomes, include_text=rows_text)
    return RowsSummary(
        count=info.count,
        flipped=info.flipped,
        text=info.text,
        sha256=info.sha256,
        size_bytes=info.size_bytes,
    )
