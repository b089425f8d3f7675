"""Shared route dependencies: settings, the request's session, the caller's tenant, lookups."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from service.auth import (
    INVALID_KEY,
    MISSING_KEY,
    TenantRef,
    authenticate,
    match_key,
    record_use_if_due,
)
from service.db import Database
from service.key_gate import TENANT_STATE
from service.models import Audit, Dataset
from service.problems import NotFound, Unauthorized
from service.settings import Settings

_T = TypeVar("_T")


# The dependencies that do no I/O are coroutines: FastAPI runs a plain `def` dependency in its
# thread pool, a hand-off that costs more than the dependency itself on every request.
async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


# Methods that only read: their session takes no write lock (see `Database.read_transaction`).
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_db_session(
    request: Request, database: Annotated[Database, Depends(get_database)]
) -> Iterator[Session]:
    """The request's session: committed when the handler returns, rolled back if it raises.

    A GET only reads: on SQLite it must never wait for, or hold, the write lock.
    """
    if request.method in READ_METHODS:
        with database.read_transaction() as session:
            yield session
        return
    with database.transaction() as session:
        yield session


AppSettings = Annotated[Settings, Depends(get_app_settings)]
AppDatabase = Annotated[Database, Depends(get_database)]
# scope="function": commit (and send queued jobs) *before* the response goes out, so a client
# that reads the audit right after a 202 always finds it.
DbSession = Annotated[Session, Depends(get_db_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="An API key from `trustdiff keys create`.")


async def get_bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The request's API key, not yet checked (`ApiKeyGate` refused requests without one)."""
    if credentials is None:
        raise Unauthorized(MISSING_KEY)
    return credentials.credentials


BearerToken = Annotated[str, Depends(get_bearer_token)]


async def get_current_tenant(
    request: Request, token: BearerToken, database: AppDatabase
) -> TenantRef:
    """The tenant of the request's API key: as `ApiKeyGate` found it, or looked up here for
    the requests it leaves to the routes (GETs)."""
    tenant: TenantRef | None = getattr(request.state, TENANT_STATE, None)
    if tenant is not None:
        return tenant
    match = await anyio.to_thread.run_sync(authenticate, database, token)
    if match is None:
        raise Unauthorized(INVALID_KEY)
    return match.tenant


async def read_as_tenant(
    database: Database, token: str, read: Callable[[Session, TenantRef], _T]
) -> _T:
    """Check the key and `read(session, tenant)` in one read transaction, in one hand-off to
    the thread pool.

    For the routes clients poll: a plain `def` route with a session and the tenant as
    dependencies costs half a dozen hand-offs (the key check, the session's start and end,
    each dependency, the handler, the response validation), and under load the hand-offs,
    not the queries, set the latency.
    """

    def run() -> _T:
        with database.read_transaction() as session:
            match = match_key(session, token)
            if match is None:
                raise Unauthorized(INVALID_KEY)
            value = read(session, match.tenant)
        record_use_if_due(database, match)
        return value

    return await anyio.to_thread.run_sync(run)


CurrentTenant = Annotated[TenantRef, Depends(get_current_tenant)]


def _parse_id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{what} {value!r} does not exist") from None


def find_audit(session: Session, tenant: TenantRef, audit_id: str) -> Audit:
    """The caller's audit; another tenant's audit is indistinguishable from a missing one."""
    audit = session.scalars(
        select(Audit)
        .where(Audit.id == _parse_id(audit_id, "audit"), Audit.tenant_id == tenant.id)
        .options(defer(Audit.config))
    ).one_or_none()
    if audit is None:
        raise NotFound(f"audit {audit_id} does not exist")
    return audit


def get_audit_or_404(audit_id: str, tenant: CurrentTenant, session: DbSession) -> Audit:
    return find_audit(session, tenant, audit_id)


def get_dataset_or_404(dataset_id: str, tenant: CurrentTenant, session: DbSession) -> Dataset:
    dataset = session.scalars(
        select(Dataset).where(
            Dataset.id == _parse_id(dataset_id, "dataset"), Dataset.tenant_id == tenant.id
        )
    ).one_or_none()
    if dataset is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    return dataset


CurrentAudit = Annotated[Audit, Depends(get_audit_or_404)]
CurrentDataset = Annotated[Dataset, Depends(get_dataset_or_404)]
