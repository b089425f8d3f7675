"""Celery tasks: thin adapters (names, retries, acks) around plain functions tests call."""

from __future__ import annotations

from typing import Any

from celery import Task
from kombu.exceptions import OperationalError as BrokerOperationalError
from sqlalchemy.exc import InterfaceError, OperationalError

from service.jobs import DELIVER_CALLBACK_TASK, RUN_AUDIT_TASK, RUN_SHARD_TASK
from workers.callbacks import CallbackDeliveryError, deliver_callback, record_callback_failure
from workers.celery_app import app, runtime
from workers.runner import run_audit_job
from workers.shard_runner import run_shard_job

# A database or broker that blips: retrying later is right. Anything else is the audit's own
# failure, which the runner has already recorded on the row.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, BrokerOperationalError)


# The planning task and the shard tasks alike: redelivered when a worker dies mid-run, retried
# when the database or broker blips. The time limits are enforced by the prefork pool
# (SoftTimeLimitExceeded inside the run fails the audit `time_limit_exceeded`, then the process
# is killed); the runners also check the soft limit at every batch boundary, under every pool.
AUDIT_TASK_OPTIONS: dict[str, Any] = {
    "acks_late": True,
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "max_retries": 5,
    "soft_time_limit": runtime.settings.task_soft_time_limit_s,
    "time_limit": runtime.settings.task_time_limit_s,
}


@app.task(name=RUN_AUDIT_TASK, **AUDIT_TASK_OPTIONS)
def run_audit(audit_id: str) -> None:
    """Plan the audit and send its prediction shards (or run a small audit here)."""
    run_audit_job(
        audit_id,
        database=runtime.database,
        settings=runtime.settings,
        runners=runtime.runners,
        datasets=runtime.datasets,
    )


@app.task(name=RUN_SHARD_TASK, **AUDIT_TASK_OPTIONS)
def run_shard(audit_id: str, kind: str, index: int) -> None:
    """One prediction shard, explanation block or finaliser of a planned audit."""
    run_shard_job(
        audit_id,
        kind,
        index,
        database=runtime.database,
        settings=runtime.settings,
        runners=runtime.runners,
        datasets=runtime.datasets,
    )


@app.task(
    name=DELIVER_CALLBACK_TASK,
    bind=True,
    acks_late=True,
    max_retries=runtime.settings.callback_max_attempts - 1,
)
def send_audit_callback(self: Task, audit_id: str) -> None:
    settings = runtime.settings
    try:
        deliver_callback(audit_id, database=runtime.database, settings=settings)
    except CallbackDeliveryError as error:
        if self.request.retries >= settings.callback_max_attempts - 1:
            record_callback_failure(audit_id, str(error), database=runtime.database)
            return
        delay = settings.callback_backoff_s * 2**self.request.retries
        raise self.retry(exc=error, countdown=delay) from error
