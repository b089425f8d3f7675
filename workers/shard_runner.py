"""Run one shard of a planned audit: claim its row, run its engine step with a heartbeat
beside it, store its output as an artifact, and hand the audit on (its next stage, or its
result)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from celery.exceptions import SoftTimeLimitExceeded

from service import shards
from service.artifacts import ArtifactStore
from service.db import Database
from service.models import AuditStatus, ShardKind, utc_now
from service.settings import Settings
from service.shards import ClaimedShard, ShardRef, ShardSuperseded
from trustdiff.cache import AuditCache
from trustdiff.errors import AuditCancelledError, TrustdiffError
from workers.audit_artifacts import delete_shard_artifacts, rows_key, shard_key
from workers.heartbeat import ShardHeartbeat
from workers.identity import worker_name
from workers.outcomes import (
    INTERNAL_ERROR,
    TIME_LIMIT_EXCEEDED,
    Outcome,
    internal_error_message,
    result_document,
    store_outcome,
    time_limit_message,
)
from workers.tracking import log_to_mlflow

if TYPE_CHECKING:
    from trustdiff.dataset_cache import DatasetCache
    from trustdiff.plan import AuditPlan
    from trustdiff.runner_cache import RunnerCache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Finished:
    """The finaliser's output: the result document, the engine's result, the rows file."""

    document: dict[str, Any]
    result: Any
    rows_url: str


def run_shard_job(
    audit_id: str | uuid.UUID,
    kind: str,
    index: int,
    *,
    database: Database,
    settings: Settings,
    runners: RunnerCache,
    datasets: DatasetCache | None = None,
    send: bool = True,
) -> list[ShardRef]:
    """Run one queued shard to its end; returns the shards its completion queued.

    Models and the dataset come from `runners` and `datasets` (what this process loaded
    and validated for an earlier shard; with no `datasets`, the file is read again).

    The next stage's shards are sent to the workers as one group when `send`; otherwise the
    caller runs them (`run_in_place`). A shard not queued (done, running elsewhere, revoked)
    is not run. Engine errors fail the audit with their code and message, a cancel stops the
    shard at a batch boundary, anything else fails the audit with a generic message.
    """
    ref = ShardRef(uuid.UUID(str(audit_id)), ShardKind(kind), int(index))
    with database.transaction() as session:
        claimed = shards.claim_shard(session, ref, worker=worker_name())
    if claimed is None:
        return []
    logger.info("audit %s: running %s shard %s", ref.audit_id, ref.kind, ref.index)
    heartbeat = ShardHeartbeat(
        database,
        claimed,
        settings.heartbeat_interval_s,
        time_limit_s=settings.task_soft_time_limit_s
        - (utc_now() - claimed.audit_started_at).total_seconds(),
    )
    heartbeat.start()
    try:
        output = _run_step(
            claimed, heartbeat, settings=settings, runners=runners, datasets=datasets
        )
    except (AuditCancelledError, SoftTimeLimitExceeded) as error:
        timed_out = heartbeat.timed_out.is_set() or isinstance(error, SoftTimeLimitExceeded)
        outcome = _stopped(claimed, settings, timed_out=timed_out)
    except TrustdiffError as error:
        logger.info("audit %s: failed: %s: %s", ref.audit_id, error.code, error.message)
        message = settings.redact_paths(error.message, tenant_name=claimed.tenant_name)
        outcome = _failed(claimed, error.code, message)
    except Exception:
        logger.exception("audit %s: unexpected error in %s shard %s", ref.audit_id, kind, index)
        outcome = _failed(claimed, INTERNAL_ERROR, internal_error_message(ref.audit_id))
    else:
        if isinstance(output, _Finished):
            outcome = _succeeded(claimed, output)
        else:
            return _complete(claimed, output, database=database, settings=settings, send=send)
    finally:
        heartbeat.stop()
    status = store_outcome(
        database, ref.audit_id, outcome, settings, failure=partial(_failed, claimed)
    )
    if status == AuditStatus.SUCCEEDED and outcome.result and settings.mlflow_tracking_uri:
        log_to_mlflow(ref.audit_id, outcome.result, settings)
    delete_shard_artifacts(database, settings, ref.audit_id)
    return []


def run_in_place(
    queued: Sequence[ShardRef],
    *,
    database: Database,
    settings: Settings,
    runners: RunnerCache,
    datasets: DatasetCache | None = None,
) -> None:
    """Run `queued` and every shard their completions queue, here, one after another."""
    pending = list(queued)
    while pending:
        ref = pending.pop(0)
        pending.extend(
            run_shard_job(
                ref.audit_id,
                ref.kind,
                ref.index,
                database=database,
                settings=settings,
                runners=runners,
                datasets=datasets,
                send=False,
            )
        )


def _run_step(
    claimed: ClaimedShard,
    heartbeat: ShardHeartbeat,
    *,
    settings: Settings,
    runners: RunnerCache,
    datasets: DatasetCache | None,
) -> str | _Finished:
    """The shard's engine step; its stored output's URL, or the finaliser's result."""
    # The engine's steps, looked up on the module when they run (tests stand in for them).
    from trustdiff import audit as engine
    from trustdiff.shards import ExplainedBlock, Probabilities, ShardPredictions

    store = ArtifactStore.from_settings(settings)
    plan = engine.AuditPlan.model_validate_json(store.read_bytes(claimed.plan_url))
    steps: dict[str, Any] = {
        "datasets": datasets,
        "progress": heartbeat.report,
        "should_cancel": heartbeat.should_cancel,
    }
    ref = claimed.ref
    key = None if ref.kind == ShardKind.FINALISE else shard_key(ref.audit_id, ref.kind, ref.index)
    if ref.kind == ShardKind.PREDICT and key is not None:
        predicted = engine.predict_shard(
            plan, ref.index, runners=runners, cache=AuditCache(settings.cache_dir), **steps
        )
        return store.put_bytes(predicted.to_bytes(), key)
    predictions = [
        ShardPredictions.from_bytes(store.read_bytes(url)) for url in claimed.predict_urls
    ]
    if ref.kind == ShardKind.EXPLAIN and key is not None:
        probabilities = Probabilities.of_shards(plan, predictions)
        block = engine.explain_block(plan, probabilities, ref.index, runners=runners, **steps)
        return store.put_bytes(block.to_json().encode("utf-8"), key)
    blocks = [ExplainedBlock.from_json(store.read_bytes(url)) for url in claimed.explain_urls]
    return _finish(plan, claimed, predictions, blocks, store=store, settings=settings, **steps)


def _finish(
    plan: AuditPlan,
    claimed: ClaimedShard,
    predictions: Sequence[Any],
    blocks: Sequence[Any],
    *,
    store: ArtifactStore,
    settings: Settings,
    **steps: Any,
) -> _Finished:
    """The audit's result; its rows file goes to the artifact store (no text kept in it)."""
    from trustdiff import audit as engine
    from trustdiff.twin_cache import TwinCache

    staging = settings.home / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    rows_path = staging / f"{claimed.audit_id}-{uuid.uuid4().hex}.rows.parquet"
    try:
        result = engine.finish_audit(
            plan,
            predictions,
            blocks,
            # Shared by the workers: a second candidate against the same reference and
            # dataset reuses the reference's predictions, and the twin's figures.
            cache=AuditCache(settings.cache_dir),
            twin_cache=TwinCache(settings.twin_cache_dir),
            rows_path=rows_path,
            **steps,
        )
        document = result_document(result)
        rows_url = store.put(rows_path, rows_key(claimed.audit_id))
    finally:
        rows_path.unlink(missing_ok=True)
    return _Finished(document=document, result=result, rows_url=rows_url)


def _complete(
    claimed: ClaimedShard, url: str, *, database: Database, settings: Settings, send: bool
) -> list[ShardRef]:
    """Record the shard's output; the shards its completion queued."""
    try:
        with database.transaction() as session:
            completion = shards.complete_shard(session, claimed, url, send=send)
    except ShardSuperseded as error:
        logger.warning("audit %s: output dropped: %s", claimed.audit_id, error.detail)
        return []
    if completion.audit_ended:
        delete_shard_artifacts(database, settings, claimed.audit_id)
    return completion.queued


def _succeeded(claimed: ClaimedShard, finished: _Finished) -> Outcome:
    store = partial(
        shards.complete_audit,
        claimed=claimed,
        result=finished.document,
        rows_url=finished.rows_url,
    )
    return Outcome(AuditStatus.SUCCEEDED, store, finished.document, finished.result)


def _failed(claimed: ClaimedShard, code: str, message: str) -> Outcome:
    store = partial(shards.fail_shard, claimed=claimed, code=code, message=message)
    return Outcome(AuditStatus.FAILED, store)


def _stopped(claimed: ClaimedShard, settings: Settings, *, timed_out: bool) -> Outcome:
    """A run stopped at a batch boundary: past the audit's time limit (the audit fails), or
    because its audit ended or is being cancelled."""
    if timed_out:
        limit_s = settings.task_soft_time_limit_s
        logger.warning("audit %s: stopped at the %ss time limit", claimed.audit_id, limit_s)
        return _failed(claimed, TIME_LIMIT_EXCEEDED, time_limit_message(limit_s))
    logger.info("audit %s: %s shard %s stopped", claimed.audit_id, claimed.kind, claimed.ref.index)
    return Outcome(AuditStatus.CANCELLED, partial(shards.stop_shard, claimed=claimed))
