"""Audits executed by a real Celery worker process on Postgres and Redis, end to end."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import shutil
import time
import uuid
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.db import Database
from service.models import Audit, AuditShard
from service.settings import Settings
from tests.conftest import TinyAssets
from tests.service.callback_server import CallbackServer
from tests.service.fixtures import audit_body, wait_for_status
from trustdiff.client import verify_callback_signature

pytestmark = pytest.mark.services

FINAL = {"succeeded", "failed", "cancelled"}


def test_audit_runs_to_success_and_serves_result_gate_and_report(
    live_client: TestClient, auth: dict[str, str]
) -> None:
    body = audit_body(candidate={"path": "perturbed"})
    response = live_client.post("/v1/audits", json=body, headers=auth)
    assert response.status_code == 202, response.text
    audit_id = response.json()["id"]
    audit = wait_for_status(live_client, audit_id, auth, FINAL, timeout_s=180)
    assert audit["status"] == "succeeded", audit
    assert audit["error"] is None
    assert audit["attempts"] == 1
    assert audit["started_at"] and audit["finished_at"]
    assert audit["progress"]["stage"] == "done"
    assert audit["progress"]["done"] == audit["progress"]["total"]

    result = live_client.get(f"/v1/audits/{audit_id}/result", headers=auth).json()
    assert result["schema_version"] == "2"
    assert set(result) >= {"manifest", "parity", "calibration", "alignment", "gate", "instances"}
    assert result["manifest"]["candidate"]["path"] == "perturbed"
    # The document keeps the explained instances; every row's outcome is in the rows file.
    assert len(result["instances"]) == 2
    assert result["rows"]["count"] == 48
    assert set(result["alignment"]) == {"lime", "shap"}
    _check_rows(live_client, audit_id, auth, result)

    gate = live_client.get(f"/v1/audits/{audit_id}/gate", headers=auth).json()
    assert gate == result["gate"]
    assert audit["passed"] is gate["passed"]
    assert {check["pillar"] for check in gate["checks"]} == {"parity", "calibration", "alignment"}

    report = live_client.get(f"/v1/audits/{audit_id}/report", headers=auth)
    assert report.status_code == 200
    assert report.headers["content-type"].startswith("text/html")
    assert "<svg" in report.text

    listed = live_client.get("/v1/audits", params={"status": "succeeded"}, headers=auth).json()
    assert [item["id"] for item in listed["items"]] == [audit_id]
    # A finished audit cannot be cancelled.
    conflict = live_client.post(f"/v1/audits/{audit_id}/cancel", headers=auth)
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "invalid_transition"


def _check_rows(
    client: TestClient, audit_id: str, auth: dict[str, str], result: dict[str, Any]
) -> None:
    """Pages walk every row once, `flipped` filters, the whole file comes back as Parquet."""
    rows_url = f"/v1/audits/{audit_id}/rows"
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 20} | ({"cursor": cursor} if cursor else {})
        page = client.get(rows_url, params=params, headers=auth)
        assert page.status_code == 200, page.text
        seen += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [row["index"] for row in seen] == list(range(48))
    assert all(row["text"] is None for row in seen)  # the service stores no text
    assert sum(row["flipped"] for row in seen) == result["rows"]["flipped"]
    for instance in result["instances"]:
        assert seen[instance["index"]]["reference_proba"] == instance["reference_proba"]
    flipped = client.get(rows_url, params={"flipped": "true", "limit": 1000}, headers=auth)
    assert [row["index"] for row in flipped.json()["items"]] == [
        row["index"] for row in seen if row["flipped"]
    ]

    bad = client.get(rows_url, params={"cursor": "not-a-cursor"}, headers=auth)
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert bad.json()["code"] == "invalid_cursor"

    whole = client.get(f"{rows_url}.parquet", headers=auth)
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "application/vnd.apache.parquet"
    negotiated = client.get(rows_url, headers={**auth, "Accept": "application/vnd.apache.parquet"})
    assert negotiated.content == whole.content
    table = pq.read_table(io.BytesIO(whole.content))
    assert table.column("index").to_pylist() == list(range(48))
    assert hashlib.sha256(whole.content).hexdigest() == result["rows"]["sha256"]


def test_uploaded_dataset_audit_with_signed_callback_retried_until_delivered(
    live_client: TestClient,
    auth: dict[str, str],
    tiny_assets: TinyAssets,
    settings: Settings,
    clean_database: Database,
) -> None:
    # An extra column the audit does not read as text or label is kept for slicing.
    lines = (tiny_assets.data_root / "sentiment.csv").read_text().splitlines()
    sliced = "\n".join(
        [f"{lines[0]},source"]
        + [f"{line},{'forum' if i % 2 else 'web'}" for i, line in enumerate(lines[1:])]
    )
    upload = live_client.post(
        "/v1/datasets", files={"file": ("eval.csv", sliced.encode())}, headers=auth
    )
    assert upload.status_code == 201, upload.text
    assert "source" in upload.json()["fields"]
    with CallbackServer(fail_first=2) as receiver:
        body = audit_body(
            dataset={"id": upload.json()["id"], "limit": 20},
            explain={"instances": 0},
            slices={"columns": ["source"], "min_slice_size": 5},
            callback_url=receiver.url,
        )
        audit_id = live_client.post("/v1/audits", json=body, headers=auth).json()["id"]
        audit = wait_for_status(live_client, audit_id, auth, FINAL)
        assert audit["status"] == "succeeded", audit
        assert receiver.received.wait(30), f"no callback after {receiver.attempts} attempts"
    assert receiver.attempts == 3
    delivery = receiver.deliveries[0]
    secret = settings.callback_secret.get_secret_value()  # type: ignore[union-attr]
    header = delivery.headers["X-Trustdiff-Signature"]
    timestamp = header.split(",")[0].removeprefix("t=")
    signed = f"{timestamp}.".encode() + delivery.body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    assert header == f"t={timestamp},v1={expected}"
    assert verify_callback_signature(delivery.body, header, secret)
    payload = json.loads(delivery.body)
    assert payload["audit_id"] == audit_id
    assert payload["status"] == "succeeded"
    assert payload["gate"]["passed"] == audit["passed"]
    result = live_client.get(f"/v1/audits/{audit_id}/result", headers=auth).json()
    assert result["manifest"]["dataset"]["rows"] == 20
    sources = [item for item in result["slices"]["slices"] if item["column"] == "source"]
    assert {item["value"]: item["n"] for item in sources} == {"forum": 10, "web": 10}
    with clean_database.transaction() as session:
        row = session.scalars(select(Audit).where(Audit.id == audit["id"])).one()
        deadline = time.monotonic() + 10
        while row.callback_delivered_at is None and time.monotonic() < deadline:
            time.sleep(0.2)
            session.refresh(row)
        assert row.callback_delivered_at is not None


def _broken_copy(tiny_assets: TinyAssets, name: str) -> str:
    broken = tiny_assets.model_root / name
    if not broken.exists():
        shutil.copytree(tiny_assets.reference, broken)
    return name


def test_checkpoints_that_fail_to_load_report_their_error(
    live_client: TestClient, auth: dict[str, str], tiny_assets: TinyAssets
) -> None:
    # Both pass the cheap checks (config.json and *.safetensors are there) and fail at load.
    unknown_type = _broken_copy(tiny_assets, "unknown-model-type")
    config_path = tiny_assets.model_root / unknown_type / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "model_type": "no-such-architecture"}))
    garbage = _broken_copy(tiny_assets, "garbage-weights")
    (tiny_assets.model_root / garbage / "model.safetensors").write_bytes(b"\x00" * 64)

    submitted = {}
    for name in (unknown_type, garbage):
        response = live_client.post(
            "/v1/audits", json=audit_body(candidate={"path": name}), headers=auth
        )
        assert response.status_code == 202, response.text
        submitted[name] = response.json()["id"]

    audit = wait_for_status(live_client, submitted[unknown_type], auth, FINAL)
    assert audit["status"] == "failed"
    assert audit["error"]["code"] == "checkpoint_invalid"
    assert "unknown-model-type" in audit["error"]["message"]
    assert live_client.get(f"/v1/audits/{audit['id']}/gate", headers=auth).status_code == 409

    # A corrupt weights file passes the cheap checks and fails at load, with a clear code.
    audit = wait_for_status(live_client, submitted[garbage], auth, FINAL)
    assert audit["status"] == "failed"
    assert audit["error"]["code"] == "checkpoint_invalid"
    assert "Traceback" not in audit["error"]["message"]


def _progress_stage(client: TestClient, audit_id: str, auth: dict[str, str]) -> str | None:
    progress = client.get(f"/v1/audits/{audit_id}", headers=auth).json()["progress"]
    return None if progress is None else str(progress["stage"])


def test_cancelling_a_running_audit_stops_it_at_a_batch_boundary(
    live_client: TestClient, auth: dict[str, str], database: Database
) -> None:
    slow = audit_body(
        candidate={"path": "perturbed"},
        explain={"instances": 48, "lime_samples": 2000, "shap_max_evals": 2000, "top_k": 3},
        batch_size=4,
    )
    audit_id = live_client.post("/v1/audits", json=slow, headers=auth).json()["id"]
    # Planned, in blocks of 4 (TRUSTDIFF_BLOCK_INSTANCES): one explaining, the others queued.
    deadline = time.monotonic() + 120
    while _progress_stage(live_client, audit_id, auth) != "explain":
        assert time.monotonic() < deadline, "the audit never reached its explanation blocks"
        time.sleep(0.1)
    response = live_client.post(f"/v1/audits/{audit_id}/cancel", headers=auth)
    assert response.status_code == 202, response.text
    assert response.json()["cancel_requested"] is True
    started = time.monotonic()
    audit = wait_for_status(live_client, audit_id, auth, FINAL, timeout_s=60)
    assert audit["status"] == "cancelled", audit
    assert time.monotonic() - started < 30
    assert live_client.get(f"/v1/audits/{audit_id}/result", headers=auth).status_code == 409
    # Its queued shards were revoked and its running ones stopped: none is left to run.
    with database.read_transaction() as session:
        statuses = session.scalars(
            select(AuditShard.status).where(AuditShard.audit_id == uuid.UUID(audit_id))
        ).all()
    assert statuses and set(statuses) <= {"done", "cancelled"}
    assert "cancelled" in statuses
    # Cancelling again is a no-op.
    assert live_client.post(f"/v1/audits/{audit_id}/cancel", headers=auth).status_code == 200
