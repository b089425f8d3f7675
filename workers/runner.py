"""Run one audit job: claim the row, run the engine outside any transaction, store the outcome."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from service import transitions
from service.artifacts import ArtifactStore
from service.db import Database
from service.models import AuditStatus, Tenant
from service.problems import NotFound
from service.settings import Settings
from service.transitions import InvalidTransition, Progress
from trustdiff.cache import AuditCache
from trustdiff.config import AuditConfig
from trustdiff.errors import AuditCancelledError, TrustdiffError
from workers.tracking import log_to_mlflow

if TYPE_CHECKING:
    from trustdiff.result import AuditResult

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "internal_error"
RESULT_STORAGE_FAILED = "result_storage_failed"
TIME_LIMIT_EXCEEDED = "time_limit_exceeded"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat(threading.Thread):
    """Writes the heartbeat and the latest progress in short transactions while a job runs.

    The engine calls `report` from its own thread as often as it likes; only this thread
    touches the database, at most once per interval. Each beat also reads whether a cancel
    was requested, which `should_cancel` answers from memory at every batch boundary.
    """

    def __init__(
        self,
        database: Database,
        audit_id: uuid.UUID,
        interval_s: float,
        *,
        time_limit_s: float | None = None,
    ) -> None:
        super().__init__(name=f"heartbeat-{audit_id}", daemon=True)
        self.database = database
        self.audit_id = audit_id
        self.interval_s = interval_s
        # The soft time limit, checked where the engine checks for a cancel: it works under
        # every pool (Celery's own limits need prefork) and stops at a batch boundary.
        self.deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
        self.timed_out = threading.Event()
        self.cancel_requested = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        # A thread starts with empty context variables: carry the job's (its audit id, for
        # the log lines) into this one.
        self._context = contextvars.copy_context()

    def report(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            self._progress = Progress(stage=stage, done=done, total=total)

    def should_cancel(self) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.timed_out.set()
        return self.cancel_requested.is_set() or self.timed_out.is_set()

    def beat(self) -> None:
        with self._lock:
            progress, self._progress = self._progress, None
        try:
            with self.database.transaction() as session:
                if transitions.record_heartbeat(session, self.audit_id, progress):
                    self.cancel_requested.set()
        except Exception:
            # A missed beat is harmless as long as the next one lands before the timeout.
            logger.warning("audit %s: heartbeat failed", self.audit_id, exc_info=True)
            with self._lock:
                self._progress = self._progress or progress

    def run(self) -> None:
        self._context.run(self._beat_until_stopped)

    def _beat_until_stopped(self) -> None:
        while not self._stopped.wait(self.interval_s):
            self.beat()

    def stop(self) -> None:
        self._stopped.set()
        self.join()


def _with_retries(
    action: Callable[[], Any],
    *,
    attempts: int = 4,
    backoff_s: float = 1.0,
    retry_on: type[Exception] | tuple[type[Exception], ...] = OperationalError,
) -> Any:
    """Run a short transaction, retrying on `retry_on` with exponential backoff.

    Used for storing an outcome: losing minutes of compute to one dropped connection would be
    worse than waiting a few seconds.
    """
    for attempt in range(attempts):
        try:
            return action()
        except retry_on:
            if attempt == attempts - 1:
                raise
            logger.warning("database error storing an outcome; retrying", exc_info=True)
            time.sleep(backoff_s * 2**attempt)
    return None


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
        except (NotFound, InvalidTransition) as error:
            # Redelivered or duplicate messages land here: the row says what is true.
            logger.info("audit %s not started: %s", audit_id, error.detail)
            return None
        tenant = session.get_one(Tenant, audit.tenant_id)
        return Claimed(audit.config, audit.dataset_root, tenant.name)


def _store_outcome(
    database: Database,
    audit_id: uuid.UUID,
    outcome: Outcome,
    settings: Settings,
) -> AuditStatus:
    """Record `outcome`; returns the status the audit ended with.

    A result the database keeps refusing (any database error, after retries) is not lost:
    the document is written to `settings.artifacts_dir` and the audit fails with
    `result_storage_failed`, naming the file.
    """

    def store() -> None:
        with database.transaction() as session:
            outcome.store(session)

    try:
        # Only a result is worth retrying every database error for: the failure of a
        # deterministic error (e.g. a value the column cannot hold) costs a few seconds.
        retry_on = SQLAlchemyError if outcome.document is not None else OperationalError
        _with_retries(
            store,
            attempts=settings.result_store_attempts,
            backoff_s=settings.result_store_backoff_s,
            retry_on=retry_on,
        )
    except (InvalidTransition, NotFound) as error:
        # The sweep decided this run was lost (e.g. the heartbeat stalled), or the audit was
        # deleted: the row's state stands.
        logger.warning("audit %s: outcome dropped: %s", audit_id, error.detail)
        return outcome.status
    except SQLAlchemyError as error:
        if outcome.document is None:
            raise
        logger.exception("audit %s: the database refused the result", audit_id)
        kept = _keep_artifact(settings.artifacts_dir, audit_id, outcome.document)
        message = (
            f"the audit finished but the database refused its result ({type(error).__name__}) "
            f"{settings.result_store_attempts} time(s); the result document is kept as "
            f"{settings.artifacts_dir.name}/{kept.name} in the service's data folder"
        )
        failed = _failed(audit_id, RESULT_STORAGE_FAILED, message)
        _store_outcome(database, audit_id, failed, settings)
        return failed.status
    return outcome.status


def _keep_artifact(folder: Path, audit_id: uuid.UUID, document: dict[str, Any]) -> Path:
    """Write `document` to `folder/<audit_id>.json` atomically (never a half-written file)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{audit_id}.json"
    partial_path = path.with_suffix(".json.partial")
    partial_path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    os.replace(partial_path, path)
    return path


def _result_document(result: AuditResult) -> dict[str, Any]:
    from trustdiff.result import dump_result

    # The same JSON text the CLI writes (NaN refused), so API and CLI documents match.
    document: dict[str, Any] = json.loads(dump_result(result))
    return document


def run_audit_job(
    audit_id: str | uuid.UUID, *, database: Database, settings: Settings
) -> AuditStatus | None:
    """Run a queued audit to its end; returns its final status, or None if it was not queued.

    The engine runs with no transaction open; the heartbeat thread writes progress. Engine
    errors fail the audit with their code and message, a cancel at a batch boundary cancels
    it, anything else fails it with a generic message (the traceback goes to the log).
    """
    audit_id = uuid.UUID(str(audit_id))
    claimed = _claim(database, audit_id)
    if claimed is None:
        return None
    stored = _stored_config(claimed.config, audit_id)
    if isinstance(stored, Outcome):
        outcome = stored
    else:
        logger.info("audit %s: running", audit_id)
        outcome = _run_engine(
            stored,
            audit_id,
            database=database,
            settings=settings,
            tenant_name=claimed.tenant_name,
            dataset_root=claimed.dataset_root,
        )
    status = _store_outcome(database, audit_id, outcome, settings)
    logger.info("audit %s: %s", audit_id, status)
    if status == AuditStatus.SUCCEEDED and outcome.result and settings.mlflow_tracking_uri:
        log_to_mlflow(audit_id, outcome.result, settings)
    return status


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the final status and the transition that records it."""

    status: AuditStatus
    store: Callable[[Session], Any]
    # The result document of a succeeded run (kept as an artifact if it cannot be stored).
    document: dict[str, Any] | None = None
    # The engine's result of a succeeded run, for MLflow once the document is stored.
    result: AuditResult | None = None


def _failed(audit_id: uuid.UUID, code: str, message: str) -> Outcome:
    store = partial(transitions.mark_failed, audit_id=audit_id, code=code, message=message)
    return Outcome(AuditStatus.FAILED, store)


def _stored_config(config_json: dict[str, Any], audit_id: uuid.UUID) -> AuditConfig | Outcome:
    """The engine's config as stored, or the failure when this engine no longer accepts it."""
    try:
        return AuditConfig.model_validate(config_json)
    except ValidationError as error:
        # Stored by an older release whose config this engine no longer accepts.
        message = f"the stored audit configuration is no longer valid: {error}"
        return _failed(audit_id, "config_invalid", message)


def _run_engine(
    config: AuditConfig,
    audit_id: uuid.UUID,
    *,
    database: Database,
    settings: Settings,
    tenant_name: str,
    dataset_root: str,
) -> Outcome:
    """Run the engine with a heartbeat beside it; every way it can end becomes an Outcome.

    Paths resolve under the tenant's own folders, as they did when the audit was accepted.
    """
    from trustdiff.audit import run_audit
    from trustdiff.twin_cache import TwinCache

    heartbeat = Heartbeat(
        database,
        audit_id,
        settings.heartbeat_interval_s,
        time_limit_s=settings.task_soft_time_limit_s,
    )
    heartbeat.start()
    # Written to a staging folder first, then stored as the audit's artifact: the document
    # keeps summaries, every row's outcome goes here. The service stores no text in it.
    staging = settings.home / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    rows_path = staging / f"{audit_id}-{uuid.uuid4().hex}.rows.parquet"
    try:
        result = run_audit(
            config,
            model_root=settings.tenant_model_root(tenant_name),
            data_root=settings.dataset_folder(dataset_root, tenant_name),
            shared_model_root=settings.shared_model_root,
            progress=heartbeat.report,
            should_cancel=heartbeat.should_cancel,
            twin_cache=TwinCache(settings.twin_cache_dir),
            rows_path=rows_path,
            # Shared by the workers: a second candidate against the same reference and
            # dataset reuses the reference's predictions, unchanged folders are not re-hashed.
            cache=AuditCache(settings.cache_dir),
        )
        document = _result_document(result)
        rows_url = ArtifactStore.from_settings(settings).put(
            rows_path, f"audits/{audit_id}/rows.parquet"
        )
    except (AuditCancelledError, SoftTimeLimitExceeded) as error:
        if heartbeat.timed_out.is_set() or isinstance(error, SoftTimeLimitExceeded):
            return _timed_out(audit_id, settings.task_soft_time_limit_s)
        logger.info("audit %s: cancelled", audit_id)
        return Outcome(
            AuditStatus.CANCELLED, partial(transitions.mark_cancelled, audit_id=audit_id)
        )
    except TrustdiffError as error:
        logger.info("audit %s: failed: %s: %s", audit_id, error.code, error.message)
        message = settings.redact_paths(error.message, tenant_name=tenant_name)
        return _failed(audit_id, error.code, message)
    except Exception:
        logger.exception("audit %s: unexpected error", audit_id)
        message = (
            f"the audit stopped on an unexpected error; the worker log has the details "
            f"(search for audit {audit_id})"
        )
        return _failed(audit_id, INTERNAL_ERROR, message)
    finally:
        heartbeat.stop()
        rows_path.unlink(missing_ok=True)
    store = partial(
        transitions.mark_succeeded, audit_id=audit_id, result=document, rows_url=rows_url
    )
    return Outcome(AuditStatus.SUCCEEDED, store, document, result)


def _timed_out(audit_id: uuid.UUID, limit_s: float) -> Outcome:
    logger.warning("audit %s: stopped at the %ss time limit", audit_id, limit_s)
    message = (
        f"the audit ran longer than the {limit_s:g}s time limit and was stopped; audit "
        f"fewer rows or explained instances, or ask the operator to raise "
        f"TRUSTDIFF_TASK_SOFT_TIME_LIMIT_S"
    )
    return _failed(audit_id, TIME_LIMIT_EXCEEDED, message)


def sweep_stale_audits(*, database: Database, settings: Settings) -> list[uuid.UUID]:
    """Re-queue or fail audits whose worker died; re-send jobs the broker refused or lost."""
    with database.transaction() as session:
        touched = transitions.recover_stale_audits(
            session,
            heartbeat_timeout=timedelta(seconds=settings.heartbeat_timeout_s),
            max_attempts=settings.max_attempts,
            requeue_queued_after=timedelta(seconds=settings.requeue_queued_after_s),
        )
    if touched:
        logger.warning("sweep recovered audits %s", [str(audit_id) for audit_id in touched])
    return touched
