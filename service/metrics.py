"""Prometheus metrics: the gateway's requests, and the whole system's audits read from the database.

One scrape target shows everything: this gateway's own request counts and latencies, and —
read from the shared database at scrape time, so every gateway and worker is covered — audits
by status, stage durations, queue depth, worker heartbeats and callback failures.

What it reveals: counts and durations aggregated over all tenants, route templates (never ids
or paths), HTTP status codes. No tenant names, audit ids, file paths, hostnames or results.
That is operational data, not tenant data, so `/metrics` is open by default; set
`TRUSTDIFF_METRICS_TOKEN` to require `Authorization: Bearer <token>` where even the volume of
use is confidential.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.db import Database
from service.models import Audit, AuditStatus, utc_now

logger = logging.getLogger(__name__)

NAMESPACE = "trustdiff"
# Audit stages take seconds to hours; request latencies milliseconds to seconds.
STAGE_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf"))
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))
UNMATCHED_ROUTE = "unmatched"


class AuditCollector(Collector):
    """Audit metrics computed from the database on every scrape (nothing kept in memory)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            f"{NAMESPACE}_database_up", "1 when the audit metrics could be read from the database."
        )
        try:
            families = list(self._families())
        except Exception:
            logger.warning("audit metrics: the database could not be read", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Metric]:
        now = utc_now()
        # A read transaction: on SQLite a scrape never takes the write lock.
        with self.database.read_transaction() as connection:
            snapshot = _AuditSnapshot.read(connection)
        yield from _queue_families(snapshot, now)
        yield from _worker_families(snapshot, now)
        yield _callback_family(snapshot)
        yield _stage_family(snapshot)


@dataclass(frozen=True)
class _AuditSnapshot:
    """What one scrape reads of the audits table, in one read transaction."""

    by_status: dict[str, int]
    oldest_queued: datetime | None
    # (worker, heartbeat) of every running audit.
    running: list[tuple[str | None, datetime | None]]
    # (delivered, failed, requested) callbacks of finished audits.
    callbacks: tuple[int, int, int]
    stage_seconds: dict[str, list[float]]

    @classmethod
    def read(cls, connection: Any) -> _AuditSnapshot:
        by_status = {
            str(status): count
            for status, count in connection.execute(
                select(Audit.status, func.count()).group_by(Audit.status)
            ).all()
        }
        (oldest_queued,) = connection.execute(
            select(func.min(Audit.created_at)).where(Audit.status == AuditStatus.QUEUED)
        ).one()
        running = connection.execute(
            select(Audit.worker, Audit.heartbeat_at).where(Audit.status == AuditStatus.RUNNING)
        ).all()
        callbacks = connection.execute(
            select(
                func.count(Audit.callback_delivered_at),
                func.count(Audit.callback_error),
                func.count(Audit.callback_url),
            ).where(Audit.finished_at.is_not(None))
        ).one()
        timings = connection.execute(
            select(Audit.result[("manifest", "timings")]).where(
                Audit.status == AuditStatus.SUCCEEDED
            )
        ).scalars()
        return cls(
            by_status=by_status,
            oldest_queued=oldest_queued,
            running=[(worker, beat) for worker, beat in running],
            callbacks=(callbacks[0], callbacks[1], callbacks[2]),
            stage_seconds=_stage_seconds(timings),
        )


def _queue_families(snapshot: _AuditSnapshot, now: datetime) -> Iterator[Metric]:
    audits = GaugeMetricFamily(
        f"{NAMESPACE}_audits", "Audits in the database by status.", labels=["status"]
    )
    for status in AuditStatus:
        audits.add_metric([status.value], snapshot.by_status.get(status.value, 0))
    yield audits
    depth = GaugeMetricFamily(
        f"{NAMESPACE}_queue_depth", "Audits queued and not yet claimed by a worker."
    )
    depth.add_metric([], snapshot.by_status.get(AuditStatus.QUEUED.value, 0))
    yield depth
    oldest = GaugeMetricFamily(
        f"{NAMESPACE}_queue_oldest_age_seconds",
        "Age of the oldest queued audit (0 when none is queued).",
    )
    oldest.add_metric([], _age(now, snapshot.oldest_queued))
    yield oldest


def _worker_families(snapshot: _AuditSnapshot, now: datetime) -> Iterator[Metric]:
    running = snapshot.running
    workers = GaugeMetricFamily(
        f"{NAMESPACE}_workers_busy", "Distinct workers running an audit now."
    )
    workers.add_metric([], len({worker for worker, _beat in running if worker}))
    yield workers
    stalest = GaugeMetricFamily(
        f"{NAMESPACE}_heartbeat_max_age_seconds",
        "Longest time since a running audit's worker last sent a heartbeat (0 when none "
        "runs); above TRUSTDIFF_HEARTBEAT_TIMEOUT_S the sweep declares the worker lost.",
    )
    stalest.add_metric([], max((_age(now, beat) for _worker, beat in running), default=0.0))
    yield stalest


def _callback_family(snapshot: _AuditSnapshot) -> Metric:
    delivered, failed, requested = snapshot.callbacks
    family = GaugeMetricFamily(
        f"{NAMESPACE}_callbacks",
        "Callbacks of finished audits by state (failed: given up after every retry).",
        labels=["state"],
    )
    family.add_metric(["delivered"], delivered)
    family.add_metric(["failed"], failed)
    family.add_metric(["pending"], max(requested - delivered - failed, 0))
    return family


def _stage_family(snapshot: _AuditSnapshot) -> Metric:
    stages = HistogramMetricFamily(
        f"{NAMESPACE}_audit_stage_duration_seconds",
        "Seconds each stage of succeeded audits took (from their result manifests).",
        labels=["stage"],
    )
    for stage, values in sorted(snapshot.stage_seconds.items()):
        buckets = [
            (_bucket_label(bound), sum(value <= bound for value in values))
            for bound in STAGE_BUCKETS
        ]
        stages.add_metric([stage], buckets, sum_value=sum(values))
    return stages


def _stage_seconds(rows: Any) -> dict[str, list[float]]:
    stages: dict[str, list[float]] = {}
    for timings in rows:
        if not isinstance(timings, dict):
            continue
        for stage, seconds in timings.items():
            if isinstance(seconds, int | float) and not isinstance(seconds, bool):
                stages.setdefault(str(stage), []).append(float(seconds))
    return stages


def _bucket_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _age(now: Any, then: Any) -> float:
    return 0.0 if then is None else max((now - then).total_seconds(), 0.0)


class ServiceMetrics:
    """One app's registry: its request metrics and the audit collector on its database."""

    def __init__(self, database: Database) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "requests",
            "HTTP requests handled by this gateway process.",
            ["method", "route", "status"],
            namespace=f"{NAMESPACE}_http",
            registry=self.registry,
        )
        self.latency = Histogram(
            "request_duration_seconds",
            "Time to the end of the response, by route template.",
            ["method", "route"],
            namespace=f"{NAMESPACE}_http",
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(AuditCollector(database))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


def route_template(scope: Scope) -> str:
    """`/v1/audits/{audit_id}`, never the id itself: one series per route, not per audit.

    Rebuilt from the path and the matched path parameters, since the route object of an
    included router knows its path without the router's prefix.
    """
    if scope.get("endpoint") is None:
        return UNMATCHED_ROUTE
    values = {str(value): name for name, value in (scope.get("path_params") or {}).items()}
    segments = str(scope.get("path", "")).split("/")
    return "/".join(f"{{{values[part]}}}" if part in values else part for part in segments)


class RequestMetrics:
    """ASGI middleware counting each HTTP request by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self.metrics.observe(
                scope["method"], route_template(scope), status, time.perf_counter() - started
            )
