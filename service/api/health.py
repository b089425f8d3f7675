"""Liveness and readiness probes (unauthenticated, for orchestrators)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy import text

from service.api.deps import AppSettings, get_database
from service.api.responses import problems
from service.db import Database
from service.migrations import current_revision, head_revision
from service.problems import ServiceUnavailable
from service.schemas import Health, Readiness

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", responses=problems(503))
def readyz(
    database: Annotated[Database, Depends(get_database)], settings: AppSettings
) -> Readiness:
    """The database answers at the latest schema revision, and the broker accepts connections."""
    failures: dict[str, str] = {}
    try:
        with database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            revision = current_revision(connection)
        if revision != head_revision():
            failures["database"] = (
                f"schema at revision {revision}, expected {head_revision()}: "
                f"run `trustdiff migrate`"
            )
    except Exception:
        # The reason (host, port, driver message) goes to the log, not to unauthenticated
        # callers.
        logger.warning("readiness: database unreachable", exc_info=True)
        failures["database"] = "unreachable"
    try:
        if database.celery_app is None:
            raise RuntimeError("no broker client configured")
        with database.celery_app.connection_for_write() as connection:
            connection.ensure_connection(
                max_retries=1,
                interval_start=0.2,
                interval_step=0,
                timeout=settings.readiness_timeout_s,
            )
    except Exception:
        logger.warning("readiness: broker unreachable", exc_info=True)
        failures["broker"] = "unreachable"
    if failures:
        raise ServiceUnavailable(
            "; ".join(f"{name} {reason}" for name, reason in failures.items()),
            extra={"checks": failures},
        )
    return Readiness(status="ready", checks={"database": "ok", "broker": "ok"})
