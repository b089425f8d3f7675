"""The shards of a planned audit and their state machine (`waiting → queued → running → done`).

A planned audit stays `running` from its plan to its result while its shards run stage by
stage: the prediction shards, then the explanation blocks, then the finaliser. Stages are
joined through the database, not a Celery chord: the shard that completes its stage last —
decided under the audit's row lock — queues the next stage as one Celery group, after its
commit. A chord would keep its counter in a result backend, and the project's Redis keeps
nothing across a restart (a lost counter would leave the audit waiting forever); the rows
here are the state the sweep already recovers from.

Every transition locks the audit row first, then the shard rows it changes, so two of them
never wait on each other in opposite orders.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service import transitions
from service.jobs import RUN_SHARD_TASK, enqueue_group_after_commit
from service.models import (
    Audit,
    AuditShard,
    AuditStatus,
    ShardKind,
    ShardStatus,
    Tenant,
    utc_now,
)
from service.problems import Conflict
from service.transitions import Progress, lock_audit

logger = logging.getLogger(__name__)

STAGE_ORDER = (ShardKind.PREDICT, ShardKind.EXPLAIN, ShardKind.FINALISE)
UNFINISHED = (ShardStatus.WAITING, ShardStatus.QUEUED, ShardStatus.RUNNING)


class ShardSuperseded(Conflict):
    """This run of a shard no longer owns it: the sweep gave it to another worker, or its
    audit cancelled it."""

    code = "shard_superseded"


@dataclass(frozen=True)
class ShardRef:
    """Which shard: the task's arguments."""

    audit_id: uuid.UUID
    kind: ShardKind
    index: int

    def call(self) -> tuple[str, str, int]:
        return (str(self.audit_id), self.kind.value, self.index)


@dataclass(frozen=True)
class ClaimedShard:
    """A shard this worker runs (attempt `attempt`), and what it reads: the audit's plan, the
    outputs of the stages before (prediction shards' and blocks' artifacts, by index)."""

    shard_id: uuid.UUID
    ref: ShardRef
    attempt: int
    total: int
    plan_url: str
    audit_started_at: datetime
    tenant_name: str
    predict_urls: list[str]
    explain_urls: list[str]

    @property
    def audit_id(self) -> uuid.UUID:
        return self.ref.audit_id

    @property
    def kind(self) -> ShardKind:
        return self.ref.kind


@dataclass(frozen=True)
class Completion:
    """After a shard is done: the shards it queued (its stage's last finished), and whether
    its audit had already ended (its output then serves nothing)."""

    queued: list[ShardRef]
    audit_ended: bool = False


def start_shards(
    session: Session,
    audit_id: uuid.UUID,
    *,
    plan_url: str,
    totals: dict[ShardKind, list[int]],
    send: bool,
) -> list[ShardRef]:
    """running (planned) → its shards: one row per prediction shard, explanation block and
    the finaliser, with `totals` (rows, instances) by kind; the prediction shards are queued
    (sent as one group after the commit when `send`), the rest wait for their stage.

    An audit whose cancel was asked while it was planned ends cancelled instead (no shards).
    """
    audit = transitions.locked_running(session, audit_id, "plan")
    if audit.cancel_requested_at is not None:
        transitions.end(session, audit, AuditStatus.CANCELLED, utc_now())
        return []
    audit.plan_url = plan_url
    now = utc_now()
    session.add_all(
        AuditShard(
            audit_id=audit_id,
            kind=kind,
            index=index,
            total=total,
            status=ShardStatus.WAITING,
            attempts=0,
            done=0,
        )
        for kind, kind_totals in totals.items()
        for index, total in enumerate(kind_totals)
    )
    audit.heartbeat_at = now
    session.flush()
    return _queue_stage(session, audit, ShardKind.PREDICT, send=send)


def claim_shard(session: Session, ref: ShardRef, *, worker: str) -> ClaimedShard | None:
    """queued → running for `worker` (one more attempt); None when there is nothing to run.

    A shard already running, done or cancelled (a message delivered twice, or revoked) is
    left as it is; one of an audit that ended or is being cancelled is cancelled.
    """
    audit = lock_audit(session, ref.audit_id)
    shard = None if audit is None else _locked_shard(session, ref)
    if audit is None or shard is None or shard.status != ShardStatus.QUEUED:
        logger.info("shard %s %s of audit %s not started", ref.kind, ref.index, ref.audit_id)
        return None
    if audit.status != AuditStatus.RUNNING or audit.cancel_requested_at is not None:
        _close(shard, ShardStatus.CANCELLED)
        if audit.status == AuditStatus.RUNNING:
            transitions.end_cancelled_if_idle(session, audit)
        return None
    now = utc_now()
    shard.status = ShardStatus.RUNNING
    shard.attempts += 1
    shard.worker = worker
    shard.started_at = shard.heartbeat_at = now
    shard.done = 0
    shard.error = None
    audit.heartbeat_at = now
    tenant = session.get_one(Tenant, audit.tenant_id)
    return ClaimedShard(
        shard_id=shard.id,
        ref=ref,
        attempt=shard.attempts,
        total=shard.total,
        plan_url=audit.plan_url or "",
        audit_started_at=audit.started_at or now,
        tenant_name=tenant.name,
        predict_urls=_artifact_urls(session, ref.audit_id, ShardKind.PREDICT),
        explain_urls=_artifact_urls(session, ref.audit_id, ShardKind.EXPLAIN),
    )


def record_shard_heartbeat(
    session: Session, claimed: ClaimedShard, progress: Progress | None
) -> bool:
    """Refresh a running shard's heartbeat (and its audit's); answers whether it must stop.

    A prediction shard's or block's progress counts its own rows or instances; the audit's
    progress is the sum over its stage. The finaliser's stages are the audit's progress as
    they are. It must stop when the audit ended or is being cancelled, or when this run no
    longer owns the shard. Plain guarded UPDATEs, no row lock held across the beat.
    """
    now = utc_now()
    audit_values: dict[str, object] = {"heartbeat_at": now}
    shard_values: dict[str, object] = {"heartbeat_at": now}
    if progress is not None and claimed.kind == ShardKind.FINALISE:
        audit_values |= _progress_values(progress.stage, progress.done, progress.total)
    elif progress is not None and progress.stage == claimed.kind.value:
        others = (
            select(func.coalesce(func.sum(AuditShard.done), 0))
            .where(
                AuditShard.audit_id == claimed.audit_id,
                AuditShard.kind == claimed.kind,
                AuditShard.id != claimed.shard_id,
            )
            .scalar_subquery()
        )
        audit_values |= {
            "progress_stage": claimed.kind.value,
            "progress_done": others + progress.done,
        }
        shard_values["done"] = min(progress.done, claimed.total)
    session.execute(
        update(Audit)
        .where(Audit.id == claimed.audit_id, Audit.status == AuditStatus.RUNNING)
        .values(**audit_values)
    )
    owned = session.execute(
        update(AuditShard)
        .where(
            AuditShard.id == claimed.shard_id,
            AuditShard.status == ShardStatus.RUNNING,
            AuditShard.attempts == claimed.attempt,
        )
        .values(**shard_values)
    )
    status, cancel_requested_at = session.execute(
        select(Audit.status, Audit.cancel_requested_at).where(Audit.id == claimed.audit_id)
    ).one()
    return (
        owned.rowcount == 0  # type: ignore[attr-defined]
        or status != AuditStatus.RUNNING
        or cancel_requested_at is not None
    )


def complete_shard(
    session: Session, claimed: ClaimedShard, artifact_url: str, *, send: bool
) -> Completion:
    """running → done with its output at `artifact_url`; the stage's last shard to finish
    queues the next stage (sent as one group after the commit when `send`).

    Raises `ShardSuperseded` when this run no longer owns the shard.
    """
    audit, shard = _owned(session, claimed)
    _close(shard, ShardStatus.DONE)
    shard.artifact_url = artifact_url
    shard.done = shard.total
    if audit.status != AuditStatus.RUNNING:
        return Completion([], audit_ended=True)
    if audit.cancel_requested_at is not None:
        return Completion([], audit_ended=transitions.end_cancelled_if_idle(session, audit))
    stage = session.scalars(
        select(AuditShard.status).where(
            AuditShard.audit_id == audit.id, AuditShard.kind == claimed.kind
        )
    ).all()
    if any(status != ShardStatus.DONE for status in stage):
        return Completion([])
    following = STAGE_ORDER[STAGE_ORDER.index(claimed.kind) + 1 :]
    for kind in following:
        queued = _queue_stage(session, audit, kind, send=send)
        if queued:
            return Completion(queued)
    raise RuntimeError(f"audit {audit.id} has no finaliser")


def complete_audit(
    session: Session,
    claimed: ClaimedShard,
    *,
    result: dict[str, object],
    rows_url: str | None,
) -> Audit:
    """The finaliser done: running → succeeded with the result (`transitions.mark_succeeded`)."""
    _, shard = _owned(session, claimed)
    _close(shard, ShardStatus.DONE)
    return transitions.mark_succeeded(session, claimed.audit_id, result=result, rows_url=rows_url)


def fail_shard(session: Session, claimed: ClaimedShard, *, code: str, message: str) -> None:
    """running → failed, and its audit with it (`code`, `message`); the audit's queued and
    waiting shards are cancelled, its running ones stop at their next heartbeat."""
    audit = lock_audit(session, claimed.audit_id)
    shard = session.get(AuditShard, claimed.shard_id, with_for_update=True, populate_existing=True)
    if shard is not None and _is_owned(shard, claimed):
        _close(shard, ShardStatus.FAILED)
        shard.error = message
    if audit is not None and audit.status == AuditStatus.RUNNING:
        transitions.mark_failed(session, audit.id, code=code, message=message)
        cancel_unfinished(session, audit.id)


def stop_shard(session: Session, claimed: ClaimedShard) -> None:
    """running → cancelled, after the run stopped because its audit ended or is being
    cancelled; the last shard of a cancelled audit to stop ends the audit cancelled."""
    audit = lock_audit(session, claimed.audit_id)
    shard = session.get(AuditShard, claimed.shard_id, with_for_update=True, populate_existing=True)
    if shard is not None and _is_owned(shard, claimed):
        _close(shard, ShardStatus.CANCELLED)
    if audit is not None and audit.status == AuditStatus.RUNNING and audit.cancel_requested_at:
        transitions.end_cancelled_if_idle(session, audit)


def cancel_unfinished(session: Session, audit_id: uuid.UUID) -> None:
    """Every shard of `audit_id` not yet finished is cancelled (its audit has ended)."""
    session.execute(
        update(AuditShard)
        .where(AuditShard.audit_id == audit_id, AuditShard.status.in_(UNFINISHED))
        .values(status=ShardStatus.CANCELLED, finished_at=utc_now())
    )


def artifact_urls(session: Session, audit_id: uuid.UUID) -> list[str]:
    """The audit's plan and every shard output it stored."""
    audit = session.get(Audit, audit_id)
    urls = [] if audit is None or audit.plan_url is None else [audit.plan_url]
    for kind in STAGE_ORDER:
        urls.extend(_artifact_urls(session, audit_id, kind))
    return urls


def recover_stale_shards(
    session: Session,
    *,
    heartbeat_timeout: timedelta,
    max_attempts: int,
    requeue_queued_after: timedelta,
) -> list[uuid.UUID]:
    """Deal with shards whose worker died and with shard messages the broker lost; returns
    the ids of the audits touched.

    A running shard whose heartbeat is older than `heartbeat_timeout` is queued and sent
    again while it has attempts left (`max_attempts`), so a killed worker costs one shard,
    not the audit; after that its audit fails with `worker_lost`. A queued shard not claimed
    for `requeue_queued_after` since it was sent (or never sent: its send failed) is sent
    again; a second copy of a message is a no-op (`claim_shard` checks the state). Shards
    left unfinished by an audit that ended are cancelled. Audits another transaction holds
    are skipped.
    """
    now = utc_now()
    touched: list[uuid.UUID] = []
    stale = session.execute(
        select(AuditShard.audit_id, AuditShard.id).where(
            AuditShard.status == ShardStatus.RUNNING,
            AuditShard.heartbeat_at < now - heartbeat_timeout,
        )
    ).all()
    for audit_id, shard_id in stale:
        if locked := _lock_in_status(session, audit_id, shard_id, ShardStatus.RUNNING):
            _recover_lost_shard(session, *locked, now=now, max_attempts=max_attempts)
            touched.append(audit_id)
    unsent = session.execute(
        select(AuditShard.audit_id, AuditShard.id).where(
            AuditShard.status == ShardStatus.QUEUED,
            AuditShard.queued_at.is_(None) | (AuditShard.queued_at < now - requeue_queued_after),
        )
    ).all()
    for audit_id, shard_id in unsent:
        if locked := _lock_in_status(session, audit_id, shard_id, ShardStatus.QUEUED):
            _send_again(session, *locked, now=now)
            touched.append(audit_id)
    return [*dict.fromkeys(touched), *_cancel_orphans(session)]


# --- helpers ---------------------------------------------------------------------------------


def _lock_in_status(
    session: Session, audit_id: uuid.UUID, shard_id: uuid.UUID, status: ShardStatus
) -> tuple[Audit, AuditShard] | None:
    """The audit and its shard, both locked, if no other transaction holds the audit and the
    shard is still in `status` (the sweep read it without a lock)."""
    audit = _lock_unless_held(session, audit_id)
    if audit is None:
        return None
    shard = session.get(AuditShard, shard_id, with_for_update=True, populate_existing=True)
    return (audit, shard) if shard is not None and shard.status == status else None


def _locked_shard(session: Session, ref: ShardRef) -> AuditShard | None:
    return session.scalars(
        select(AuditShard)
        .where(
            AuditShard.audit_id == ref.audit_id,
            AuditShard.kind == ref.kind,
            AuditShard.index == ref.index,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def _lock_unless_held(session: Session, audit_id: uuid.UUID) -> Audit | None:
    return session.scalars(
        select(Audit)
        .where(Audit.id == audit_id)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).one_or_none()


def _is_owned(shard: AuditShard, claimed: ClaimedShard) -> bool:
    return shard.status == ShardStatus.RUNNING and shard.attempts == claimed.attempt


def _owned(session: Session, claimed: ClaimedShard) -> tuple[Audit, AuditShard]:
    """The locked audit and shard, when this run still owns the shard."""
    audit = lock_audit(session, claimed.audit_id)
    shard = session.get(AuditShard, claimed.shard_id, with_for_update=True, populate_existing=True)
    if audit is None or shard is None or not _is_owned(shard, claimed):
        raise ShardSuperseded(
            f"shard {claimed.kind} {claimed.ref.index} of audit {claimed.audit_id} is no longer "
            f"run by attempt {claimed.attempt}"
        )
    return audit, shard


def _close(shard: AuditShard, status: ShardStatus) -> None:
    shard.status = status
    shard.finished_at = utc_now()
    shard.heartbeat_at = None


def _progress_values(stage: str, done: int, total: int) -> dict[str, object]:
    return {"progress_stage": stage[:64], "progress_done": done, "progress_total": total}


def _queue_stage(session: Session, audit: Audit, kind: ShardKind, *, send: bool) -> list[ShardRef]:
    """Queue the audit's waiting shards of `kind` (sent as a group when `send`); the audit's
    progress becomes that stage's, from 0."""
    shards = session.scalars(
        select(AuditShard)
        .where(
            AuditShard.audit_id == audit.id,
            AuditShard.kind == kind,
            AuditShard.status == ShardStatus.WAITING,
        )
        .order_by(AuditShard.index)
    ).all()
    now = utc_now()
    for shard in shards:
        shard.status = ShardStatus.QUEUED
        shard.queued_at = now
    refs = [ShardRef(audit.id, kind, shard.index) for shard in shards]
    if refs:
        total = sum(shard.total for shard in shards)
        audit.progress_stage, audit.progress_done, audit.progress_total = kind.value, 0, total
    if send:
        enqueue_group_after_commit(session, RUN_SHARD_TASK, [ref.call() for ref in refs])
    return refs


def _artifact_urls(session: Session, audit_id: uuid.UUID, kind: ShardKind) -> list[str]:
    urls = session.scalars(
        select(AuditShard.artifact_url)
        .where(AuditShard.audit_id == audit_id, AuditShard.kind == kind)
        .order_by(AuditShard.index)
    ).all()
    return [url for url in urls if url is not None]


def _recover_lost_shard(
    session: Session, audit: Audit, shard: AuditShard, *, now: datetime, max_attempts: int
) -> None:
    """A running shard whose worker went silent: sent again, or its audit fails (or ends
    cancelled, when that was asked)."""
    silent_for = (now - shard.heartbeat_at).total_seconds() if shard.heartbeat_at else None
    what = f"{shard.kind} shard {shard.index}"
    if audit.status != AuditStatus.RUNNING or audit.cancel_requested_at is not None:
        _close(shard, ShardStatus.CANCELLED)
        if audit.status == AuditStatus.RUNNING:
            transitions.end_cancelled_if_idle(session, audit)
    elif shard.attempts < max_attempts:
        logger.warning(
            "audit %s: %s on worker %s silent %ss, sent again",
            audit.id,
            what,
            shard.worker,
            silent_for,
        )
        shard.worker = None
        _send_again(session, audit, shard, now=now)
    else:
        logger.warning(
            "audit %s: %s on worker %s silent %ss", audit.id, what, shard.worker, silent_for
        )
        _close(shard, ShardStatus.FAILED)
        shard.error = "worker lost"
        message = (
            f"the workers running {what} of this audit stopped responding "
            f"{shard.attempts} time(s); they may have run out of memory or been restarted"
        )
        transitions.mark_failed(session, audit.id, code=transitions.WORKER_LOST, message=message)
        cancel_unfinished(session, audit.id)


def _send_again(session: Session, audit: Audit, shard: AuditShard, *, now: datetime) -> None:
    shard.status = ShardStatus.QUEUED
    shard.heartbeat_at = None
    shard.queued_at = now
    ref = ShardRef(audit.id, shard.kind, shard.index)
    enqueue_group_after_commit(session, RUN_SHARD_TASK, [ref.call()])


def _cancel_orphans(session: Session) -> list[uuid.UUID]:
    """Cancel unfinished shards of audits that have ended; their audit ids."""
    ended = (
        select(AuditShard.audit_id)
        .join(Audit, Audit.id == AuditShard.audit_id)
        .where(AuditShard.status.in_(UNFINISHED), Audit.status != AuditStatus.RUNNING)
        .distinct()
    )
    audit_ids = list(session.scalars(ended).all())
    for audit_id in audit_ids:
        cancel_unfinished(session, audit_id)
    return audit_ids
