"""The FastAPI application factory: routes under /v1, problem+json errors, size limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

import trustdiff
from service.api import audits, datasets, health, metrics
from service.db import Database
from service.jobs import build_celery_app
from service.key_gate import ApiKeyGate
from service.limits import BodyLimits, ConcurrencyLimit
from service.logs import AuditLogContext
from service.metrics import RequestMetrics, ServiceMetrics
from service.problems import install_problem_handlers
from service.settings import Settings, get_settings

API_PREFIX = "/v1"
# Multipart framing (boundaries, part headers, form fields) around the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway app; it owns one database engine and one broker client for its lifetime."""
    settings = settings or get_settings()
    settings.ensure_state_folders()
    # One connection per request the gateway handles at once (see ConcurrencyLimit).
    database = Database(
        settings.database_url,
        build_celery_app(settings),
        pool_size=settings.max_concurrent_requests,
        pool_timeout_s=settings.database_pool_timeout_s,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Sync routes run in anyio's thread pool (40 threads by default): it must not be the
        # narrower bound, or admitted requests would queue for a thread holding a slot.
        threads = anyio.to_thread.current_default_thread_limiter()
        threads.total_tokens = max(threads.total_tokens, settings.max_concurrent_requests + 8)
        yield
        database.dispose()

    app = FastAPI(
        title="trustdiff",
        version=trustdiff.__version__,
        summary="Audit a compressed text classifier against its reference for trust-equivalence.",
        lifespan=lifespan,
        # `/v1/audits/` is not `/v1/audits`: a 404 problem, not an undocumented 307.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.database = database
    app.state.metrics = ServiceMetrics(database)
    install_problem_handlers(app)
    _install_limits(app, settings, database)
    app.include_router(audits.router, prefix=API_PREFIX)
    app.include_router(datasets.router, prefix=API_PREFIX)
    app.include_router(health.router, prefix=API_PREFIX)
    app.include_router(metrics.router)
    # Outermost: every request is counted and logged, including those refused by the limits.
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    app.add_middleware(AuditLogContext, access_log=settings.log_format == "json")
    return app


def _install_limits(app: FastAPI, settings: Settings, database: Database) -> None:
    """Body limits, the API-key gate and the concurrency limit, innermost first."""
    upload_path = f"{API_PREFIX}/datasets"
    app.add_middleware(
        BodyLimits,
        limit_for=lambda path: (
            settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
            if path.rstrip("/") == upload_path
            else settings.max_request_bytes
        ),
        read_timeout_s=settings.body_read_timeout_s,
    )
    # Before any body is read: who is asking decides whether it is read at all.
    app.add_middleware(
        ApiKeyGate,
        database=database,
        protected_prefixes=(f"{API_PREFIX}/audits", f"{API_PREFIX}/datasets"),
        retry_after_s=settings.retry_after_s,
    )
    # Outermost: a request waiting for a slot has not been read, authenticated or sized yet.
    app.add_middleware(
        ConcurrencyLimit,
        limit=settings.max_concurrent_requests,
        queue_timeout_s=settings.request_queue_timeout_s,
        retry_after_s=settings.retry_after_s,
        exempt=frozenset({f"{API_PREFIX}/healthz"}),
    )
