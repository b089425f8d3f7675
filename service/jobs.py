"""Background jobs: the Celery client the gateway sends with, and enqueue-after-commit."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from celery import Celery, group
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from service.settings import Settings

logger = logging.getLogger(__name__)

# Task names are the contract between the gateway (which only knows names) and the worker.
RUN_AUDIT_TASK = "trustdiff.run_audit"
RUN_SHARD_TASK = "trustdiff.run_shard"
DELIVER_CALLBACK_TASK = "trustdiff.deliver_callback"

_PENDING_KEY = "trustdiff_pending_jobs"


def build_celery_app(settings: Settings, *, include: list[str] | None = None) -> Celery:
    """The one Celery configuration, shared by the gateway's client and the worker."""
    app = Celery("trustdiff", broker=settings.broker_url, include=include or [])
    app.conf.update(
        task_default_queue=settings.queue,
        # Job state lives in the database; Celery results would be a second, stale copy.
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # An audit holds a model for minutes: ack only once done, never prefetch a second one,
        # and give a message back to the broker when its worker process dies under it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # Sending from a request must fail fast instead of hanging the request when the broker
        # is down (Celery's default retries publishing for a long while).
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
        broker_connection_timeout=settings.readiness_timeout_s,
    )
    if settings.broker_url.startswith(("redis://", "rediss://", "redis+socket://")):
        # A message fetched by a worker that died unacknowledged comes back after this long
        # (kombu's default is 1 hour). Longer than the hard time limit, so a live run is
        # never handed to a second worker; the stale-audit sweep recovers lost runs sooner.
        app.conf.broker_transport_options = {
            "visibility_timeout": settings.broker_visibility_timeout_s
        }
    elif settings.broker_url.startswith("sqla+sqlite"):
        # kombu's SQLAlchemy transport hands these to create_engine: wait for SQLite's write
        # lock (the gateway and the worker share the file) instead of failing after 5s.
        app.conf.broker_transport_options = {"connect_args": {"timeout": 30}}
    return app


@dataclass(frozen=True)
class PendingJob:
    """Tasks to send once the transaction commits: `task_name` once per argument list, as
    one Celery `group` when there are several (e.g. the shards of an audit's next stage)."""

    task_name: str
    calls: tuple[tuple[str | int, ...], ...]

    @property
    def audit_ids(self) -> list[uuid.UUID]:
        return [uuid.UUID(str(call[0])) for call in self.calls]


def enqueue_after_commit(session: Session, task_name: str, audit_id: uuid.UUID) -> None:
    """Send `task_name(audit_id)` once `session` has committed; dropped if it rolls back.

    Sending before the commit would let a fast worker read a row that does not exist yet (or
    never will); the task carries the id only and re-reads the row.
    """
    enqueue_group_after_commit(session, task_name, [(str(audit_id),)])


def enqueue_group_after_commit(
    session: Session, task_name: str, calls: Sequence[tuple[str | int, ...]]
) -> None:
    """Send `task_name(*call)` for every call, as one group, once `session` has committed.

    Each call's first argument is an audit id; the others identify what to do for it (a
    shard's kind and index), never data: the task re-reads its rows.
    """
    if calls:
        session.info.setdefault(_PENDING_KEY, []).append(PendingJob(task_name, tuple(calls)))


def has_pending_jobs(session: Session) -> bool:
    return bool(session.info.get(_PENDING_KEY))


def discard_pending_jobs(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def send_pending_jobs(session: Session, celery_app: Celery) -> list[PendingJob]:
    """Publish the jobs recorded on `session` (after its commit); returns those that failed.

    A broker outage must not turn a committed request into an error: the caller records the
    failures so that the sweep can send them again.
    """
    failed = []
    job: PendingJob
    for job in session.info.pop(_PENDING_KEY, []):
        audit_ids = ", ".join(sorted({str(audit_id) for audit_id in job.audit_ids}))
        try:
            _send(celery_app, job)
        except Exception:
            logger.exception(
                "could not enqueue %s(%s)", job.task_name, audit_ids, extra={"audit_id": audit_ids}
            )
            failed.append(job)
        else:
            logger.info(
                "enqueued %s(%s) x%d",
                job.task_name,
                audit_ids,
                len(job.calls),
                extra={"audit_id": audit_ids},
            )
    return failed


def _send(celery_app: Celery, job: PendingJob) -> None:
    if len(job.calls) == 1:
        celery_app.send_task(job.task_name, args=list(job.calls[0]))
        return
    group(celery_app.signature(job.task_name, args=list(call)) for call in job.calls).apply_async()
