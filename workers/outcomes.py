"""How a job ends, as an `Outcome` (the final status and the transition that records it), and
storing it: retried on database errors, a refused result document kept as a file."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from service import transitions
from service.db import Database
from service.models import AuditStatus
from service.problems import Conflict, NotFound
from service.settings import Settings

if TYPE_CHECKING:
    from trustdiff.result import AuditResult

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "internal_error"
RESULT_STORAGE_FAILED = "result_storage_failed"
TIME_LIMIT_EXCEEDED = "time_limit_exceeded"

# (code, message) -> the outcome that fails the job with them.
FailureOf = Callable[[str, str], "Outcome"]


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the final status and the transition that records it."""

    status: AuditStatus
    store: Callable[[Session], Any]
    # The result document of a succeeded run (kept as an artifact if it cannot be stored).
    document: dict[str, Any] | None = None
    # The engine's result of a succeeded run, for MLflow once the document is stored.
    result: AuditResult | None = None


def failed(audit_id: uuid.UUID, code: str, message: str) -> Outcome:
    store = partial(transitions.mark_failed, audit_id=audit_id, code=code, message=message)
    return Outcome(AuditStatus.FAILED, store)


def time_limit_message(limit_s: float) -> str:
    return (
        f"the audit ran longer than the {limit_s:g}s time limit and was stopped; audit "
        f"fewer rows or explained instances, or ask the operator to raise "
        f"TRUSTDIFF_TASK_SOFT_TIME_LIMIT_S"
    )


def internal_error_message(audit_id: uuid.UUID) -> str:
    return (
        f"the audit stopped on an unexpected error; the worker log has the details "
        f"(search for audit {audit_id})"
    )


def with_retries(
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


def store_outcome(
    database: Database,
    audit_id: uuid.UUID,
    outcome: Outcome,
    settings: Settings,
    *,
    failure: FailureOf | None = None,
) -> AuditStatus:
    """Record `outcome`; returns the status the audit ended with.

    A result the database keeps refusing (any database error, after retries) is not lost:
    the document is written to `settings.artifacts_dir` and the audit fails with
    `result_storage_failed`, naming the file, through `failure` (by default
    `transitions.mark_failed`).
    """
    failure = failure or partial(failed, audit_id)

    def store() -> None:
        with database.transaction() as session:
            outcome.store(session)

    try:
        # Only a result is worth retrying every database error for: the failure of a
        # deterministic error (e.g. a value the column cannot hold) costs a few seconds.
        retry_on = SQLAlchemyError if outcome.document is not None else OperationalError
        with_retries(
            store,
            attempts=settings.result_store_attempts,
            backoff_s=settings.result_store_backoff_s,
            retry_on=retry_on,
        )
    except (Conflict, NotFound) as error:
        # The sweep decided this run was lost (e.g. the heartbeat stalled), the audit ended
        # meanwhile, or it was deleted: the row's state stands.
        logger.warning("audit %s: outcome dropped: %s", audit_id, error.detail)
        return outcome.status
    except SQLAlchemyError as error:
        if outcome.document is None:
            raise
        logger.exception("audit %s: the database refused the result", audit_id)
        kept = keep_artifact(settings.artifacts_dir, audit_id, outcome.document)
        message = (
            f"the audit finished but the database refused its result ({type(error).__name__}) "
            f"{settings.result_store_attempts} time(s); the result document is kept as "
            f"{settings.artifacts_dir.name}/{kept.name} in the service's data folder"
        )
        refused = failure(RESULT_STORAGE_FAILED, message)
        store_outcome(database, audit_id, refused, settings, failure=failure)
        return refused.status
    return outcome.status


def keep_artifact(folder: Path, audit_id: uuid.UUID, document: dict[str, Any]) -> Path:
    """Write `document` to `folder/<audit_id>.json` atomically (never a half-written file)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{audit_id}.json"
    partial_path = path.with_suffix(".json.partial")
    partial_path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    os.replace(partial_path, path)
    return path


def result_document(result: AuditResult) -> dict[str, Any]:
    from trustdiff.result import dump_result

    # The same JSON text the CLI writes (NaN refused), so API and CLI documents match.
    document: dict[str, Any] = json.loads(dump_result(result))
    return document
