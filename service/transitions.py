"""The audit job state machine: each transition locks the row and checks the previous state."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.jobs import DELIVER_CALLBACK_TASK, RUN_AUDIT_TASK, enqueue_after_commit
from service.models import Audit, AuditShard, AuditStatus, ShardStatus, utc_now
from service.problems import Conflict, NotFound

logger = logging.getLogger(__name__)

WORKER_LOST = "worker_lost"


class InvalidTransition(Conflict):
    """The audit is not in a state this transition starts from (a 409 at the HTTP edge)."""

    code = "invalid_transition"

    def __init__(self, audit: Audit, action: str) -> None:
        super().__init__(
            f"cannot {action} audit {audit.id}: it is {audit.status}",
            extra={"audit_status": audit.status},
        )


@dataclass(frozen=True)
class Progress:
    stage: str
    done: int
    total: int


def lock_audit(session: Session, audit_id: uuid.UUID) -> Audit | None:
    """The audit row, locked for the rest of the transaction (SELECT ... FOR UPDATE).

    On SQLite, where FOR UPDATE does not exist, the engine's BEGIN IMMEDIATE gives the same
    exclusivity (see `service.db`). `populate_existing` refreshes an object already loaded in
    this session, so the state checked is the one just locked.
    """
    statement = (
        select(Audit)
        .where(Audit.id == audit_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.execute(statement).scalar_one_or_none()


def locked_running(session: Session, audit_id: uuid.UUID, action: str) -> Audit:
    """The audit, locked, when it is running; `InvalidTransition` (or `NotFound`) otherwise."""
    return _locked(session, audit_id, {AuditStatus.RUNNING}, action)


def _locked(
    session: Session, audit_id: uuid.UUID, allowed: Collection[AuditStatus], action: str
) -> Audit:
    audit = lock_audit(session, audit_id)
    if audit is None:
        raise NotFound(f"audit {audit_id} does not exist")
    if audit.status not in allowed:
        raise InvalidTransition(audit, action)
    return audit


def end(session: Session, audit: Audit, status: AuditStatus, now: datetime) -> None:
    """Put the locked `audit` in the final `status` at `now`; its callback is queued."""
    audit.status = status
    audit.finished_at = now
    audit.heartbeat_at = None
    if audit.callback_url:
        enqueue_after_commit(session, DELIVER_CALLBACK_TASK, audit.id)


def start_running(session: Session, audit_id: uuid.UUID, *, worker: str) -> Audit:
    """queued → running, claiming the audit for `worker` (one more attempt)."""
    audit = _locked(session, audit_id, {AuditStatus.QUEUED}, "start")
    now = utc_now()
    audit.status = AuditStatus.RUNNING
    audit.started_at = now
    audit.heartbeat_at = now
    audit.attempts += 1
    audit.worker = worker
    audit.enqueue_failed_at = None
    audit.progress_stage, audit.progress_done, audit.progress_total = "starting", 0, 0
    return audit


def mark_succeeded(
    session: Session,
    audit_id: uuid.UUID,
    *,
    result: dict[str, Any],
    rows_url: str | None = None,
) -> Audit:
    """running → succeeded, storing the result document, its gate and its rows file's URL."""
    audit = _locked(session, audit_id, {AuditStatus.RUNNING}, "complete")
    gate = result["gate"]
    audit.result = result
    audit.rows_url = rows_url
    audit.gate = gate
    audit.passed = bool(gate["passed"])
    audit.error_code = audit.error_message = None
    # The last heartbeat's stage (e.g. `explain 0/8`) would read as unfinished work.
    total = audit.progress_total or 0
    audit.progress_stage, audit.progress_done, audit.progress_total = "done", total, total
    end(session, audit, AuditStatus.SUCCEEDED, utc_now())
    return audit


def mark_failed(session: Session, audit_id: uuid.UUID, *, code: str, message: str) -> Audit:
    """running → failed, with a stable error code and a readable message."""
    audit = _locked(session, audit_id, {AuditStatus.RUNNING}, "fail")
    audit.error_code = code
    audit.error_message = message
    end(session, audit, AuditStatus.FAILED, utc_now())
    return audit


def mark_cancelled(session: Session, audit_id: uuid.UUID) -> Audit:
    """running → cancelled, once the runner stopped at a batch boundary."""
    audit = _locked(session, audit_id, {AuditStatus.RUNNING}, "cancel")
    end(session, audit, AuditStatus.CANCELLED, utc_now())
    return audit


def request_cancel(session: Session, audit_id: uuid.UUID) -> Audit:
    """queued → cancelled at once; running → cancel requested (the runner stops soon).

    Cancelling a cancelled audit again is a no-op; a finished one cannot be cancelled.
    """
    allowed = {AuditStatus.QUEUED, AuditStatus.RUNNING, AuditStatus.CANCELLED}
    audit = _locked(session, audit_id, allowed, "cancel")
    if audit.status == AuditStatus.QUEUED:
        audit.cancel_requested_at = utc_now()
        end(session, audit, AuditStatus.CANCELLED, audit.cancel_requested_at)
    elif audit.status == AuditStatus.RUNNING:
        if audit.cancel_requested_at is None:
            audit.cancel_requested_at = utc_now()
        end_cancelled_if_idle(session, audit)
    return audit


def end_cancelled_if_idle(session: Session, audit: Audit) -> bool:
    """For a locked running audit whose cancel was asked: revoke its queued and waiting shards
    (a worker that takes one of their messages drops it unrun) and, once none of its shards
    runs, end it cancelled. Returns whether it ended.

    An audit still being planned has no shards: its planner stops at its next check instead.
    """
    session.execute(
        update(AuditShard)
        .where(
            AuditShard.audit_id == audit.id,
            AuditShard.status.in_([ShardStatus.QUEUED, ShardStatus.WAITING]),
        )
        .values(status=ShardStatus.CANCELLED, finished_at=utc_now())
    )
    statuses = set(
        session.scalars(select(AuditShard.status).where(AuditShard.audit_id == audit.id)).all()
    )
    if not statuses or ShardStatus.RUNNING in statuses:
        return False
    end(session, audit, AuditStatus.CANCELLED, utc_now())
    return True


def record_heartbeat(session: Session, audit_id: uuid.UUID, progress: Progress | None) -> bool:
    """Refresh a running audit's heartbeat (and progress); answers whether cancel was asked.

    One UPDATE guarded by `status = 'running'` needs no row lock: it can only ever touch an
    audit that is still running, and it changes no state.
    """
    values: dict[str, Any] = {"heartbeat_at": utc_now()}
    if progress is not None:
        values |= {
            "progress_stage": progress.stage[:64],
            "progress_done": progress.done,
            "progress_total": progress.total,
        }
    session.execute(
        update(Audit)
        .where(Audit.id == audit_id, Audit.status == AuditStatus.RUNNING)
        .values(**values)
    )
    cancel_requested_at = session.execute(
        select(Audit.cancel_requested_at).where(Audit.id == audit_id)
    ).scalar_one_or_none()
    return cancel_requested_at is not None


def recover_stale_audits(
    session: Session,
    *,
    heartbeat_timeout: timedelta,
    max_attempts: int,
    requeue_queued_after: timedelta,
) -> list[uuid.UUID]:
    """Deal with audits whose worker died, and with jobs the broker refused or lost; returns
    their ids.

    A running audit still being planned (no shards yet) whose heartbeat is older than
    `heartbeat_timeout` lost its worker: it is re-queued while it has attempts left,
    cancelled if a cancel was requested, else failed with `worker_lost` (a planned audit's
    shards are recovered one by one: `service.shards.recover_stale_shards`). A queued audit
    is sent again when its enqueue failed, or when no worker claimed it for
    `requeue_queued_after` (since it was queued or last sent): the broker may have lost the
    message (a Redis restart without persistence, a flush, a gateway killed between commit
    and send). A message sent twice is harmless: the second finds the audit no longer queued
    and does nothing (`start_running` checks the state).
    Rows another transaction holds are skipped (SKIP LOCKED), so concurrent sweeps never
    block each other.
    """
    now = utc_now()
    planned = select(AuditShard.id).where(AuditShard.audit_id == Audit.id).exists()
    stale = session.scalars(
        select(Audit)
        .where(
            Audit.status == AuditStatus.RUNNING,
            Audit.heartbeat_at < now - heartbeat_timeout,
            # A planned audit's steps are its shards, recovered one by one (`service.shards`).
            ~planned,
        )
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).all()
    for audit in stale:
        _recover_lost_run(
            session, audit, now=now, heartbeat_timeout=heartbeat_timeout, max_attempts=max_attempts
        )
    unsent = session.scalars(
        select(Audit)
        .where(
            Audit.status == AuditStatus.QUEUED,
            Audit.enqueue_failed_at.is_not(None) | (Audit.updated_at < now - requeue_queued_after),
        )
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).all()
    for audit in unsent:
        if audit.enqueue_failed_at is None:
            logger.warning(
                "audit %s: queued since %s, unclaimed; sent again", audit.id, audit.updated_at
            )
        audit.enqueue_failed_at = None
        # `updated_at` is when it was queued or last sent: the next re-send waits again.
        audit.updated_at = now
        enqueue_after_commit(session, RUN_AUDIT_TASK, audit.id)
    return [audit.id for audit in [*stale, *unsent]]


def _recover_lost_run(
    session: Session,
    audit: Audit,
    *,
    now: datetime,
    heartbeat_timeout: timedelta,
    max_attempts: int,
) -> None:
    """running (worker lost) → cancelled if asked, else queued again, else failed."""
    silent_for = (now - audit.heartbeat_at).total_seconds() if audit.heartbeat_at else None
    if audit.cancel_requested_at is not None:
        end(session, audit, AuditStatus.CANCELLED, now)
    elif audit.attempts < max_attempts:
        logger.warning(
            "audit %s: worker %s silent %ss, re-queued", audit.id, audit.worker, silent_for
        )
        audit.status = AuditStatus.QUEUED
        audit.worker = None
        audit.heartbeat_at = None
        audit.progress_stage, audit.progress_done, audit.progress_total = "queued", 0, 0
        enqueue_after_commit(session, RUN_AUDIT_TASK, audit.id)
    else:
        logger.warning("audit %s: worker %s silent %ss, failed", audit.id, audit.worker, silent_for)
        audit.error_code = WORKER_LOST
        audit.error_message = (
            f"the worker running this audit stopped responding (no heartbeat for "
            f"{heartbeat_timeout.total_seconds():.0f}s) after {audit.attempts} attempt(s); "
            f"it may have run out of memory or been restarted"
        )
        end(session, audit, AuditStatus.FAILED, now)
