"""Database engines and the one transaction scope: commit at the edge, then send queued jobs."""

from __future__ import annotations

import select
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from sqlalchemy import Engine, create_engine, event, make_url, tuple_, update
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from service.jobs import (
    DELIVER_CALLBACK_TASK,
    RUN_AUDIT_TASK,
    RUN_SHARD_TASK,
    PendingJob,
    discard_pending_jobs,
    has_pending_jobs,
    send_pending_jobs,
)
from service.models import Audit, AuditShard, utc_now

# An execution option: transactions on an engine carrying it only read (see `create_db_engine`).
READ_ONLY = "trustdiff_read_only"
SQLITE_BUSY_TIMEOUT_MS = 15_000


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite gets the settings a multi-process embedded default needs.

    `kwargs` go to `create_engine` (pool size and timeout: see `Database`).
    """
    if not url.startswith("sqlite"):
        engine = create_engine(url, **kwargs)
        event.listen(engine, "checkout", _refuse_closed_by_server)
        return engine
    # The gateway's thread pool may open a session in one thread and use it in another.
    engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy (below) emit BEGIN instead of pysqlite's deferred one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL: readers never block the writer nor wait for it (each reads its snapshot), so
        # the gateway answers GETs while the worker writes progress. A writer waits up to
        # the busy timeout for another writer's (short) transaction instead of failing.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            # A deferred BEGIN takes no lock: a snapshot for reading, nothing more.
            connection.exec_driver_sql("BEGIN")
            return
        # SQLite has no SELECT ... FOR UPDATE; taking the write lock at BEGIN gives the state
        # transitions the same "read, check, write" exclusivity a row lock gives on Postgres.
        # Only writers take it, and they hold it for one short transaction.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _refuse_closed_by_server(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Before a pooled Postgres connection is handed out: if the server closed it (a restart,
    a failover, `pg_terminate_backend`), the pool is told to open another instead.

    An idle connection has nothing to read unless the server ended it (its goodbye and the
    end of the stream are waiting), so a poll that finds it readable is the check; a pre-ping
    (`pool_pre_ping`) would cost a round trip to the server on every request.
    """
    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN)
    if poller.poll(0):
        # The pool discards it and checks out another (documented for `checkout` listeners).
        raise DisconnectionError("the server closed this connection while it was idle")


class Database:
    """An engine, its session factory, and the broker client that jobs are sent with."""

    def __init__(
        self,
        url: str,
        celery_app: Celery | None = None,
        *,
        pool_size: int = 5,
        pool_timeout_s: float = 30.0,
    ) -> None:
        # A few connections over `pool_size` for probes and the odd burst; past them a
        # checkout waits `pool_timeout_s`, then raises (the gateway answers 503, not 500).
        # (An in-memory SQLite database has one connection per thread and no pool to size.)
        in_memory = make_url(url).database in (None, "", ":memory:")
        pool = {"pool_size": pool_size, "max_overflow": 4, "pool_timeout": pool_timeout_s}
        self.engine = create_db_engine(url, **({} if in_memory else pool))
        # Objects stay readable after commit: responses are built from them after the commit.
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        read_options: dict[str, Any] = {READ_ONLY: True}
        if self.engine.dialect.name == "postgresql":
            # Under READ COMMITTED each statement reads its own snapshot whether or not a
            # transaction wraps it: reading in autocommit gives the same answers without the
            # BEGIN and COMMIT round trips, two of the five a polled read would otherwise make.
            read_options["isolation_level"] = "AUTOCOMMIT"
        self.read_sessionmaker = sessionmaker(
            self.engine.execution_options(**read_options), expire_on_commit=False
        )
        self.celery_app = celery_app

    @contextmanager
    def read_transaction(self) -> Iterator[Session]:
        """A session for reading only: on SQLite it takes no write lock (a deferred BEGIN, one
        snapshot for all its statements); on Postgres it reads in autocommit (each statement
        its own snapshot, as READ COMMITTED gives inside a transaction too).

        Nothing may be written through it: on SQLite a write would have to upgrade the
        snapshot to the write lock, which fails at once if another process wrote meanwhile.
        """
        with self.read_sessionmaker() as session:
            try:
                yield session
                # Ends the snapshot; unlike a rollback it keeps loaded objects readable.
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error, then sends its jobs.

        This is the only place that commits: service functions and transitions flush. On
        SQLite it holds the database's write lock from its first statement to its end:
        keep it short, and never open one to only read (see `read_transaction`).
        """
        with self.sessionmaker() as session:
            try:
                yield session
                if self.celery_app is None and has_pending_jobs(session):
                    raise RuntimeError("this Database has no broker client to send jobs with")
                session.commit()
            except BaseException:
                session.rollback()
                discard_pending_jobs(session)
                raise
            failed = self._send_jobs(session)
        if failed:
            self._record_enqueue_failures(failed)

    def _send_jobs(self, session: Session) -> list[PendingJob]:
        if self.celery_app is None:
            return []
        return send_pending_jobs(session, self.celery_app)

    def _record_enqueue_failures(self, failed: list[PendingJob]) -> None:
        """Mark what was committed but never sent, for the sweep to send again at once."""
        runs = [
            audit for job in failed if job.task_name == RUN_AUDIT_TASK for audit in job.audit_ids
        ]
        callbacks = [
            audit
            for job in failed
            if job.task_name == DELIVER_CALLBACK_TASK
            for audit in job.audit_ids
        ]
        shards = [
            (uuid.UUID(str(audit_id)), str(kind), int(index))
            for job in failed
            if job.task_name == RUN_SHARD_TASK
            for audit_id, kind, index in job.calls
        ]
        with self.sessionmaker.begin() as session:
            if runs:
                session.execute(
                    update(Audit).where(Audit.id.in_(runs)).values(enqueue_failed_at=utc_now())
                )
            if callbacks:
                session.execute(
                    update(Audit)
                    .where(Audit.id.in_(callbacks))
                    .values(callback_error="the callback could not be queued: broker unavailable")
                )
            if shards:
                # No send time: the sweep sends these shards again on its next round.
                session.execute(
                    update(AuditShard)
                    .where(
                        tuple_(AuditShard.audit_id, AuditShard.kind, AuditShard.index).in_(shards)
                    )
                    .values(queued_at=None)
                )

    def dispose(self) -> None:
        self.engine.dispose()
