"""The polled routes' bodies, serialized once (`json_body`), are FastAPI's own bytes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from fastapi import FastAPI, Response
from fastapi.testclient import TestClient

from service.api.responses import json_body
from service.models import AuditStatus
from service.schemas import AuditError, AuditLinks, AuditOut, AuditPage, Progress


def audit_out(status: AuditStatus, *, finished: bool) -> AuditOut:
    created = datetime(2026, 11, 29, 23, 59, 59, 123456, tzinfo=UTC)
    return AuditOut(
        id=uuid.uuid4(),
        status=status,
        progress=Progress(stage="explain", done=3, total=8),
        error=AuditError(code="dataset_invalid", message='row 7: «é» ✓ \u2028 "quoted"')
        if finished
        else None,
        passed=False if finished else None,
        cancel_requested=not finished,
        attempts=2,
        created_at=created,
        updated_at=created.astimezone(timezone(timedelta(hours=5, minutes=30))),
        started_at=created,
        finished_at=created + timedelta(seconds=1) if finished else None,
        heartbeat_at=None,
        request={"dataset": {"path": "données/ü.jsonl"}, "explain": {"top_k": 10}, "x": 1.5},
        links=AuditLinks(self="/a", result="/a/r", gate="/a/g", report="/a/p", cancel="/a/c"),
    )


def test_json_body_sends_the_bytes_fastapi_would() -> None:
    page = AuditPage(
        items=[
            audit_out(AuditStatus.RUNNING, finished=False),
            audit_out(AuditStatus.FAILED, finished=True),
        ],
        next_cursor="opaque-cursor",
    )
    app = FastAPI()

    @app.get("/model")
    def as_model() -> AuditPage:
        return page

    @app.get("/body", response_model=AuditPage)
    def as_body() -> Response:
        return json_body(page)

    with TestClient(app) as client:
        expected, actual = client.get("/model"), client.get("/body")
    assert actual.status_code == expected.status_code == 200
    assert actual.headers["content-type"] == expected.headers["content-type"]
    assert actual.content == expected.content
    assert "données" in actual.text and '"passed":false' in actual.text
