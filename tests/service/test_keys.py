"""API keys on real Postgres: `trustdiff keys create|list|revoke`, expiry, last use, and the
key checked before a request body is read."""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from service.app import create_app
from service.auth import create_api_key
from service.cli import main as service_cli
from service.db import Database
from service.models import ApiKey, utc_now
from service.settings import Settings
from tests.service.fixtures import new_api_key
from tests.service.live_server import serve_in_thread
from tests.service.test_api import assert_problem

pytestmark = pytest.mark.services


def keys_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = service_cli(["keys", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_keys_create_list_revoke(
    client: TestClient, clean_database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    code, token, err = keys_cli(capsys, "create", "--tenant", "acme", "--expires-in-days", "30")
    assert code == 0, err
    token = token.strip()
    prefix = token[:10]
    assert prefix in err and "valid until" in err
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/audits", headers=auth).status_code == 200

    code, listing, _ = keys_cli(capsys, "list")
    assert code == 0
    header, row = listing.strip().splitlines()
    assert header.split()[:2] == ["PREFIX", "TENANT"]
    assert row.startswith(prefix) and "acme" in row
    # Created, expires in 30 days, used just now, not revoked.
    assert len(row.split()) == 2 + 2 * 3 + 1

    assert keys_cli(capsys, "revoke", "td_nothere")[0] == 2
    code, _, err = keys_cli(capsys, "revoke", prefix)
    assert code == 0 and "revoked" in err
    assert_problem(client.get("/v1/audits", headers=auth), 401, "unauthorized")
    code, listing, _ = keys_cli(capsys, "list", "--tenant", "acme")
    assert listing.strip().splitlines()[1].split()[-2:] != ["-", "-"]


def test_expired_keys_are_refused_and_use_is_recorded(
    client: TestClient, clean_database: Database
) -> None:
    with clean_database.transaction() as session:
        api_key, token = create_api_key(
            session, "short-lived", expires_at=utc_now() + timedelta(hours=1)
        )
        key_id = api_key.id
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/audits", headers=auth).status_code == 200
    with clean_database.transaction() as session:
        used = session.get(ApiKey, key_id)
        assert used is not None and used.last_used_at is not None
        session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id)
            .values(expires_at=utc_now() - timedelta(seconds=1))
        )
    problem = assert_problem(client.get("/v1/audits", headers=auth), 401, "unauthorized")
    assert "expired" in problem["detail"]


def raw_exchange(url: str, request: bytes, *, then_wait_s: float = 0) -> bytes:
    """Send `request` bytes over one TCP connection and read what comes back."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as connection:
        connection.sendall(request)
        time.sleep(then_wait_s)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_unauthenticated_upload_is_refused_before_its_body_is_read(
    parked_settings: Settings, clean_database: Database
) -> None:
    big = 48 * 1024 * 1024
    settings = parked_settings.model_copy(update={"max_upload_bytes": 64 * 1024 * 1024})
    with serve_in_thread(create_app(settings)) as url:
        # Headers only: a server that read the body first would wait for 48 MiB forever.
        answer = raw_exchange(
            url,
            b"POST /v1/datasets HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            + f"Content-Length: {big}\r\n\r\n".encode(),
        )
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 401"), answer[:300]
    assert b"application/problem+json" in rest


def test_a_stalled_body_is_a_408_problem(
    parked_settings: Settings, clean_database: Database
) -> None:
    token = new_api_key(clean_database, "slow-client")
    settings = parked_settings.model_copy(update={"body_read_timeout_s": 0.5})
    with serve_in_thread(create_app(settings)) as url:
        answer = raw_exchange(
            url,
            b"POST /v1/audits HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n".encode()
            + b'{"reference": ',
        )
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"request_timeout" in answer


def test_tenant_names_must_be_folder_names(
    clean_database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("../etc", "a/b", ".", "..", "", "x" * 65, "white space"):
        code, out, err = keys_cli(capsys, "create", "--tenant", name)
        assert code == 2 and not out and "tenant name" in err, name
