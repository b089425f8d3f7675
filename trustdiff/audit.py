"""Run one audit end to end: validate, load, predict, measure, explain, judge, document."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from trustdiff.cache import PREDICTIONS, AuditCache
from trustdiff.checkpoints import (
    CheckpointInfo,
    align_label_spaces,
    checkpoint_content_sha256,
    fingerprint_checkpoint,
    inspect_checkpoint,
)
from trustdiff.config import AuditConfig, CheckpointSpec
from trustdiff.datasets import Dataset, read_dataset
from trustdiff.errors import AuditCancelledError, ConfigError
from trustdiff.gate import evaluate_gate
from trustdiff.paths import resolve_under_root
from trustdiff.prediction_summary import summarize_predictions
from trustdiff.result import (
    Attributions,
    AuditResult,
    Calibration,
    CheckpointManifest,
    DatasetManifest,
    Explanation,
    Instance,
    Manifest,
    MethodAlignment,
    Parity,
    RowsSummary,
    TwinCacheManifest,
)
from trustdiff.rows import RowOutcomes, write_rows
from trustdiff.sections import measure_breakdown
from trustdiff.twin_cache import TwinCache, TwinFigures, twin_cache_key

if TYPE_CHECKING:
    from trustdiff.datasets import TextInput
    from trustdiff.inference import BatchingEvaluator, ModelRunner

ProgressCallback = Callable[[str, int, int], None]
STAGES = ("validate", "load", "predict", "metrics", "explain", "rows", "gate")
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

    `candidate_column_order` puts candidate probability columns in reference label order;
    `twin_column_order` does the same for the twin, when there is one.
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
    twin_path: Path | None = None
    twin: CheckpointInfo | None = None
    twin_column_order: list[int] | None = None


def _optional_path(path: str | os.PathLike[str] | None) -> Path | None:
    return None if path is None else Path(path)


# Checkpoint paths starting with this name the shared model root, when one is given.
SHARED_MODELS_PREFIX = "shared/"


def _checkpoint_path(
    path: str, models: Path | None, shared: Path | None, *, what: str
) -> tuple[Path, Path | None]:
    """The resolved checkpoint folder and the root it must stay under."""
    if shared is not None and path.startswith(SHARED_MODELS_PREFIX):
        relative = path.removeprefix(SHARED_MODELS_PREFIX)
        return resolve_under_root(relative or ".", shared, what=what), shared.resolve()
    root = models.resolve() if models is not None else None
    return resolve_under_root(path, models, what=what), root


def validate_audit(
    config: AuditConfig,
    *,
    model_root: str | os.PathLike[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    shared_model_root: str | os.PathLike[str] | None = None,
) -> ValidatedAudit:
    """Every check that needs no model, in the order a user fixes them; fast and torch-free.

    Checkpoint paths resolve under `model_root`, or under `shared_model_root` when given and
    the path starts with `shared/`; every file of a checkpoint must stay under its root too
    (a weight file symlinked out of it is refused like a folder would be).

    Raises `PathOutsideRootError`, `CheckpointError` subclasses, `LabelMismatchError`,
    `DatasetError` (with the bad row) or `ConfigError` (an unrecognisable device string, a
    slice column the dataset lacks).
    """
    if not _DEVICE_PATTERN.match(config.device):
        raise ConfigError(
            f"invalid device {config.device!r}: use auto, cpu, cuda, cuda:N, mps or xpu"
        )
    models, data = _optional_path(model_root), _optional_path(data_root)
    shared = _optional_path(shared_model_root)
    reference_path, reference_root = _checkpoint_path(
        config.reference.path, models, shared, what="reference checkpoint"
    )
    candidate_path, candidate_root = _checkpoint_path(
        config.candidate.path, models, shared, what="candidate checkpoint"
    )
    dataset_path = resolve_under_root(config.dataset.path, data, what="dataset")
    reference = inspect_checkpoint(reference_path, root=reference_root)
    candidate = inspect_checkpoint(candidate_path, root=candidate_root)
    column_order = align_label_spaces(reference.labels, candidate.labels, config.label_mapping)
    twin_path = twin = twin_column_order = None
    if config.twin is not None:
        twin_path, twin_root = _checkpoint_path(
            config.twin.path, models, shared, what="twin checkpoint"
        )
        twin = inspect_checkpoint(twin_path, root=twin_root)
        # The twin is the reference's recipe: its labels are the reference's, no mapping.
        twin_column_order = align_label_spaces(reference.labels, twin.labels, None)
    dataset = read_dataset(dataset_path, config.dataset, labels=reference.labels, seed=config.seed)
    missing = [column for column in config.slices.columns if column not in dataset.columns]
    if missing:
        raise ConfigError(
            f"slice column {missing[0]!r} is not in the dataset; its other columns are "
            f"{sorted(dataset.columns)}"
        )
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
        twin_path=twin_path,
        twin=twin,
        twin_column_order=twin_column_order,
    )


@dataclass(frozen=True)
class _Predictions:
    """Gold labels (n,), both models' probabilities (n, K) and their predicted classes (n,)."""

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


class _Stages:
    """Progress reporting, cancellation polling and timing of the audit's stages."""

    def __init__(
        self, progress: ProgressCallback | None, should_cancel: Callable[[], bool] | None
    ) -> None:
        self.progress = progress
        self.should_cancel = should_cancel
        self.timings: dict[str, float] = {}
        self.started = time.perf_counter()

    def report(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    @contextmanager
    def stage(self, name: str, total: int = 1) -> Iterator[None]:
        if self.should_cancel is not None and self.should_cancel():
            raise AuditCancelledError("audit cancelled")
        self.report(name, 0, total)
        stage_started = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - stage_started
        self.report(name, total, total)


@dataclass(frozen=True)
class _Runners:
    reference: ModelRunner
    candidate: ModelRunner
    # Loaded only when the twin's figures are not cached.
    twin: ModelRunner | None = None


def _load_runners(
    validated: ValidatedAudit, report: ProgressCallback, *, load_twin: bool
) -> _Runners:
    """The models; a model that is the reference's folder and transform reuses its runner."""
    # Imported here so that validating an audit (the gateway's job) never imports torch.
    from trustdiff.inference import load_model_runner

    config = validated.config
    total = 3 if load_twin else 2

    def load(path: Path, transform: str | None) -> ModelRunner:
        return load_model_runner(
            path,
            transform=transform,
            device=config.device,
            dtype=config.dtype,
            max_length=config.max_length,
        )

    def same_as_reference(path: Path | None, transform: str | None) -> bool:
        return path == validated.reference_path and transform == config.reference.transform

    reference = load(validated.reference_path, config.reference.transform)
    report("load", 1, total)
    candidate = (
        reference
        if same_as_reference(validated.candidate_path, config.candidate.transform)
        else load(validated.candidate_path, config.candidate.transform)
    )
    twin = None
    if load_twin and config.twin is not None and validated.twin_path is not None:
        report("load", 2, total)
        twin = (
            reference
            if same_as_reference(validated.twin_path, config.twin.transform)
            else load(validated.twin_path, config.twin.transform)
        )
    return _Runners(reference=reference, candidate=candidate, twin=twin)


def _evaluator(
    validated: ValidatedAudit,
    runners: _Runners,
    should_cancel: Callable[[], bool] | None,
    *,
    without_reference: bool = False,
) -> BatchingEvaluator:
    """One evaluator for the models (reference, candidate, then the twin when loaded), every
    model's columns in reference label order; `without_reference` leaves the reference out."""
    from trustdiff.inference import BatchingEvaluator

    models = [runners.reference, runners.candidate]
    orders = [list(range(len(validated.labels))), validated.candidate_column_order]
    if runners.twin is not None and validated.twin_column_order is not None:
        models.append(runners.twin)
        orders.append(validated.twin_column_order)
    if without_reference:
        models, orders = models[1:], orders[1:]
    return BatchingEvaluator(
        models,
        column_orders=orders,
        batch_size=validated.config.batch_size,
        should_cancel=should_cancel,
    )


def _predict(
    evaluator: BatchingEvaluator, inputs: list[TextInput], *, batch_size: int, stages: _Stages
) -> list[NDArray[np.float64]]:
    """Every model's probabilities (n, K) for every input, reported chunk by chunk."""
    # Chunks exist only to report progress; each is still length-sorted inside.
    chunk_size = max(8 * batch_size, 512)
    parts: list[list[NDArray[np.float64]]] = [[] for _ in evaluator.runners]
    with stages.stage("predict", total=len(inputs)):
        for start in range(0, len(inputs), chunk_size):
            for model_parts, part in zip(
                parts, evaluator.predict_proba(inputs[start : start + chunk_size]), strict=True
            ):
                model_parts.append(part)
            if start + chunk_size < len(inputs):
                stages.report("predict", start + chunk_size, len(inputs))
    return [np.concatenate(model_parts) for model_parts in parts]


def _reference_predictions_key(
    validated: ValidatedAudit, reference_fingerprint: str, runner: ModelRunner
) -> dict[str, object]:
    """Everything the reference's probabilities on the dataset depend on, and nothing else.

    The model (fingerprint, which includes the transform; the dtype and device it computed
    in; max length and batch size, which decide truncation and padding) and the rows (the
    file's sha256, its field mapping, limit, sampling and the seed a random sample used).
    The engine version is in the key too: a release may change how inputs are batched.
    """
    config, spec = validated.config, validated.config.dataset
    return {
        "model": {
            "fingerprint": reference_fingerprint,
            "dtype": str(runner.dtype),
            "device": str(runner.device),
            "max_length": config.max_length,
            "batch_size": config.batch_size,
        },
        "dataset": {
            "sha256": validated.dataset.fingerprint,
            "format": validated.dataset.format,
            "text_field": spec.text_field,
            "text_pair_field": spec.text_pair_field,
            "limit": spec.limit,
            "sampling": spec.sampling,
            "seed": config.seed if spec.limit is not None and spec.sampling == "random" else None,
        },
        "trustdiff": _versions()["trustdiff"],
    }


def _predict_all(
    evaluator: BatchingEvaluator,
    validated: ValidatedAudit,
    runners: _Runners,
    reference_fingerprint: str,
    stages: _Stages,
    cache: AuditCache | None,
) -> list[NDArray[np.float64]]:
    """`_predict` of every model; the reference's probabilities from `cache` when it has them.

    On a miss every model runs through `evaluator` (the one the explainers use next) and the
    reference's probabilities are stored for the next audit against this reference and
    dataset. On a hit the other models run through an evaluator without the reference: no
    reference forward pass at all. The chunks and each tokenizer's batch plan are the same
    either way, so the figures are identical to an uncached run.
    """
    config, inputs = validated.config, validated.dataset.inputs
    key = _reference_predictions_key(validated, reference_fingerprint, runners.reference)
    cached = None if cache is None else cache.load_arrays(PREDICTIONS, key)
    if cached is None or cached["proba"].shape != (len(inputs), len(validated.labels)):
        probabilities = _predict(evaluator, inputs, batch_size=config.batch_size, stages=stages)
        if cache is not None:
            cache.store_arrays(PREDICTIONS, key, {"proba": probabilities[0]})
        return probabilities
    others = _evaluator(validated, runners, stages.should_cancel, without_reference=True)
    rest = _predict(others, inputs, batch_size=config.batch_size, stages=stages)
    stages.timings["forward_without_reference"] = others.stats.forward_seconds
    return [cached["proba"].astype(np.float64), *rest]


def _checkpoint_fingerprints(
    specs: Sequence[tuple[Path, str | None]], cache: AuditCache | None
) -> list[str]:
    """Each (folder, transform)'s fingerprint; each folder's files are read at most once.

    With a cache, a folder whose files kept their sizes and modification times is not read
    at all; without one, a folder audited against a transform of itself is read once.
    """
    if cache is not None:
        return [cache.checkpoint_fingerprint(path, transform) for path, transform in specs]
    contents: dict[Path, str] = {}
    for path, _ in specs:
        if path not in contents:
            contents[path] = checkpoint_content_sha256(path)
    return [
        fingerprint_checkpoint(path, transform, content_sha256=contents[path])
        for path, transform in specs
    ]


def _explain(
    evaluator: BatchingEvaluator,
    validated: ValidatedAudit,
    predictions: _Predictions,
    stages: _Stages,
    *,
    explain_twin: bool,
) -> tuple[dict[str, MethodAlignment], dict[int, Explanation]]:
    """Alignment per method and explanations per instance index; empty when none are asked.
    With `explain_twin`, the evaluator's third runner (the twin) is explained too."""
    config = validated.config
    if config.explain.instances == 0 or not config.explain.methods:
        return {}, {}
    with stages.stage("explain"):
        # Imported lazily: the explainers pull in shap and lime, which audits without
        # explanations never need.
        from trustdiff.explain import explain_and_align

        alignment, explanations = explain_and_align(
            evaluator,
            validated.dataset,
            reference_proba=predictions.reference_proba,
            candidate_proba=predictions.candidate_proba,
            settings=config.explain,
            labels=validated.labels,
            seed=config.seed,
            progress=stages.report,
            should_cancel=stages.should_cancel,
            twin_proba=predictions.twin_proba if explain_twin else None,
        )
        if not config.explain.faithfulness:
            return alignment, explanations
        from trustdiff.explain.faithfulness import add_faithfulness

        return add_faithfulness(
            evaluator,
            alignment,
            explanations,
            reference_proba=predictions.reference_proba,
            candidate_proba=predictions.candidate_proba,
            gold=validated.dataset.labels,
            config=config,
        )


def _checkpoint_manifest(
    spec: CheckpointSpec, info: CheckpointInfo, fingerprint: str, runner: ModelRunner
) -> CheckpointManifest:
    return CheckpointManifest(
        path=spec.path,
        fingerprint=fingerprint,
        transform=spec.transform,
        model_type=info.model_type,
        num_parameters=runner.num_parameters,
        dtype=str(runner.dtype).removeprefix("torch."),
        labels=info.labels,
    )


def _manifest(
    validated: ValidatedAudit,
    fingerprints: tuple[str, str],
    runners: _Runners,
    timings: dict[str, float],
    twin: _Twin | None,
) -> Manifest:
    config, dataset = validated.config, validated.dataset
    return Manifest(
        twin=None if twin is None else twin.figures.manifest,
        twin_cache=None if twin is None else twin.cache_manifest,
        reference=_checkpoint_manifest(
            config.reference, validated.reference, fingerprints[0], runners.reference
        ),
        candidate=_checkpoint_manifest(
            config.candidate, validated.candidate, fingerprints[1], runners.candidate
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
        labels=validated.labels,
        label_mapping=config.label_mapping,
        config=config.model_dump(mode="json"),
        seed=config.seed,
        versions=_versions(),
        device=_describe_device(runners.reference, runners.candidate),
        timings=timings,
        created_at=datetime.now(UTC).isoformat(),
    )


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
    stages: _Stages,
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


def run_audit(
    config: AuditConfig,
    *,
    model_root: str | os.PathLike[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    shared_model_root: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    twin_cache: TwinCache | None = None,
    cache: AuditCache | None = None,
    rows_path: str | os.PathLike[str] | None = None,
    rows_text: bool = False,
) -> AuditResult:
    """Audit `config.candidate` against `config.reference` on `config.dataset`.

    Cheap checks run first (`validate_audit`), so a bad path, checkpoint, label space or
    dataset row fails before any model loads. Then both checkpoints load (one runner when
    they are the same folder and transform), every dataset row is predicted through one
    `BatchingEvaluator`, parity and calibration are measured with paired bootstrap intervals,
    the explainers run when `config.explain` asks for instances and methods, and the gate
    judges it all. Relative paths in `config` resolve under `model_root` and `data_root`
    when given (and may not leave them), else against the working directory; `shared/...`
    checkpoints under `shared_model_root` when given.

    `progress(stage, done, total)` is called at the start and end of each stage in
    `STAGES` ("explain" only when explanations run) and per prediction chunk; the explainers
    may report more. `should_cancel()` is polled between stages and batches; once it answers
    true, `AuditCancelledError` is raised. `manifest.timings` holds seconds per stage,
    `total`, and `forward` (tokenization and forward passes inside the evaluator).

    With `config.twin`, the twin is audited against the reference by the same code on every
    pillar, in the same evaluator calls as the candidate, and each section gets its `twin`
    beside it; the gate judges relative to the twin (`GateSettings.relative_to_twin`). With
    `twin_cache`, the twin's figures are read from it when reference, twin, dataset and
    settings match (`twin_cache_key`) — the twin is then not even loaded — and stored there
    otherwise.

    The document keeps the explained instances only. Every row's outcome is written to the
    Parquet file `rows_path` when given (`trustdiff.rows`; the texts too with `rows_text`),
    and the document's `rows` section counts them (with the file's sha256 when written).

    With a `cache` (`trustdiff.cache.AuditCache`), checkpoint fingerprints of unchanged
    folders and the reference's predictions on this dataset are reused: another candidate
    audited against the same reference and dataset runs no reference forward pass on it
    (`manifest.timings["forward_without_reference"]` is then set).
    """
    stages = _Stages(progress, should_cancel)
    with stages.stage("validate"):
        validated = validate_audit(
            config,
            model_root=model_root,
            data_root=data_root,
            shared_model_root=shared_model_root,
        )
        specs = [
            (validated.reference_path, config.reference.transform),
            (validated.candidate_path, config.candidate.transform),
        ]
        if config.twin is not None and validated.twin_path is not None:
            specs.append((validated.twin_path, config.twin.transform))
        computed = _checkpoint_fingerprints(specs, cache)
        fingerprints = (computed[0], computed[1])
        twin_fingerprint = computed[2] if len(computed) == 3 else None
        twin_key = _twin_key(validated, fingerprints[0], twin_fingerprint)
        cached = None
        if twin_key is not None and twin_cache is not None:
            cached = twin_cache.load(twin_key)
    load_twin = twin_key is not None and cached is None
    with stages.stage("load", total=3 if load_twin else 2):
        runners = _load_runners(validated, stages.report, load_twin=load_twin)
    evaluator = _evaluator(validated, runners, should_cancel)
    probabilities = _predict_all(evaluator, validated, runners, fingerprints[0], stages, cache)
    twin_proba = (
        probabilities[2]
        if load_twin
        else (None if cached is None else np.asarray(cached.probabilities, dtype=np.float64))
    )
    predictions = _Predictions(
        np.asarray(validated.dataset.labels, dtype=np.intp),
        probabilities[0],
        probabilities[1],
        twin_proba,
    )
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
        twin_sections = (
            summarize_predictions(
                predictions.y_true,
                predictions.reference_proba,
                twin_proba,
                labels=validated.labels,
                settings=config.calibration,
                seed=config.seed,
            )
            if load_twin and twin_proba is not None
            else None
        )
    alignment, explanations = _explain(
        evaluator, validated, predictions, stages, explain_twin=load_twin
    )
    twin = None
    if twin_key is not None:
        if cached is None:
            if twin_sections is None or runners.twin is None or twin_proba is None:
                raise RuntimeError("the twin was loaded but not measured")
            cached = _twin_figures(
                validated,
                runners.twin,
                twin_fingerprint or "",
                twin_sections,
                twin_proba,
                alignment,
                explanations,
            )
            if twin_cache is not None:
                twin_cache.store(twin_key, cached)
        twin = _Twin(
            figures=cached,
            cache_manifest=TwinCacheManifest(
                key=twin_key,
                hit=not load_twin,
                location=None if twin_cache is None else str(twin_cache.folder),
            ),
        )
        parity, calibration, alignment, explanations = _with_twin(
            cached, parity, calibration, alignment, explanations
        )
    rows = _write_rows(
        _row_outcomes(validated, predictions), rows_path, rows_text=rows_text, stages=stages
    )
    with stages.stage("gate"):
        gate = evaluate_gate(
            parity,
            calibration,
            alignment,
            config.gate,
            slices=breakdown.slices,
            divergence=breakdown.divergence,
        )
    stages.timings["forward"] = evaluator.stats.forward_seconds + stages.timings.get(
        "forward_without_reference", 0.0
    )
    stages.timings["total"] = time.perf_counter() - stages.started
    return AuditResult(
        manifest=_manifest(validated, fingerprints, runners, stages.timings, twin),
        parity=parity,
        calibration=calibration,
        alignment=alignment,
        gate=gate,
        slices=breakdown.slices,
        divergence=breakdown.divergence,
        exemplars=breakdown.exemplars,
        rows=rows,
        instances=_explained_instances(
            validated.dataset, validated.labels, predictions, explanations
        ),
    )


# --- the twin -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Twin:
    figures: TwinFigures
    cache_manifest: TwinCacheManifest


def _twin_key(
    validated: ValidatedAudit, reference_fingerprint: str, twin_fingerprint: str | None
) -> str | None:
    """The twin's cache key (`twin_cache_key`); None when the audit has no twin."""
    if twin_fingerprint is None:
        return None
    return twin_cache_key(
        validated.config,
        reference_fingerprint=reference_fingerprint,
        twin_fingerprint=twin_fingerprint,
        dataset_fingerprint=validated.dataset.fingerprint,
        device=validated.config.device,
        version=_versions()["trustdiff"],
    )


def _twin_figures(
    validated: ValidatedAudit,
    runner: ModelRunner,
    fingerprint: str,
    sections: tuple[Parity, Calibration],
    twin_proba: NDArray[np.float64],
    alignment: dict[str, MethodAlignment],
    explanations: dict[int, Explanation],
) -> TwinFigures:
    """What the cache keeps of the twin, taken from this audit's measurements."""
    config = validated.config
    if config.twin is None or validated.twin is None:
        raise RuntimeError("no twin to describe")
    attributions: dict[str, dict[int, list[float]]] = {}
    for index, explanation in explanations.items():
        for method in alignment:
            document: Attributions | None = getattr(explanation, method, None)
            if document is not None and document.twin is not None:
                attributions.setdefault(method, {})[index] = document.twin
    return TwinFigures(
        manifest=_checkpoint_manifest(config.twin, validated.twin, fingerprint, runner),
        parity=sections[0],
        calibration=sections[1],
        alignment={
            method: aligned.twin
            for method, aligned in alignment.items()
            if aligned.twin is not None
        },
        probabilities=twin_proba.tolist(),
        attributions=attributions,
    )


def _with_twin(
    figures: TwinFigures,
    parity: Parity,
    calibration: Calibration,
    alignment: dict[str, MethodAlignment],
    explanations: dict[int, Explanation],
) -> tuple[Parity, Calibration, dict[str, MethodAlignment], dict[int, Explanation]]:
    """Each section with the twin's beside it, and each explanation with the twin's scores."""
    with_twin_alignment = {
        method: aligned.model_copy(update={"twin": figures.alignment.get(method)})
        for method, aligned in alignment.items()
    }
    with_twin_explanations = {}
    for index, explanation in explanations.items():
        update: dict[str, Attributions] = {}
        for method, by_row in figures.attributions.items():
            document: Attributions | None = getattr(explanation, method, None)
            if document is not None and index in by_row:
                update[method] = document.model_copy(update={"twin": by_row[index]})
        with_twin_explanations[index] = explanation.model_copy(update=update)
    return (
        parity.model_copy(update={"twin": figures.parity}),
        calibration.model_copy(update={"twin": figures.calibration}),
        with_twin_alignment,
        with_twin_explanations,
    )
