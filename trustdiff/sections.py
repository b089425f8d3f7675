"""Result sections beyond dataset-wide means: slices, output-distance tails, SmoothECE and
disagreement exemplars, each built from gold labels and both models' probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from trustdiff.config import AuditConfig, Binning, JudgedOn
from trustdiff.datasets import Dataset
from trustdiff.metrics.bootstrap import bootstrap_index_chunks, percentile_interval
from trustdiff.metrics.calibration import expected_calibration_error_replicates
from trustdiff.metrics.divergence import (
    jensen_shannon_distance_per_instance,
    kl_divergence_per_instance,
    largest,
    tail_summary,
)
from trustdiff.metrics.exemplars import disagreement_exemplars, probability_shift
from trustdiff.metrics.slices import (
    SliceMetrics,
    length_quartile_labels,
    slice_metrics,
    slice_rows,
)
from trustdiff.metrics.smooth_calibration import (
    smooth_calibration_error_replicates,
    smooth_reliability_curve,
    top_label_scores,
)
from trustdiff.result import (
    DistanceSummary,
    Divergence,
    DivergentRow,
    ExemplarGroup,
    ExemplarRow,
    Exemplars,
    Histogram,
    Interval,
    ModelSmoothCalibration,
    SliceResult,
    Slices,
    SmoothCalibration,
    SmoothReliabilityCurve,
)

GOLD_SLICE = "gold label"
LENGTH_SLICE = "length"
MOST_DIVERGENT_ROWS = 10
EXEMPLARS_PER_GROUP = 5
DISTANCE_HISTOGRAM_BINS = 12
SMOOTH_CURVE_POINTS = 101


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are drawn: resamples (0: no intervals), confidence level, seed."""

    n_resamples: int
    confidence_level: float
    seed: int


@dataclass(frozen=True)
class SliceThreshold:
    """A slice check's threshold, for marking the slices that miss it."""

    name: str
    threshold: float
    judged_on: JudgedOn


def _interval(value: float, replicates: NDArray[np.float64] | None, level: float) -> Interval:
    if replicates is None:
        return Interval(value=value)
    low, high = percentile_interval(replicates, confidence_level=level)
    return Interval(value=value, ci_low=low, ci_high=high)


# --- slices ----------------------------------------------------------------------------------


def slice_groups(
    dataset: Dataset, columns: Sequence[str], labels: Sequence[str]
) -> list[tuple[str, str, NDArray[np.intp]]]:
    """(column, value, rows) of every slice: each named dataset column, then the gold label and
    the text length in words (quartiles of the audited rows; a pair counts both segments)."""
    groups = []
    for column in columns:
        for value, rows in slice_rows(dataset.columns[column]).items():
            groups.append((column, value, rows))
    for value, rows in slice_rows([labels[label] for label in dataset.labels]).items():
        groups.append((GOLD_SLICE, value, rows))
    lengths = [
        len(text.split())
        + (0 if dataset.text_pairs is None else len(dataset.text_pairs[i].split()))
        for i, text in enumerate(dataset.texts)
    ]
    for value, rows in slice_rows(length_quartile_labels(np.asarray(lengths))).items():
        groups.append((LENGTH_SLICE, value, rows))
    return groups


def _slice_replicates(
    y_true: NDArray[np.intp],
    reference_proba: NDArray[np.float64],
    candidate_proba: NDArray[np.float64],
    rows: NDArray[np.intp],
    *,
    bootstrap: Bootstrap,
    stream: int,
    n_bins: int,
    binning: Binning,
) -> dict[str, NDArray[np.float64]]:
    """Paired bootstrap replicates of the slice's deltas, resampling the slice's own rows.

    The resamples are drawn a chunk at a time (`bootstrap_index_chunks`: the same numbers as
    the whole matrix), so memory does not grow with the resample count.
    """
    seed = int(np.random.SeedSequence([bootstrap.seed, 0x511CE, stream]).generate_state(1)[0])
    reference_pred = reference_proba.argmax(axis=1)
    candidate_pred = candidate_proba.argmax(axis=1)
    parts: dict[str, list[NDArray[np.float64]]] = {}
    for chunk in bootstrap_index_chunks(rows.size, n_resamples=bootstrap.n_resamples, seed=seed):
        samples = rows[chunk]
        reference_right = (reference_pred == y_true)[samples]
        candidate_right = (candidate_pred == y_true)[samples]
        ece_delta = expected_calibration_error_replicates(
            y_true, candidate_proba, samples, n_bins=n_bins, binning=binning
        ) - expected_calibration_error_replicates(
            y_true, reference_proba, samples, n_bins=n_bins, binning=binning
        )
        for name, values in (
            ("accuracy_delta", candidate_right.mean(axis=1) - reference_right.mean(axis=1)),
            ("agreement", (reference_pred == candidate_pred)[samples].mean(axis=1)),
            ("negative_flip_rate", (reference_right & ~candidate_right).mean(axis=1)),
            ("ece_delta", ece_delta),
        ):
            parts.setdefault(name, []).append(values)
    return {name: np.concatenate(values) for name, values in parts.items()}


def _failing(result: SliceResult, thresholds: Sequence[SliceThreshold]) -> list[str]:
    failing = []
    for check in thresholds:
        if check.name == "worst_slice_accuracy_drop":
            interval = result.accuracy_delta
            bound = interval.ci_low if check.judged_on == "interval" else None
            judged = -(interval.value if bound is None else bound)
            if judged > check.threshold:
                failing.append(check.name)
        elif check.name == "worst_slice_agreement":
            interval = result.agreement
            bound = interval.ci_low if check.judged_on == "interval" else None
            if (interval.value if bound is None else bound) < check.threshold:
                failing.append(check.name)
    return failing


def _slice_result(
    point: SliceMetrics, replicates: dict[str, NDArray[np.float64]], level: float
) -> SliceResult:
    def interval_of(name: str, value: float) -> Interval:
        return _interval(value, replicates.get(name), level)

    return SliceResult(
        column=point.column,
        value=point.value,
        n=point.n,
        judged=point.judged,
        reference_accuracy=point.reference_accuracy,
        candidate_accuracy=point.candidate_accuracy,
        accuracy_delta=interval_of("accuracy_delta", point.accuracy_delta),
        agreement=interval_of("agreement", point.agreement),
        negative_flip_rate=interval_of("negative_flip_rate", point.negative_flip_rate),
        reference_ece=point.reference_ece,
        candidate_ece=point.candidate_ece,
        ece_delta=interval_of("ece_delta", point.ece_delta),
    )


def slices_section(
    y_true: NDArray[np.intp],
    reference_proba: NDArray[np.float64],
    candidate_proba: NDArray[np.float64],
    *,
    dataset: Dataset,
    labels: Sequence[str],
    columns: Sequence[str],
    min_slice_size: int,
    n_bins: int,
    binning: Binning,
    bootstrap: Bootstrap,
    thresholds: Sequence[SliceThreshold] = (),
) -> Slices:
    """Every slice's metrics with paired bootstrap intervals, sorted by agreement (lowest
    first, then by column and value). Only judged slices (≥ `min_slice_size` rows) are
    marked as failing a threshold."""
    results = []
    for stream, (column, value, rows) in enumerate(slice_groups(dataset, columns, labels)):
        point = slice_metrics(
            y_true,
            reference_proba,
            candidate_proba,
            rows=rows,
            column=column,
            value=value,
            min_slice_size=min_slice_size,
            n_bins=n_bins,
            binning=binning,
        )
        replicates: dict[str, NDArray[np.float64]] = {}
        if bootstrap.n_resamples > 0:
            replicates = _slice_replicates(
                y_true,
                reference_proba,
                candidate_proba,
                rows,
                bootstrap=bootstrap,
                stream=stream,
                n_bins=n_bins,
                binning=binning,
            )

        result = _slice_result(point, replicates, bootstrap.confidence_level)
        if result.judged:
            result = result.model_copy(update={"failing": _failing(result, thresholds)})
        results.append(result)
    results.sort(key=lambda item: (item.agreement.value, item.column, item.value))
    return Slices(
        columns=[*columns, GOLD_SLICE, LENGTH_SLICE],
        min_slice_size=min_slice_size,
        slices=results,
    )


# --- rows shown beside a figure ----------------------------------------------------------------


def _row_fields(
    row: int,
    dataset: Dataset,
    labels: Sequence[str],
    reference_proba: NDArray[np.float64],
    candidate_proba: NDArray[np.float64],
) -> dict[str, Any]:
    """The fields every listed row shares (`DivergentRow`, `ExemplarRow`): its index, text,
    gold label name and both models' probability vectors."""
    return {
        "index": int(row),
        "text": dataset.texts[row],
        "text_pair": None if dataset.text_pairs is None else dataset.text_pairs[row],
        "label": labels[dataset.labels[row]],
        "reference_proba": reference_proba[row].tolist(),
        "candidate_proba": candidate_proba[row].tolist(),
    }


# --- output-distance tails ---------------------------------------------------------------------


def _distance_summary(
    values: NDArray[np.float64], value_range: tuple[float, float] | None
) -> DistanceSummary:
    summary = tail_summary(values, n_bins=DISTANCE_HISTOGRAM_BINS, value_range=value_range)
    return DistanceSummary(
        mean=summary.mean,
        median=summary.median,
        p90=summary.p90,
        p99=summary.p99,
        max=summary.max,
        histogram=Histogram(
            edges=list(summary.histogram_edges), counts=list(summary.histogram_counts)
        ),
    )


def divergence_section(
    reference_proba: NDArray[np.float64],
    candidate_proba: NDArray[np.float64],
    *,
    dataset: Dataset,
    labels: Sequence[str],
) -> Divergence:
    """KL(reference ‖ candidate) and Jensen–Shannon distance per row, their tails, and the
    rows with the largest KL (ties: lower row first)."""
    kl = kl_divergence_per_instance(reference_proba, candidate_proba)
    js = jensen_shannon_distance_per_instance(reference_proba, candidate_proba)
    return Divergence(
        kl=_distance_summary(kl, None),
        js_distance=_distance_summary(js, (0.0, 1.0)),
        most_divergent=[
            DivergentRow(
                **_row_fields(row, dataset, labels, reference_proba, candidate_proba),
                kl=float(kl[row]),
                js_distance=float(js[row]),
            )
            for row in largest(kl, count=MOST_DIVERGENT_ROWS)
        ],
    )


# --- smooth calibration ------------------------------------------------------------------------


def _model_smooth_calibration(
    y_true: NDArray[np.intp], proba: NDArray[np.float64]
) -> ModelSmoothCalibration:
    curve = smooth_reliability_curve(y_true, proba, n_points=SMOOTH_CURVE_POINTS)
    return ModelSmoothCalibration(
        smooth_ece=curve.smooth_ece,
        bandwidth=curve.bandwidth,
        curve=SmoothReliabilityCurve(
            confidence=list(curve.confidence),
            accuracy=list(curve.accuracy),
            density=list(curve.density),
        ),
    )


def smooth_calibration_section(
    y_true: NDArray[np.intp],
    reference_proba: NDArray[np.float64],
    candidate_proba: NDArray[np.float64],
    *,
    bootstrap: Bootstrap,
) -> SmoothCalibration:
    """SmoothECE and smooth reliability curve of both models, and the paired bootstrap
    interval of the delta on the same resamples as the other deltas (same seed)."""
    reference = _model_smooth_calibration(y_true, reference_proba)
    candidate = _model_smooth_calibration(y_true, candidate_proba)
    replicates = None
    if bootstrap.n_resamples > 0:
        reference_scores = top_label_scores(y_true, reference_proba)
        candidate_scores = top_label_scores(y_true, candidate_proba)
        chunks = bootstrap_index_chunks(
            y_true.size, n_resamples=bootstrap.n_resamples, seed=bootstrap.seed
        )
        parts = []
        for samples in chunks:
            # Resample counts as weights: the same rows, without copying them; one chunk of
            # resamples at a time, so memory does not grow with the resample count.
            weights = np.stack([np.bincount(sample, minlength=y_true.size) for sample in samples])
            parts.append(
                smooth_calibration_error_replicates(*candidate_scores, weights)
                - smooth_calibration_error_replicates(*reference_scores, weights)
            )
        replicates = np.concatenate(parts)
    return SmoothCalibration(
        reference=reference,
        candidate=candidate,
        delta=_interval(
            candidate.smooth_ece - reference.smooth_ece, replicates, bootstrap.confidence_level
        ),
    )


# --- exemplars ---------------------------------------------------------------------------------


def exemplars_section(
    reference_proba: NDArray[np.float64],
    candidate_proba: NDArray[np.float64],
    *,
    dataset: Dataset,
    labels: Sequence[str],
) -> Exemplars:
    """The flipped rows with the largest probability shift, per (reference → candidate)."""
    shift = probability_shift(reference_proba, candidate_proba)
    groups = disagreement_exemplars(reference_proba, candidate_proba, per_group=EXEMPLARS_PER_GROUP)
    return Exemplars(
        per_group=EXEMPLARS_PER_GROUP,
        groups=[
            ExemplarGroup(
                reference_prediction=labels[group.reference_class],
                candidate_prediction=labels[group.candidate_class],
                count=group.count,
                rows=[
                    ExemplarRow(
                        **_row_fields(row, dataset, labels, reference_proba, candidate_proba),
                        shift=float(shift[row]),
                    )
                    for row in group.rows
                ],
            )
            for group in groups
        ],
    )


# --- all of them -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Breakdown:
    """The sections beyond dataset-wide means, measured together after the predictions."""

    slices: Slices
    divergence: Divergence
    smooth_calibration: SmoothCalibration
    exemplars: Exemplars


def measure_breakdown(
    y_true: NDArray[np.intp],
    reference_proba: NDArray[np.float64],
    candidate_proba: NDArray[np.float64],
    *,
    dataset: Dataset,
    labels: Sequence[str],
    config: AuditConfig,
) -> Breakdown:
    """Slices, output-distance tails, SmoothECE and exemplars under the audit's settings.

    Intervals use the calibration settings' resamples, level and the audit seed; slices are
    marked against the slice checks' thresholds whether or not those checks gate.
    """
    calibration = config.calibration
    bootstrap = Bootstrap(
        n_resamples=calibration.n_bootstrap,
        confidence_level=calibration.confidence_level,
        seed=config.seed,
    )
    thresholds = [
        SliceThreshold(name, setting.threshold, setting.judged_on)
        for name, setting in (
            ("worst_slice_accuracy_drop", config.gate.worst_slice_accuracy_drop),
            ("worst_slice_agreement", config.gate.worst_slice_agreement),
        )
    ]
    return Breakdown(
        slices=slices_section(
            y_true,
            reference_proba,
            candidate_proba,
            dataset=dataset,
            labels=labels,
            columns=config.slices.columns,
            min_slice_size=config.slices.min_slice_size,
            n_bins=calibration.n_bins,
            binning=calibration.binning,
            bootstrap=bootstrap,
            thresholds=thresholds,
        ),
        divergence=divergence_section(
            reference_proba, candidate_proba, dataset=dataset, labels=labels
        ),
        smooth_calibration=smooth_calibration_section(
            y_true, reference_proba, candidate_proba, bootstrap=bootstrap
        ),
        exemplars=exemplars_section(
            reference_proba, candidate_proba, dataset=dataset, labels=labels
        ),
    )
