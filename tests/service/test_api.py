"""The gateway over HTTP (in-process) on real Postgres and Redis: validation, auth, tenancy,
idempotency, pagination, uploads, problems. Audits here stay queued (no worker reads them)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.db import Database
from service.settings import Settings
from tests.conftest import TinyAssets
from tests.service.fixtures import audit_body, new_api_key, random_id
from tests.tiny_models import sentiment_rows

pytestmark = pytest.mark.services

PROBLEM = "application/problem+json"


def assert_problem(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["type"] == f"urn:trustdiff:problem:{code}"
    assert problem["title"] and problem["detail"]
    return problem


def submit(client: TestClient, auth: dict[str, str], body: dict | None = None, **headers: str):  # type: ignore[no-untyped-def]
    return client.post("/v1/audits", json=body or audit_body(), headers={**auth, **headers})


def test_minimal_audit_request_is_accepted_and_readable(
    client: TestClient, auth: dict[str, str]
) -> None:
    body = {
        "reference": {"path": "reference"},
        "candidate": {"path": "reference", "transform": "int8-dynamic"},
        "dataset": {"path": "sentiment.jsonl", "text_field": "text", "label_field": "label"},
        "explain": {"instances": 20},
        "seed": 0,
    }
    response = submit(client, auth, body)
    assert response.status_code == 202, response.text
    audit = response.json()
    assert response.headers["location"] == f"/v1/audits/{audit['id']}"
    assert audit["status"] == "queued"
    assert audit["progress"] == {"stage": "queued", "done": 0, "total": 0}
    assert audit["error"] is None and audit["passed"] is None
    assert audit["request"]["explain"]["instances"] == 20
    assert audit["request"]["calibration"]["n_bins"] == 15  # defaults filled in
    fetched = client.get(audit["links"]["self"], headers=auth)
    assert fetched.status_code == 200
    assert fetched.json()["id"] == audit["id"]
    for link in ("result", "gate", "report"):
        assert_problem(client.get(audit["links"][link], headers=auth), 409, "audit_not_succeeded")


def test_missing_or_wrong_key_is_401(client: TestClient, auth: dict[str, str]) -> None:
    audit_id = submit(client, auth).json()["id"]
    dataset_id = client.post(
        "/v1/datasets", files={"file": ("d.jsonl", b'{"text": "a", "label": "x"}\n')}, headers=auth
    ).json()["id"]
    # GETs carry no body: their routes check the key themselves, each of them.
    reads = [f"/v1/audits/{audit_id}", "/v1/audits", f"/v1/datasets/{dataset_id}"]
    reads += [f"/v1/audits/{audit_id}/{part}" for part in ("result", "gate", "report", "rows")]
    for path in [*reads, f"/v1/audits/{audit_id}/rows.parquet"]:
        for headers in ({}, {"Authorization": "Bearer td_not-a-key"}, {"Authorization": "Basic x"}):
            response = client.get(path, headers=headers)
            assert_problem(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
    assert_problem(client.post("/v1/audits", json=audit_body()), 401, "unauthorized")
    bad_key = {"Authorization": "Bearer td_not-a-key"}
    assert_problem(
        client.post("/v1/audits", json=audit_body(), headers=bad_key), 401, "unauthorized"
    )


def test_another_tenants_audit_and_dataset_are_404(
    client: TestClient, auth: dict[str, str], clean_database: Database
) -> None:
    audit_id = submit(client, auth).json()["id"]
    dataset_id = client.post(
        "/v1/datasets", files={"file": ("d.jsonl", b'{"text": "a", "label": "x"}\n')}, headers=auth
    ).json()["id"]
    other = {"Authorization": f"Bearer {new_api_key(clean_database, 'tenant-b')}"}
    for path in (
        f"/v1/audits/{audit_id}",
        f"/v1/audits/{audit_id}/gate",
        f"/v1/datasets/{dataset_id}",
    ):
        assert_problem(client.get(path, headers=other), 404, "not_found")
    assert_problem(client.post(f"/v1/audits/{audit_id}/cancel", headers=other), 404, "not_found")
    assert client.get("/v1/audits", headers=other).json()["items"] == []
    # Nor can another tenant's upload be audited.
    body = audit_body(dataset={"id": dataset_id})
    assert_problem(submit(client, other, body), 422, "dataset_not_found")
    assert_problem(client.get(f"/v1/audits/{random_id()}", headers=auth), 404, "not_found")
    assert_problem(client.get("/v1/audits/not-a-uuid", headers=auth), 404, "not_found")


def test_idempotency_key_replays_the_same_audit_and_refuses_another_body(
    client: TestClient, auth: dict[str, str]
) -> None:
    first = submit(client, auth, audit_body(), **{"Idempotency-Key": "deploy-42"})
    # Same content, different key order and spacing: the same request.
    reordered = dict(reversed(list(audit_body().items())))
    again = client.post(
        "/v1/audits",
        content=json.dumps(reordered, indent=2),
        headers={**auth, "Idempotency-Key": "deploy-42", "Content-Type": "application/json"},
    )
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    other = submit(client, auth, audit_body(seed=1), **{"Idempotency-Key": "deploy-42"})
    problem = assert_problem(other, 409, "idempotency_key_reused")
    assert problem["audit_id"] == first.json()["id"]
    assert len(client.get("/v1/audits", headers=auth).json()["items"]) == 1
    # Without a key every POST is a new audit.
    assert submit(client, auth).json()["id"] != first.json()["id"]


def test_unknown_fields_and_bad_values_are_422_with_locations(
    client: TestClient, auth: dict[str, str]
) -> None:
    problem = assert_problem(submit(client, auth, audit_body(surprise=1)), 422, "invalid_request")
    assert ["body", "surprise"] in [error["loc"] for error in problem["errors"]]
    problem = assert_problem(
        submit(client, auth, audit_body(explain={"instances": -1})), 422, "invalid_request"
    )
    assert problem["errors"][0]["loc"] == ["body", "explain", "instances"]
    bad_transform = audit_body(candidate={"path": "reference", "transform": "fp4"})
    assert_problem(submit(client, auth, bad_transform), 422, "invalid_request")
    allow_pickle = audit_body(reference={"path": "reference", "allow_pickle": True})
    assert_problem(submit(client, auth, allow_pickle), 422, "invalid_request")
    not_json = client.post(
        "/v1/audits", content=b"{", headers={**auth, "Content-Type": "application/json"}
    )
    assert_problem(not_json, 422, "invalid_request")


def test_paths_outside_their_roots_are_refused(client: TestClient, auth: dict[str, str]) -> None:
    escapes = [
        audit_body(reference={"path": "../data"}),
        audit_body(reference={"path": "/etc"}),
        audit_body(candidate={"path": "reference/../../.."}),
        audit_body(dataset={"path": "../models/reference/config.json"}),
        audit_body(dataset={"path": "/etc/passwd"}),
    ]
    for body in escapes:
        problem = assert_problem(submit(client, auth, body), 422, "path_outside_root")
        assert "outside" in problem["detail"]


def test_missing_pickled_and_mismatched_checkpoints_are_refused_before_queueing(
    client: TestClient, auth: dict[str, str], tiny_assets: TinyAssets, tmp_path: Path
) -> None:
    assert_problem(
        submit(client, auth, audit_body(candidate={"path": "nope"})), 422, "checkpoint_not_found"
    )
    pickled = tiny_assets.model_root / "pickled"
    if not pickled.exists():
        shutil.copytree(tiny_assets.reference, pickled)
        (pickled / "pytorch_model.bin").write_bytes(b"not really a pickle")
    problem = assert_problem(
        submit(client, auth, audit_body(candidate={"path": "pickled"})), 422, "checkpoint_pickled"
    )
    assert "pytorch_model.bin" in problem["detail"]
    mismatch = audit_body(candidate={"path": "other-labels"})
    problem = assert_problem(submit(client, auth, mismatch), 422, "label_mismatch")
    assert "neutral" in problem["detail"]
    missing_data = audit_body(dataset={"path": "nope.jsonl"})
    assert_problem(submit(client, auth, missing_data), 422, "dataset_not_found")
    assert client.get("/v1/audits", headers=auth).json()["items"] == []


def test_dataset_upload_is_validated_fingerprinted_and_usable(
    client: TestClient, auth: dict[str, str], tiny_assets: TinyAssets, settings: Settings
) -> None:
    content = tiny_assets.dataset.read_bytes()
    response = client.post(
        "/v1/datasets", files={"file": ("../../evil/eval.jsonl", content)}, headers=auth
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert response.headers["location"] == f"/v1/datasets/{dataset['id']}"
    assert dataset["filename"] == "eval.jsonl"
    assert dataset["format"] == "jsonl"
    assert dataset["rows"] == 48
    assert dataset["size_bytes"] == len(content)
    import hashlib

    assert dataset["sha256"] == hashlib.sha256(content).hexdigest()
    assert dataset["label_names"] == ["negative", "positive"]
    stored = list(settings.upload_dir.rglob(f"{dataset['id']}.jsonl"))
    assert len(stored) == 1 and stored[0].read_bytes() == content
    assert client.get(f"/v1/datasets/{dataset['id']}", headers=auth).json() == dataset
    body = audit_body(dataset={"id": dataset["id"], "limit": 10})
    audit = submit(client, auth, body)
    assert audit.status_code == 202, audit.text
    assert audit.json()["request"]["dataset"] == {
        "id": dataset["id"],
        "limit": 10,
        "sampling": "head",
    }


def test_csv_upload_with_field_mapping(client: TestClient, auth: dict[str, str]) -> None:
    content = b"sentence,gold\ngood film,positive\nawful plot,negative\n"
    response = client.post(
        "/v1/datasets",
        files={"file": ("sst.csv", content)},
        data={"text_field": "sentence", "label_field": "gold"},
        headers=auth,
    )
    assert response.status_code == 201, response.text
    assert response.json()["fields"] == ["sentence", "gold"]
    assert response.json()["rows"] == 2


def test_malformed_dataset_names_its_row(client: TestClient, auth: dict[str, str]) -> None:
    rows = [json.dumps(row) for row in sentiment_rows(5)]
    rows[3] = '{"text": "broken json", "label": '
    content = ("\n".join(rows) + "\n").encode()
    response = client.post("/v1/datasets", files={"file": ("bad.jsonl", content)}, headers=auth)
    problem = assert_problem(response, 422, "dataset_invalid")
    assert problem["row"] == 4
    assert "row 4" in problem["detail"]
    missing_label = b'{"text": "fine", "label": "positive"}\n{"text": "no label"}\n'
    response = client.post(
        "/v1/datasets", files={"file": ("bad.jsonl", missing_label)}, headers=auth
    )
    assert assert_problem(response, 422, "dataset_invalid")["row"] == 2
    unknown_format = client.post("/v1/datasets", files={"file": ("data.xlsx", b"x")}, headers=auth)
    assert_problem(unknown_format, 422, "dataset_invalid")


def test_text_with_a_nul_character_is_refused_with_its_row(
    client: TestClient, auth: dict[str, str]
) -> None:
    # Postgres JSON cannot store U+0000: refused up front, not lost after the compute.
    rows = [json.dumps(row) for row in sentiment_rows(4)]
    rows[2] = json.dumps({"text": "fine\u0000film", "label": "positive"})
    content = ("\n".join(rows) + "\n").encode()
    response = client.post("/v1/datasets", files={"file": ("nul.jsonl", content)}, headers=auth)
    problem = assert_problem(response, 422, "dataset_invalid")
    assert problem["row"] == 3 and "NUL" in problem["detail"]


def test_oversized_upload_and_body_are_413(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    line = b'{"text": "good film", "label": "positive"}\n'
    big = line * (settings.max_upload_bytes // len(line) + 1)
    response = client.post("/v1/datasets", files={"file": ("big.jsonl", big)}, headers=auth)
    assert_problem(response, 413, "payload_too_large")
    # Far over the limit: refused from Content-Length before the body is read.
    huge = big * 4
    response = client.post("/v1/datasets", files={"file": ("big.jsonl", huge)}, headers=auth)
    assert_problem(response, 413, "payload_too_large")
    # Without Content-Length (chunked), counted while streaming.
    chunks = iter([b'{"reference": ', b" " * settings.max_request_bytes, b"}"])
    response = client.post(
        "/v1/audits", content=chunks, headers={**auth, "Content-Type": "application/json"}
    )
    assert_problem(response, 413, "payload_too_large")
    assert not list(settings.upload_dir.rglob("*.part"))


def test_listing_is_newest_first_with_cursor_pagination_and_status_filter(
    client: TestClient, auth: dict[str, str]
) -> None:
    created = [submit(client, auth, audit_body(seed=seed)).json()["id"] for seed in range(5)]
    client.post(f"/v1/audits/{created[1]}/cancel", headers=auth)
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/audits", params=params, headers=auth).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))
    queued = client.get("/v1/audits", params={"status": "queued"}, headers=auth).json()
    assert [item["id"] for item in queued["items"]] == [
        audit_id for audit_id in reversed(created) if audit_id != created[1]
    ]
    both = client.get(
        "/v1/audits", params=[("status", "queued"), ("status", "cancelled")], headers=auth
    )
    assert len(both.json()["items"]) == 5
    bad_cursor = client.get("/v1/audits", params={"cursor": "garbage"}, headers=auth)
    assert_problem(bad_cursor, 422, "invalid_cursor")
    assert_problem(
        client.get("/v1/audits", params={"status": "done"}, headers=auth), 422, "invalid_request"
    )


def test_cancelling_a_queued_audit_is_immediate_and_final(
    client: TestClient, auth: dict[str, str]
) -> None:
    audit_id = submit(client, auth).json()["id"]
    response = client.post(f"/v1/audits/{audit_id}/cancel", headers=auth)
    assert response.status_code == 200, response.text
    audit = response.json()
    assert audit["status"] == "cancelled"
    assert audit["cancel_requested"] is True
    assert audit["finished_at"] is not None
    # Cancelling again is harmless; the result never appears.
    assert client.post(f"/v1/audits/{audit_id}/cancel", headers=auth).status_code == 200
    assert_problem(
        client.get(f"/v1/audits/{audit_id}/result", headers=auth), 409, "audit_not_succeeded"
    )


def test_callback_needs_a_configured_secret(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    body = audit_body(callback_url="http://127.0.0.1:9/hook")
    assert submit(client, auth, body).status_code == 202
    client.app.state.settings = settings.model_copy(update={"callback_secret": None})  # type: ignore[attr-defined]
    assert_problem(submit(client, auth, body), 422, "callback_not_configured")
    assert_problem(
        submit(client, auth, audit_body(callback_url="ftp://example.com/x")), 422, "invalid_request"
    )


def test_framework_errors_are_problems_too(client: TestClient, auth: dict[str, str]) -> None:
    assert_problem(client.get("/v1/nope", headers=auth), 404, "not_found")
    assert_problem(client.delete("/v1/audits", headers=auth), 405, "method_not_allowed")
    assert_problem(
        client.get("/v1/audits", params={"limit": 0}, headers=auth), 422, "invalid_request"
    )
