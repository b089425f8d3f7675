"""Run one audit end to end: validate, load, predict, measure, explain, judge, document."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from trustdiff.checkpoints import (
    CheckpointInfo,
    align_label_spaces,
    fingerprint_checkpoint,
    inspect_checkpoint,
)
from trustdiff.config import AuditConfig, CalibrationSettings
from trustdiff.datasets import Dataset, read_dataset
from trustdiff.errors import AuditCancelledError, ConfigError
from trustdiff.gate import evaluate_gate
from trustdiff.metrics import parity as parity_metrics
from trustdiff.metrics.bootstrap import bootstrap_indices, percentile_interval
from trustdiff.metrics.calibration import BINNINGS, calibration_summary, reliability_bins
from trustdiff.paths import resolve_under_root
from trustdiff.result import (
    AuditResult,
    BinnedCalibration,
    Calibration,
    CheckpointManifest,
    DatasetManifest,
    Explanation,
    Instance,
    Interval,
    Manifest,
    MethodAlignment,
    ModelCalibration,
    ModelParity,
    Parity,
    ReliabilityBin,
)

if TYPE_CHECKING:
    from trustdiff.inference import ModelRunner

ProgressCallback = Callable[[str, int, int], None]
STAGES = ("validate", "load", "predict", "metrics", "explain", "gate")
CALIBRATION_DELTA_METRICS = ("ece", "mce", "classwise_ece", "brier", "nll")
VERSIONED_PACKAGES = (
    "trustdiff",
    "torch",
    "transformers",
    "tokenizers",
    "shap",
    "lime",
    "numpy",
    "scipy",
    "scikit-learn",
)
# Device strings accepted without importing torch; availability is checked at load time.
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")


@dataclass(frozen=True)
class ValidatedAudit:
    """An audit whose cheap checks all passed: resolved paths, both checkpoints inspected,
    the label spaces aligned, every dataset row read. No model is loaded, no torch imported.

    `candidate_column_order` puts candidate probability columns in reference label order.
    """

    config: AuditConfig
    reference_path: Path
    candidate_path: Path
    dataset_path: Path
    reference: CheckpointInfo
    candidate: CheckpointInfo
    labels: list[str]
    candidate_column_order: list[int]
    dataset: Dataset


def validate_audit(
    config: AuditConfig, *, model_root: Path | None, data_root: Path | None
) -> ValidatedAudit:
    """Every check that needs no model, in the order a user fixes them; fast and torch-free.

    Raises `PathOutsideRootError`, `CheckpointError` subclasses, `LabelMismatchError`,
    `DatasetError` (with the bad row) or `ConfigError` (an unrecognisable device string).
    """
    if not _DEVICE_PATTERN.match(config.device):
        raise ConfigError(
            f"invalid device {config.device!r}: use auto, cpu, cuda, cuda:N, mps or xpu"
        )
    reference_path = resolve_under_root(
        config.reference.path, model_root, what="reference checkpoint"
    )
    candidate_path = resolve_under_root(
        config.candidate.path, model_root, what="candidate checkpoint"
    )
    dataset_path = resolve_under_root(config.dataset.path, data_root, what="dataset")
    reference = inspect_checkpoint(reference_path)
    candidate = inspect_checkpoint(candidate_path)
    column_order = align_label_spaces(reference.labels, candidate.labels, config.label_mapping)
    dataset = read_dataset(dataset_path, config.dataset, labels=reference.labels, seed=config.seed)
    return ValidatedAudit(
        config=config,
        reference_path=reference_path,
        candidate_path=candidate_path,
        dataset_path=dataset_path,
        reference=reference,
        candidate=candidate,
        labels=list(reference.labels),
        candidate_column_order=column_order,
        dataset=dataset,
    )


# --- metrics --------------------------------------------------------------------------------


def _interval(value: float, replicates: NDArray[np.float64] | None, level: float) -> Interval:
    if replicates is None:
        return Interval(value=value)
    low, high = percentile_interval(replicates, confidence_level=level)
    return Interval(value=value, ci_low=low, ci_high=high)


def _model_calibration(
    y_true: NDArray[np.intp], proba: NDArray[np.float64], settings: CalibrationSettings
) -> ModelCalibration:
    summary = calibration_summary(y_true, proba, n_bins=settings.n_bins, binning=settings.binning)
    reliability = []
    for binning in BINNINGS:
        bins = [
            ReliabilityBin(
                lower=stats.lower,
                upper=stats.upper,
                count=stats.count,
                mean_confidence=stats.mean_confidence,
                accuracy=stats.accuracy,
            )
            for stats in reliability_bins(y_true, proba, n_bins=settings.n_bins, binning=binning)
        ]
        binned = calibration_summary(y_true, proba, n_bins=settings.n_bins, binning=binning)
        reliability.append(
            BinnedCalibration(
                binning=binning, n_bins=settings.n_bins, ece=binned.ece, mce=binned.mce, bins=bins
            )
        )
    configured = next(item for item in reliability if item.binning == settings.binning)
    return ModelCalibration(
        ece=summary.ece,
        mce=summary.mce,
        classwise_ece=summary.classwise_ece,
        brier=summary.brier,
        nll=summary.nll,
        bins=configured.bins,
        reliability=reliability,
    )


def summarize_predictions(
    y_true: NDArray[np.intp],
    reference_proba: NDArray[np.float64],
    candidate_proba: NDArray[np.float64],
    *,
    labels: list[str],
    settings: CalibrationSettings,
    seed: int,
) -> tuple[Parity, Calibration]:
    """Parity and calibration sections from gold labels (n,) and both models' (n, K) probabilities.

    Deltas are candidate − reference. Their intervals come from one paired bootstrap
    (`settings.n_bootstrap` resamples of the instances, seeded): every replicate evaluates
    both models, and every metric, on the same resampled rows. With `n_bootstrap = 0` the
    intervals are omitted.
    """
    n_classes = len(labels)
    reference_pred = reference_proba.argmax(axis=1)
    candidate_pred = candidate_proba.argmax(axis=1)
    flips = parity_metrics.flip_counts(y_true, reference_pred, candidate_pred)
    reference_calibration = _model_calibration(y_true, reference_proba, settings)
    candidate_calibration = _model_calibration(y_true, candidate_proba, settings)

    replicates: dict[str, NDArray[np.float64]] | None = None
    if settings.n_bootstrap > 0:
        rows = bootstrap_indices(y_true.size, n_resamples=settings.n_bootstrap, seed=seed)
        reference_correct = (reference_pred == y_true)[rows]
        candidate_correct = (candidate_pred == y_true)[rows]
        replicates = {
            "accuracy": candidate_correct.mean(axis=1) - reference_correct.mean(axis=1),
            "agreement": (reference_pred == candidate_pred)[rows].mean(axis=1),
            "macro_f1": np.empty(settings.n_bootstrap),
            **{metric: np.empty(settings.n_bootstrap) for metric in CALIBRATION_DELTA_METRICS},
        }
        for replicate, sample in enumerate(rows):
            replicates["macro_f1"][replicate] = parity_metrics.macro_f1(
                y_true[sample], candidate_pred[sample], n_classes=n_classes
            ) - parity_metrics.macro_f1(y_true[sample], reference_pred[sample], n_classes=n_classes)
            reference_summary = calibration_summary(
                y_true[sample],
                reference_proba[sample],
                n_bins=settings.n_bins,
                binning=settings.binning,
            )
            candidate_summary = calibration_summary(
                y_true[sample],
                candidate_proba[sample],
                n_bins=settings.n_bins,
                binning=settings.binning,
            )
            for metric in CALIBRATION_DELTA_METRICS:
                replicates[metric][replicate] = getattr(candidate_summary, metric) - getattr(
                    reference_summary, metric
                )

    def interval_of(name: str, value: float) -> Interval:
        return _interval(
            value, None if replicates is None else replicates[name], settings.confidence_level
        )

    def model_parity(predicted: NDArray[np.intp]) -> ModelParity:
        recall = parity_metrics.per_class_recall(y_true, predicted, n_classes=n_classes)
        return ModelParity(
            accuracy=parity_metrics.accuracy(y_true, predicted),
            macro_f1=parity_metrics.macro_f1(y_true, predicted, n_classes=n_classes),
            per_class_recall={label: float(recall[index]) for index, label in enumerate(labels)},
        )

    reference_parity = model_parity(reference_pred)
    candidate_parity = model_parity(candidate_pred)
    agreement = parity_metrics.agreement(reference_pred, candidate_pred)
    parity = Parity(
        reference=reference_parity,
        candidate=candidate_parity,
        accuracy_delta=interval_of(
            "accuracy", candidate_parity.accuracy - reference_parity.accuracy
        ),
        macro_f1_delta=interval_of(
            "macro_f1", candidate_parity.macro_f1 - reference_parity.macro_f1
        ),
        agreement=agreement,
        agreement_interval=interval_of("agreement", agreement),
        fixed=flips.fixed,
        broken=flips.broken,
        mcnemar_p=parity_metrics.mcnemar_exact_p_value(flips.fixed, flips.broken),
        kappa=parity_metrics.cohen_kappa(reference_pred, candidate_pred),
        probability_loyalty=parity_metrics.probability_loyalty(reference_proba, candidate_proba),
        disagreement_matrix=parity_metrics.disagreement_matrix(
            reference_pred, candidate_pred, n_classes=n_classes
        ).tolist(),
    )
    calibration = Calibration(
        binning=settings.binning,
        n_bins=settings.n_bins,
        reference=reference_calibration,
        candidate=candidate_calibration,
        delta={
            metric: interval_of(
                metric,
                getattr(candidate_calibration, metric) - getattr(reference_calibration, metric),
            )
            for metric in CALIBRATION_DELTA_METRICS
        },
    )
    return parity, calibration


# --- the run --------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _describe_device(reference: ModelRunner, candidate: ModelRunner) -> str:
    if reference.device == candidate.device:
        return str(reference.device)
    return f"reference: {reference.device}, candidate: {candidate.device}"


def run_audit(
    config: AuditConfig,
    *,
    model_root: Path | None = None,
    data_root: Path | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> AuditResult:
    """Audit `config.candidate` against `config.reference` on `config.dataset`.

    Cheap checks run first (`validate_audit`), so a bad path, checkpoint, label space or
    dataset row fails before any model loads. Then both checkpoints load (one runner when
    they are the same folder and transform), every dataset row is predicted through one
    `BatchingEvaluator`, parity and calibration are measured with paired bootstrap intervals,
    the explainers run when `config.explain` asks for instances and methods, and the gate
    judges it all.

    `progress(stage, done, total)` is called at the start and end of each stage in
    `STAGES` ("explain" only when explanations run) and per prediction chunk; the explainers
    may report more. `should_cancel()` is polled between stages and batches; once it answers
    true, `AuditCancelledError` is raised. `manifest.timings` holds seconds per stage,
    `total`, and `forward` (tokenization and forward passes inside the evaluator).
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def report(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)

    def check_cancelled() -> None:
        if should_cancel is not None and should_cancel():
            raise AuditCancelledError("audit cancelled")

    @contextmanager
    def stage(name: str, total: int = 1) -> Iterator[None]:
        check_cancelled()
        report(name, 0, total)
        stage_started = time.perf_counter()
        yield
        timings[name] = time.perf_counter() - stage_started
        report(name, total, total)

    with stage("validate"):
        validated = validate_audit(config, model_root=model_root, data_root=data_root)
        reference_fingerprint = fingerprint_checkpoint(
            validated.reference_path, config.reference.transform
        )
        candidate_fingerprint = fingerprint_checkpoint(
            validated.candidate_path, config.candidate.transform
        )
    dataset = validated.dataset
    labels = validated.labels

    with stage("load", total=2):
        # Imported here so that validating an audit (the gateway's job) never imports torch.
        from trustdiff.inference import BatchingEvaluator, load_model_runner

        reference_runner = load_model_runner(
            validated.reference_path,
            transform=config.reference.transform,
            device=config.device,
            max_length=config.max_length,
        )
        report("load", 1, 2)
        same_model = (
            validated.reference_path == validated.candidate_path
            and config.reference.transform == config.candidate.transform
        )
        candidate_runner = (
            reference_runner
            if same_model
            else load_model_runner(
                validated.candidate_path,
                transform=config.candidate.transform,
                device=config.device,
                max_length=config.max_length,
            )
        )

    evaluator = BatchingEvaluator(
        [reference_runner, candidate_runner],
        column_orders=[list(range(len(labels))), validated.candidate_column_order],
        batch_size=config.batch_size,
        should_cancel=should_cancel,
    )
    inputs = dataset.inputs
    # Chunks exist only to report progress; each is still length-sorted inside.
    chunk_size = max(8 * config.batch_size, 512)
    reference_parts, candidate_parts = [], []
    with stage("predict", total=len(inputs)):
        for start in range(0, len(inputs), chunk_size):
            reference_part, candidate_part = evaluator.predict_proba(
                inputs[start : start + chunk_size]
            )
            reference_parts.append(reference_part)
            candidate_parts.append(candidate_part)
            if start + chunk_size < len(inputs):
                report("predict", start + chunk_size, len(inputs))
    reference_proba = np.concatenate(reference_parts)
    candidate_proba = np.concatenate(candidate_parts)
    y_true = np.asarray(dataset.labels, dtype=np.intp)

    with stage("metrics"):
        parity, calibration = summarize_predictions(
            y_true,
            reference_proba,
            candidate_proba,
            labels=labels,
            settings=config.calibration,
            seed=config.seed,
        )

    alignment: dict[str, MethodAlignment] = {}
    explanations: dict[int, Explanation] = {}
    if config.explain.instances > 0 and config.explain.methods:
        with stage("explain"):
            # Imported lazily: the explainers pull in shap and lime, which audits without
            # explanations never need.
            from trustdiff.explain import explain_and_align

            alignment, explanations = explain_and_align(
                evaluator,
                dataset,
                reference_proba=reference_proba,
                candidate_proba=candidate_proba,
                settings=config.explain,
                labels=labels,
                seed=config.seed,
                progress=report,
                should_cancel=should_cancel,
            )

    with stage("gate"):
        gate = evaluate_gate(parity, calibration, alignment, config.gate)

    timings["forward"] = evaluator.stats.forward_seconds
    timings["total"] = time.perf_counter() - started
    manifest = Manifest(
        reference=CheckpointManifest(
            path=config.reference.path,
            fingerprint=reference_fingerprint,
            transform=config.reference.transform,
            model_type=validated.reference.model_type,
            num_parameters=reference_runner.num_parameters,
            labels=validated.reference.labels,
        ),
        candidate=CheckpointManifest(
            path=config.candidate.path,
            fingerprint=candidate_fingerprint,
            transform=config.candidate.transform,
            model_type=validated.candidate.model_type,
            num_parameters=candidate_runner.num_parameters,
            labels=validated.candidate.labels,
        ),
        dataset=DatasetManifest(
            path=config.dataset.path,
            fingerprint=dataset.fingerprint,
            format=dataset.format,
            rows=len(dataset),
            rows_in_file=dataset.rows_in_file,
            text_field=config.dataset.text_field,
            text_pair_field=config.dataset.text_pair_field,
            label_field=config.dataset.label_field,
        ),
        labels=labels,
        label_mapping=config.label_mapping,
        config=config.model_dump(mode="json"),
        seed=config.seed,
        versions=_versions(),
        device=_describe_device(reference_runner, candidate_runner),
        timings=timings,
        created_at=datetime.now(UTC).isoformat(),
    )
    reference_pred = reference_proba.argmax(axis=1)
    candidate_pred = candidate_proba.argmax(axis=1)
    instances = [
        Instance(
            index=index,
            text=dataset.texts[index],
            text_pair=None if dataset.text_pairs is None else dataset.text_pairs[index],
            label=labels[dataset.labels[index]],
            reference_proba=reference_proba[index].tolist(),
            candidate_proba=candidate_proba[index].tolist(),
            reference_prediction=labels[int(reference_pred[index])],
            candidate_prediction=labels[int(candidate_pred[index])],
            explanations=explanations.get(index),
        )
        for index in range(len(dataset))
    ]
    return AuditResult(
        manifest=manifest,
        parity=parity,
        calibration=calibration,
        alignment=alignment,
        gate=gate,
        instances=instances,
    )
