"""The database under concurrency and faults: SQLite's WAL and reads that take no write lock,
503 + Retry-After instead of 500s when the gateway is saturated or its database is down, and
Postgres connections the server ended replaced without failing a request."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url, text

from service.app import create_app
from service.auth import create_api_key
from service.db import Database
from service.migrations import upgrade_to_head
from service.models import Audit, AuditStatus
from service.settings import Settings
from tests.service.fixtures import audit_body


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    return Settings(
        home=home,
        database_url=f"sqlite:///{home / 'trustdiff.sqlite'}",
        broker_url=f"sqla+sqlite:///{home / 'broker.sqlite'}",
    )


@pytest.fixture
def sqlite_database(sqlite_settings: Settings) -> Iterator[Database]:
    sqlite_settings.ensure_state_folders()
    upgrade_to_head(sqlite_settings.database_url)
    database = Database(sqlite_settings.database_url)
    yield database
    database.dispose()


def seed_audit(database: Database) -> tuple[str, str]:
    """A tenant's key and one queued audit row; returns (token, audit id)."""
    with database.transaction() as session:
        key, token = create_api_key(session, "laptop")
        audit = Audit(
            tenant_id=key.tenant_id,
            status=AuditStatus.QUEUED,
            request={},
            request_sha256="0" * 64,
            config={},
            dataset_root="data",
            progress_stage="queued",
        )
        session.add(audit)
        session.flush()
        return token, str(audit.id)


class WriteLock:
    """Another process's writer: holds SQLite's write lock (BEGIN IMMEDIATE) until released."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.connection.execute("BEGIN IMMEDIATE")
        self.connection.execute("UPDATE audits SET progress_done = 1")

    def release(self) -> None:
        self.connection.execute("COMMIT")
        self.connection.close()


def test_the_embedded_database_runs_in_wal_mode(sqlite_database: Database) -> None:
    with sqlite_database.read_transaction() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"


def test_gets_are_answered_while_another_writer_holds_the_write_lock(
    sqlite_settings: Settings, sqlite_database: Database
) -> None:
    token, audit_id = seed_audit(sqlite_database)
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(sqlite_settings), raise_server_exceptions=False) as client:
        lock = WriteLock(sqlite_settings.home / "trustdiff.sqlite")
        try:
            # A GET that took the write lock would wait out the busy timeout, then fail.
            one = client.get(f"/v1/audits/{audit_id}", headers=headers)
            page = client.get("/v1/audits", headers=headers)
            with sqlite_database.read_transaction() as session:
                assert session.get(Audit, uuid.UUID(audit_id)) is not None
        finally:
            lock.release()
        assert one.status_code == 200, one.text
        # It reads the last committed state, not the writer's uncommitted one.
        assert one.json()["progress"]["done"] == 0
        assert page.status_code == 200 and len(page.json()["items"]) == 1
        assert client.get(f"/v1/audits/{audit_id}", headers=headers).json()["progress"]["done"] == 1


def test_a_saturated_gateway_answers_503_with_retry_after(
    sqlite_settings: Settings, sqlite_database: Database
) -> None:
    token, audit_id = seed_audit(sqlite_database)
    headers = {"Authorization": f"Bearer {token}"}
    settings = sqlite_settings.model_copy(
        # Long enough for the POST to get the slot from a GET that holds it (no race), far
        # shorter than the POST's wait for the lock.
        update={"max_concurrent_requests": 1, "request_queue_timeout_s": 2.0}
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        lock = WriteLock(settings.home / "trustdiff.sqlite")
        # A write (cancel) waits for the lock another writer holds: it fills the one slot.
        answers: list[int] = []

        def start_writer() -> threading.Thread:
            writer = threading.Thread(
                target=lambda: answers.append(
                    client.post(f"/v1/audits/{audit_id}/cancel", headers=headers).status_code
                )
            )
            writer.start()
            return writer

        writer = start_writer()
        try:
            deadline = time.monotonic() + 30
            while (
                shed := client.get(f"/v1/audits/{audit_id}", headers=headers)
            ).status_code == 200:
                assert time.monotonic() < deadline, "the gateway never filled its one slot"
                if not writer.is_alive() and answers[-1:] == [503]:
                    # The first GET got the slot before the cancel: it was shed; send it again.
                    writer = start_writer()
                time.sleep(0.05)
            # Liveness is never shed.
            assert client.get("/v1/healthz").status_code == 200
        finally:
            lock.release()
            writer.join(30)
    assert shed.status_code == 503, shed.text
    assert shed.headers["retry-after"] == str(settings.retry_after_s)
    assert shed.headers["content-type"] == "application/problem+json"
    assert shed.json()["code"] == "overloaded"
    # The queued audit was cancelled once the lock came free (after any shed attempts).
    assert answers[-1] == 200 and set(answers[:-1]) <= {503}, answers


def test_an_unreachable_database_is_503_not_500(sqlite_settings: Settings) -> None:
    settings = sqlite_settings.model_copy(
        update={"database_url": "postgresql+psycopg://root@127.0.0.1:1/nowhere"}
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.get("/v1/audits", headers={"Authorization": "Bearer x"})
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "database_unavailable"
    assert response.headers["retry-after"] == str(settings.retry_after_s)
    assert "127.0.0.1" not in response.text


def _end_idle_connections(database_url: str) -> None:
    """Have Postgres end every idle connection to the database (as a restart would), and wait
    until they are gone."""
    with psycopg.connect(
        make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False),
        autocommit=True,
    ) as admin:
        ended = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state = 'idle'"
        ).fetchall()
        for (pid,) in ended:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)",
            ([pid for (pid,) in ended],),
        ).fetchone() != (0,):
            assert time.monotonic() < deadline, "Postgres did not end the connections"
            time.sleep(0.05)
    assert ended, "the gateway's pool held no idle connection"


def test_connections_the_server_closed_are_replaced_not_failed(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    # A read and a write put connections in the gateway's pool; Postgres then ends them.
    assert client.get("/v1/audits", headers=auth).status_code == 200
    assert client.post("/v1/audits", headers=auth, json=audit_body()).status_code == 202
    _end_idle_connections(settings.database_url)
    listed = client.get("/v1/audits", headers=auth)
    assert listed.status_code == 200, listed.text
    (audit,) = listed.json()["items"]
    assert client.get(f"/v1/audits/{audit['id']}", headers=auth).status_code == 200
    _end_idle_connections(settings.database_url)
    cancelled = client.post(f"/v1/audits/{audit['id']}/cancel", headers=auth)
    assert cancelled.status_code == 200, cancelled.text
