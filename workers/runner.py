"""Run one audit job: claim the row, plan the audit outside any transaction, start its shards
(here, one after another, when it is one shard and at most one block), and the sweep."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError

from service import shards, transitions
from service.artifacts import ArtifactStore
from service.db import Database
from service.models import Audit, AuditStatus, ShardKind, Tenant
from service.problems import Conflict, NotFound
from service.settings import Settings
from trustdiff.cache import AuditCache
from trustdiff.config import AuditConfig
from trustdiff.errors import AuditCancelledError, TrustdiffError
from workers.audit_artifacts import delete_shard_artifacts, ended_with_shard_artifacts, plan_key
from workers.heartbeat import Heartbeat
from workers.identity import worker_name
from workers.outcomes import (
    INTERNAL_ERROR,
    TIME_LIMIT_EXCEEDED,
    Outcome,
    failed,
    internal_error_message,
    store_outcome,
    time_limit_message,
)
from workers.shard_runner import run_in_place

if TYPE_CHECKING:
    from trustdiff.dataset_cache import DatasetCache
    from trustdiff.plan import AuditPlan
    from trustdiff.runner_cache import RunnerCache

logger = logging.getLogger(__name__)

__all__ = ["run_audit_job", "sweep_stale_audits", "worker_name"]


@dataclass(frozen=True)
class Claimed:
    """What a claimed run needs from its row: the stored config and whose folders it reads."""

    config: dict[str, Any]
    dataset_root: str
    tenant_name: str


def _claim(database: Database, audit_id: uuid.UUID) -> Claimed | None:
    with database.transaction() as session:
        try:
            audit = transitions.start_running(session, audit_id, worker=worker_name())
        except (NotFound, transitions.InvalidTransition) as error:
            # Redelivered or duplicate messages land here: the row says what is true.
            logger.info("audit %s not started: %s", audit_id, error.detail)
            return None
        tenant = session.get_one(Tenant, audit.tenant_id)
        return Claimed(audit.config, audit.dataset_root, tenant.name)


def run_audit_job(
    audit_id: str | uuid.UUID,
    *,
    database: Database,
    settings: Settings,
    runners: RunnerCache | None = None,
    datasets: DatasetCache | None = None,
) -> AuditStatus | None:
    """Plan a queued audit and start its shards; returns its status then, or None if it was
    not queued.

    The plan (`trustdiff.plan.plan_audit`) is made with no transaction open and stored as an
    artifact; the prediction shards are then sent to the workers as one Celery group (see
    `service.shards` for how stages join). An audit of one prediction shard and at most one
    explanation block runs its shards right here instead, one after another, and this
    returns its final status: what a fan-out would do on one worker, without the queue hops
    and without other audits' shards in between (so a small audit runs as fast as a single
    task did, and a second audit against the same twin finds the first's figures cached).
    Models load into `runners`, the dataset the plan validated stays in `datasets` for this
    process's shards (a worker keeps one of each for its lifetime; new ones when None).
    """
    from trustdiff.dataset_cache import DatasetCache
    from trustdiff.runner_cache import RunnerCache

    audit_id = uuid.UUID(str(audit_id))
    claimed = _claim(database, audit_id)
    if claimed is None:
        return None
    datasets = datasets or DatasetCache()
    planned = _plan(claimed, audit_id, database=database, settings=settings, datasets=datasets)
    if isinstance(planned, Outcome):
        status = store_outcome(database, audit_id, planned, settings)
        logger.info("audit %s: %s", audit_id, status)
        return status
    return _start(
        planned,
        audit_id,
        database=database,
        settings=settings,
        runners=runners or RunnerCache(),
        datasets=datasets,
    )


def _plan(
    claimed: Claimed,
    audit_id: uuid.UUID,
    *,
    database: Database,
    settings: Settings,
    datasets: DatasetCache,
) -> AuditPlan | Outcome:
    """The audit's plan, made with a heartbeat beside it; every way it can end otherwise
    becomes an Outcome. Paths resolve under the tenant's own folders, as they did when the
    audit was accepted."""
    try:
        config = AuditConfig.model_validate(claimed.config)
    except ValidationError as error:
        # Stored by an older release whose config this engine no longer accepts.
        message = f"the stored audit configuration is no longer valid: {error}"
        return failed(audit_id, "config_invalid", message)
    # Looked up on the module when it runs (tests stand in for it).
    from trustdiff import audit as engine
    from trustdiff.twin_cache import TwinCache

    logger.info("audit %s: planning", audit_id)
    heartbeat = Heartbeat(
        database,
        audit_id,
        settings.heartbeat_interval_s,
        time_limit_s=settings.task_soft_time_limit_s,
    )
    heartbeat.start()
    try:
        return engine.plan_audit(
            config,
            model_root=settings.tenant_model_root(claimed.tenant_name),
            data_root=settings.dataset_folder(claimed.dataset_root, claimed.tenant_name),
            shared_model_root=settings.shared_model_root,
            cache=AuditCache(settings.cache_dir),
            twin_cache=TwinCache(settings.twin_cache_dir),
            shard_rows=settings.shard_rows,
            block_instances=settings.block_instances,
            datasets=datasets,
            progress=heartbeat.report,
            should_cancel=heartbeat.should_cancel,
        )
    except (AuditCancelledError, SoftTimeLimitExceeded) as error:
        if heartbeat.timed_out.is_set() or isinstance(error, SoftTimeLimitExceeded):
            limit_s = settings.task_soft_time_limit_s
            return failed(audit_id, TIME_LIMIT_EXCEEDED, time_limit_message(limit_s))
        logger.info("audit %s: cancelled", audit_id)
        cancelled = partial(transitions.mark_cancelled, audit_id=audit_id)
        return Outcome(AuditStatus.CANCELLED, cancelled)
    except TrustdiffError as error:
        logger.info("audit %s: failed: %s: %s", audit_id, error.code, error.message)
        message = settings.redact_paths(error.message, tenant_name=claimed.tenant_name)
        return failed(audit_id, error.code, message)
    except Exception:
        logger.exception("audit %s: unexpected error", audit_id)
        return failed(audit_id, INTERNAL_ERROR, internal_error_message(audit_id))
    finally:
        heartbeat.stop()


def _start(
    plan: AuditPlan,
    audit_id: uuid.UUID,
    *,
    database: Database,
    settings: Settings,
    runners: RunnerCache,
    datasets: DatasetCache,
) -> AuditStatus | None:
    """Store the plan and create the audit's shards; run them here when it is a small one."""
    plan_url = ArtifactStore.from_settings(settings).put_bytes(
        plan.model_dump_json().encode("utf-8"), plan_key(audit_id)
    )
    in_place = len(plan.shards) == 1 and len(plan.blocks) <= 1
    totals = {
        ShardKind.PREDICT: [len(rows) for rows in plan.shards],
        ShardKind.EXPLAIN: [len(block) for block in plan.blocks],
        ShardKind.FINALISE: [0],
    }
    try:
        with database.transaction() as session:
            queued = shards.start_shards(
                session, audit_id, plan_url=plan_url, totals=totals, send=not in_place
            )
    except (Conflict, NotFound) as error:
        # The sweep gave the audit to another worker meanwhile, or it was deleted.
        logger.warning("audit %s: plan dropped: %s", audit_id, error.detail)
        return None
    logger.info(
        "audit %s: %d prediction shard(s), %d explanation block(s)%s",
        audit_id,
        len(plan.shards),
        len(plan.blocks),
        ", run here" if in_place else "",
    )
    if in_place and queued:
        run_in_place(
            queued, database=database, settings=settings, runners=runners, datasets=datasets
        )
    delete_shard_artifacts(database, settings, audit_id)
    with database.read_transaction() as session:
        audit = session.get(Audit, audit_id)
        return None if audit is None else audit.status


def sweep_stale_audits(*, database: Database, settings: Settings) -> list[uuid.UUID]:
    """Re-queue or fail audits whose worker died, re-send shards whose worker died, re-send
    jobs the broker refused or lost; the plan and shard outputs of ended audits go."""
    heartbeat_timeout = timedelta(seconds=settings.heartbeat_timeout_s)
    requeue_queued_after = timedelta(seconds=settings.requeue_queued_after_s)
    with database.transaction() as session:
        touched = transitions.recover_stale_audits(
            session,
            heartbeat_timeout=heartbeat_timeout,
            max_attempts=settings.max_attempts,
            requeue_queued_after=requeue_queued_after,
        )
        touched_by_shards = shards.recover_stale_shards(
            session,
            heartbeat_timeout=heartbeat_timeout,
            max_attempts=settings.max_attempts,
            requeue_queued_after=requeue_queued_after,
        )
    for audit_id in dict.fromkeys([*touched_by_shards, *ended_with_shard_artifacts(database)]):
        delete_shard_artifacts(database, settings, audit_id)
    touched = list(dict.fromkeys([*touched, *touched_by_shards]))
    if touched:
        logger.warning("sweep recovered audits %s", [str(audit_id) for audit_id in touched])
    return touched
