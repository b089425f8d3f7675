"""Hostile inputs on real Postgres: each is refused with a 4xx problem and a stable code,
never a 500 (which would also drop the client's keep-alive connection)."""

from __future__ import annotations

import base64
import json
import shutil
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.settings import Settings
from tests.conftest import TinyAssets
from tests.service.fixtures import audit_body
from tests.service.test_api import assert_problem, submit

pytestmark = pytest.mark.services


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


HUGE_INTEGER = "9" * 5_000


def crafted_cursor(created_at: str) -> str:
    raw = json.dumps([created_at, str(uuid.uuid4())]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def upload(client: TestClient, auth: dict[str, str], content: bytes, filename: str = "d.jsonl"):  # type: ignore[no-untyped-def]
    return client.post(
        "/v1/datasets", files={"file": (filename, content, "text/plain")}, headers=auth
    )


def test_blank_and_nul_paths_are_invalid_requests(client: TestClient, auth: dict[str, str]) -> None:
    for body in (
        audit_body(reference={"path": "   "}),
        audit_body(candidate={"path": "\t"}),
        audit_body(dataset={"path": " "}),
        audit_body(reference={"path": "reference\u0000"}),
    ):
        problem = assert_problem(submit(client, auth, body), 422, "invalid_request")
        assert problem["errors"][0]["loc"][:2] in (
            ["body", "reference"],
            ["body", "candidate"],
            ["body", "dataset"],
        )


def test_nul_anywhere_in_a_request_is_refused(client: TestClient, auth: dict[str, str]) -> None:
    for body in (
        audit_body(label_mapping={"pos\u0000": "pos"}),
        audit_body(dataset={"path": "sentiment.jsonl", "text_field": "te\u0000xt"}),
    ):
        assert_problem(submit(client, auth, body), 422, "invalid_request")


@pytest.mark.parametrize(
    "created_at",
    ["2024-01-01T00:00:00", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "nope"],
)
def test_crafted_list_cursors_are_invalid_cursor(
    client: TestClient, auth: dict[str, str], created_at: str
) -> None:
    response = client.get("/v1/audits", params={"cursor": crafted_cursor(created_at)}, headers=auth)
    assert_problem(response, 422, "invalid_cursor")


def test_far_future_cursor_is_an_empty_page_or_refused(
    client: TestClient, auth: dict[str, str]
) -> None:
    cursor = crafted_cursor("9999-12-31T23:59:59+00:00")
    response = client.get("/v1/audits", params={"cursor": cursor}, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["items"] == []


@pytest.mark.parametrize(
    ("line", "row"),
    [
        (nested(100_000), 2),
        ('{"text": "x", "label": ' + HUGE_INTEGER + "}", 2),
        ('{"text": "x", "label": "pos", "\\u0000": 1}', 2),
        ('{"text": "x", "label": "p\\u0000s"}', 2),
    ],
    ids=["nested-100000", "5000-digit-integer", "nul-in-key", "nul-in-label"],
)
def test_hostile_dataset_lines_are_refused_with_their_row(
    client: TestClient,
    auth: dict[str, str],
    tiny_assets: TinyAssets,
    settings: Settings,
    line: str,
    row: int,
) -> None:
    content = '{"text": "good", "label": "pos"}\n' + line + "\n"
    # Uploads are capped at 64 KiB in these tests; 30,000 deep is as fatal as 100,000.
    uploaded = content.replace(nested(100_000), nested(30_000)).encode()
    problem = assert_problem(upload(client, auth, uploaded), 422, "dataset_invalid")
    assert problem["row"] == row
    # The same file under the data root: refused before queueing, same code and row. (The
    # tests' 64 KiB file quota would refuse the 100,000-deep line before it is read.)
    client.app.state.settings = settings.model_copy(update={"max_upload_bytes": 1 << 20})  # type: ignore[attr-defined]
    name = f"hostile-{uuid.uuid4().hex}.jsonl"
    (tiny_assets.data_root / name).write_text(content)
    try:
        body = audit_body(dataset={"path": name})
        problem = assert_problem(submit(client, auth, body), 422, "dataset_invalid")
        assert problem["row"] == row
    finally:
        (tiny_assets.data_root / name).unlink()


def test_an_uploads_file_name_is_a_printable_label(
    client: TestClient, auth: dict[str, str]
) -> None:
    # Written by hand: HTTP clients escape these bytes, an attacker does not.
    boundary = "hostile-boundary"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="evil\x00name\x07.jsonl"\r\n'
        "Content-Type: text/plain\r\n\r\n"
        '{"text": "fine", "label": "pos"}\n\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    response = client.post(
        "/v1/datasets",
        content=body,
        headers={**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["filename"] == "evilname.jsonl"


@pytest.mark.parametrize(
    ("config_text", "what"),
    [
        ('{"id2label": ' + "[" * 100_000 + "]" * 100_000 + "}", "deep"),
        ('{"num_labels": ' + HUGE_INTEGER + "}", "huge"),
        ('{"num_labels": 1' + "0" * 12 + "}", "many labels"),
    ],
    ids=["nested-100000", "5000-digit-integer", "10^12-labels"],
)
def test_hostile_checkpoint_configs_are_checkpoint_invalid(
    client: TestClient,
    auth: dict[str, str],
    tiny_assets: TinyAssets,
    config_text: str,
    what: str,
) -> None:
    name = f"hostile-{uuid.uuid4().hex}"
    folder = tiny_assets.model_root / name
    shutil.copytree(tiny_assets.reference, folder)
    try:
        (folder / "config.json").write_text(config_text)
        problem = assert_problem(
            submit(client, auth, audit_body(candidate={"path": name})), 422, "checkpoint_invalid"
        )
        assert "config" in problem["detail"], what
    finally:
        shutil.rmtree(folder)


def test_overlong_callback_url_is_refused(client: TestClient, auth: dict[str, str]) -> None:
    # Under pydantic's own URL limit before normalisation, past the 2,048 column after it:
    # each é becomes %C3%A9.
    url = "https://example.com/" + "\u00e9" * 700
    problem = assert_problem(
        submit(client, auth, audit_body(callback_url=url)), 422, "invalid_request"
    )
    assert "2048" in problem["detail"]


def test_no_response_spells_out_a_local_path(
    client: TestClient, auth: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    responses = [
        submit(client, auth, audit_body(reference={"path": "../x"})),
        submit(client, auth, audit_body(candidate={"path": "nope"})),
        submit(client, auth, audit_body(dataset={"path": "nope.jsonl"})),
        client.get("/v1/readyz"),
    ]
    for response in responses:
        for root in (settings.model_root, settings.data_root, settings.home):
            assert str(root.resolve()) not in response.text
            assert str(root) not in response.text
    assert "<model root>" in responses[1].text
