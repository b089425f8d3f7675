"""TRUSTDIFF_LOG_FORMAT=json: the gateway writes one JSON object per line, each request's
access line carrying the audit it was about (also for the POST that created it)."""

from __future__ import annotations

import io
import json
import logging

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.db import Database
from service.logs import ACCESS_LOGGER, audit_context, log_handler
from service.settings import Settings
from tests.service.fixtures import audit_body

pytestmark = pytest.mark.services


def test_gateway_lines_carry_the_audit_id(
    parked_settings: Settings, clean_database: Database, auth: dict[str, str]
) -> None:
    settings = parked_settings.model_copy(update={"log_format": "json"})
    stream = io.StringIO()
    handler = log_handler("json")
    handler.setStream(stream)  # type: ignore[attr-defined]
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with TestClient(create_app(settings)) as client:
            created = client.post("/v1/audits", json=audit_body(), headers=auth).json()["id"]
            assert client.get(f"/v1/audits/{created}/gate", headers=auth).status_code == 409
            assert client.get("/v1/healthz").status_code == 200
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == ACCESS_LOGGER]
    by_path = {line["message"].split()[1]: line for line in access}
    assert by_path["/v1/audits"]["audit_id"] == created
    assert by_path["/v1/audits"]["status"] == 202
    assert by_path[f"/v1/audits/{created}/gate"]["audit_id"] == created
    assert by_path["/v1/healthz"]["audit_id"] is None
    enqueued = [line for line in lines if line["message"].startswith("enqueued")]
    assert enqueued and enqueued[0]["audit_id"] == created
    for line in access:
        assert {"time", "level", "logger", "message", "duration_ms"} <= set(line)


def test_the_json_formatter_keeps_context_extras_and_tracebacks() -> None:
    logger = logging.getLogger("tests.logs")
    stream = io.StringIO()
    handler = log_handler("json")
    handler.setStream(stream)  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with audit_context("a-1"):
            logger.warning("stage %s slow", "explain", extra={"seconds": 1.5})
            try:
                raise ValueError("bad row")
            except ValueError:
                logger.exception("failed")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "stage explain slow" and first["seconds"] == 1.5
    assert first["audit_id"] == second["audit_id"] == "a-1"
    assert "ValueError: bad row" in second["exception"]
    assert third["audit_id"] is None
