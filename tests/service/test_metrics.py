"""`GET /metrics`: the gateway's request metrics and the audit metrics read from the database,
parsed with prometheus_client's own parser; nothing in it identifies a tenant."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import select

from service import transitions
from service.app import create_app
from service.db import Database
from service.metrics import AuditCollector
from service.migrations import upgrade_to_head
from service.models import Audit, Tenant
from service.settings import Settings
from tests.report.builders import build_audit_result
from tests.service.fixtures import audit_body
from trustdiff.result import dump_result

pytestmark = pytest.mark.services


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def finish_with_result(database: Database, audit_id: uuid.UUID) -> dict[str, float]:
    """Run the audit's state machine to `succeeded` with a real result document."""
    document = json.loads(dump_result(build_audit_result()))
    with database.transaction() as session:
        transitions.start_running(session, audit_id, worker="host-a:1")
    with database.transaction() as session:
        transitions.mark_succeeded(session, audit_id, result=document)
    timings: dict[str, float] = document["manifest"]["timings"]
    return timings


def test_metrics_count_requests_by_route_and_audits_by_status(
    client: TestClient, auth: dict[str, str], clean_database: Database
) -> None:
    queued = client.post("/v1/audits", json=audit_body(), headers=auth).json()["id"]
    finished = client.post("/v1/audits", json=audit_body(seed=1), headers=auth).json()["id"]
    timings = finish_with_result(clean_database, uuid.UUID(finished))
    for _ in range(2):
        assert client.get(f"/v1/audits/{queued}", headers=auth).status_code == 200
    assert client.get(f"/v1/audits/{uuid.uuid4()}", headers=auth).status_code == 404

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = samples(response.text)
    route = "/v1/audits/{audit_id}"
    get_ok = (
        "trustdiff_http_requests_total",
        (("method", "GET"), ("route", route), ("status", "200")),
    )
    assert values[get_ok] == 2
    get_missing = (
        "trustdiff_http_requests_total",
        (("method", "GET"), ("route", route), ("status", "404")),
    )
    assert values[get_missing] == 1
    latency_count = (
        "trustdiff_http_request_duration_seconds_count",
        (("method", "GET"), ("route", route)),
    )
    assert values[latency_count] == 3
    assert values[("trustdiff_audits", (("status", "queued"),))] == 1
    assert values[("trustdiff_audits", (("status", "succeeded"),))] == 1
    assert values[("trustdiff_audits", (("status", "running"),))] == 0
    assert values[("trustdiff_queue_depth", ())] == 1
    assert values[("trustdiff_queue_oldest_age_seconds", ())] >= 0
    assert values[("trustdiff_workers_busy", ())] == 0
    assert values[("trustdiff_database_up", ())] == 1
    for stage, seconds in timings.items():
        labels = (("stage", stage),)
        assert values[("trustdiff_audit_stage_duration_seconds_count", labels)] == 1
        assert values[("trustdiff_audit_stage_duration_seconds_sum", labels)] == pytest.approx(
            seconds
        )
    # What it must not reveal: ids, tenants, paths, worker hosts.
    with clean_database.transaction() as session:
        tenant = session.scalars(select(Tenant)).one().name
    for secret in (queued, finished, tenant, "sentiment.jsonl", "host-a"):
        assert secret not in response.text


def test_a_metrics_token_closes_the_endpoint(
    parked_settings: Settings, clean_database: Database
) -> None:
    settings = parked_settings.model_copy(update={"metrics_token": SecretStr("scrape-secret")})
    with TestClient(create_app(settings)) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        allowed = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert allowed.status_code == 200 and "trustdiff_audits" in allowed.text


def test_audit_metrics_read_the_embedded_sqlite_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'metrics.sqlite'}"
    upgrade_to_head(url)
    database = Database(url)
    try:
        with database.transaction() as session:
            tenant = Tenant(name="t")
            session.add(tenant)
            session.flush()
            audit = Audit(
                tenant_id=tenant.id, request={}, request_sha256="0" * 64, config={},
                dataset_root="data", progress_stage="queued", progress_done=0, progress_total=0,
            )  # fmt: skip
            session.add(audit)
        timings = finish_with_result(database, audit.id)
        values = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in AuditCollector(database).collect()
            for sample in family.samples
        }
    finally:
        database.dispose()
    assert values[("trustdiff_audits", (("status", "succeeded"),))] == 1
    stage = next(iter(timings))
    assert values[("trustdiff_audit_stage_duration_seconds_count", (("stage", stage),))] == 1
