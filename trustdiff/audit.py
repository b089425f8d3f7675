"""Run one audit end to end: plan it, run its prediction shards and explanation blocks one
after another, and finish it into the result document."""

from __future__ import annotations

import os

from trustdiff.block_processes import explain_blocks_in_processes
from trustdiff.cache import AuditCache
from trustdiff.config import AuditConfig
from trustdiff.dataset_cache import DatasetCache
from trustdiff.finish import finish_audit
from trustdiff.plan import (
    DEFAULT_BLOCK_INSTANCES,
    DEFAULT_SHARD_ROWS,
    AuditPlan,
    plan_audit,
)
from trustdiff.result import AuditResult
from trustdiff.runner_cache import RunnerCache
from trustdiff.shards import (
    ExplainedBlock,
    Probabilities,
    ShardPredictions,
    explain_block,
    predict_shard,
)
from trustdiff.stages import STAGES, CancelCheck, ProgressCallback, offset_progress
from trustdiff.twin_cache import TwinCache
from trustdiff.validation import SHARED_MODELS_PREFIX, ValidatedAudit, validate_audit

__all__ = [
    "DEFAULT_BLOCK_INSTANCES",
    "DEFAULT_SHARD_ROWS",
    "SHARED_MODELS_PREFIX",
    "STAGES",
    "AuditPlan",
    "ExplainedBlock",
    "ProgressCallback",
    "ShardPredictions",
    "ValidatedAudit",
    "explain_block",
    "finish_audit",
    "plan_audit",
    "predict_shard",
    "run_audit",
    "run_plan",
    "validate_audit",
]


def run_audit(
    config: AuditConfig,
    *,
    model_root: str | os.PathLike[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    shared_model_root: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    twin_cache: TwinCache | None = None,
    cache: AuditCache | None = None,
    rows_path: str | os.PathLike[str] | None = None,
    rows_text: bool = False,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    block_instances: int = DEFAULT_BLOCK_INSTANCES,
    explain_processes: int = 1,
) -> AuditResult:
    """Audit `config.candidate` against `config.reference` on `config.dataset`.

    Cheap checks run first (`validate_audit`, inside `plan_audit`), so a bad path,
    checkpoint, label space or dataset row fails before any model loads. Then every
    prediction shard (`shard_rows` rows) runs through a `BatchingEvaluator` of its own, each
    explanation block (`block_instances` instances) likewise, and `finish_audit` measures
    parity and calibration with paired bootstrap intervals, aligns the explanations and lets
    the gate judge it all. The service runs the same plan's steps spread over its workers;
    the result is the same to the bit. Relative paths in `config` resolve under `model_root`
    and `data_root` when given (and may not leave them), else against the working directory;
    `shared/...` checkpoints under `shared_model_root` when given.

    `progress(stage, done, total)` is called at the start and end of each stage in
    `STAGES` ("explain" only when explanations run) and per prediction chunk; the explainers
    may report more. `should_cancel()` is polled between stages and batches; once it answers
    true, `AuditCancelledError` is raised. `manifest.timings` holds seconds per stage,
    `total`, and `forward` (tokenization and forward passes inside the evaluators).

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

    The dataset file is read and validated once, by the plan; its steps reuse it.
    `explain_processes` > 1 explains the blocks in that many processes at once
    (`run_plan`), for the same result (see `trustdiff.block_processes` on float rounding).
    """
    datasets = DatasetCache()
    plan = plan_audit(
        config,
        model_root=model_root,
        data_root=data_root,
        shared_model_root=shared_model_root,
        cache=cache,
        twin_cache=twin_cache,
        shard_rows=shard_rows,
        block_instances=block_instances,
        datasets=datasets,
        progress=progress,
        should_cancel=should_cancel,
    )
    return run_plan(
        plan,
        datasets=datasets,
        progress=progress,
        should_cancel=should_cancel,
        twin_cache=twin_cache,
        cache=cache,
        rows_path=rows_path,
        rows_text=rows_text,
        explain_processes=explain_processes,
    )


def run_plan(
    plan: AuditPlan,
    *,
    runners: RunnerCache | None = None,
    datasets: DatasetCache | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    twin_cache: TwinCache | None = None,
    cache: AuditCache | None = None,
    rows_path: str | os.PathLike[str] | None = None,
    rows_text: bool = False,
    explain_processes: int = 1,
) -> AuditResult:
    """Every step of `plan` in this process, one after another: each prediction shard, each
    explanation block, then `finish_audit`. Progress counts rows and instances over all of
    them. Models load into `runners`, the dataset into `datasets` (new caches, dropped at the
    end, when None): each is read once for all the steps.

    With `explain_processes` > 1 and more than one block, the blocks are explained by that
    many spawned processes at once instead (`explain_blocks_in_processes`), each loading the
    models itself: the same blocks (to the bit at equal thread counts, see
    `trustdiff.block_processes`), sooner where the explainers' Python, not the device, is the
    limit (a GPU host with cores to spare)."""
    runners = runners or RunnerCache()
    datasets = datasets or DatasetCache()
    shards = [
        predict_shard(
            plan,
            index,
            runners=runners,
            datasets=datasets,
            cache=cache,
            progress=offset_progress(progress, "predict", offset=rows.start, total=plan.rows),
            should_cancel=should_cancel,
        )
        for index, rows in enumerate(plan.shards)
    ]
    probabilities = Probabilities.of_shards(plan, shards)
    if explain_processes > 1 and len(plan.blocks) > 1:
        blocks = explain_blocks_in_processes(
            plan,
            probabilities,
            processes=explain_processes,
            progress=progress,
            should_cancel=should_cancel,
        )
    else:
        blocks = _explain_blocks_here(
            plan, probabilities, runners, datasets, progress, should_cancel
        )
    return finish_audit(
        plan,
        shards,
        blocks,
        cache=cache,
        twin_cache=twin_cache,
        datasets=datasets,
        rows_path=rows_path,
        rows_text=rows_text,
        progress=progress,
        should_cancel=should_cancel,
    )


def _explain_blocks_here(
    plan: AuditPlan,
    probabilities: Probabilities,
    runners: RunnerCache,
    datasets: DatasetCache,
    progress: ProgressCallback | None,
    should_cancel: CancelCheck | None,
) -> list[ExplainedBlock]:
    explained = len(plan.explained)
    blocks = []
    offset = 0
    for index, block in enumerate(plan.blocks):
        blocks.append(
            explain_block(
                plan,
                probabilities,
                index,
                runners=runners,
                datasets=datasets,
                progress=offset_progress(progress, "explain", offset=offset, total=explained),
                should_cancel=should_cancel,
            )
        )
        offset += len(block)
    return blocks
