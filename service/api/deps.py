"""Shared route dependencies: settings, the request's session, the caller's tenant, lookups."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.auth import tenant_for_token
from service.db import Database
from service.models import Audit, Dataset, Tenant
from service.problems import NotFound, Unauthorized
from service.settings import Settings


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
# scope="function": commit (and send queued jobs) *before* the response goes out, so a client
# that reads the audit right after a 202 always finds it.
DbSession = Annotated[Session, Depends(get_db_session, scope="function")]

_bearer = HTTPBearer(auto_error=False, description="An API key from `trustdiff keys create`.")


def get_current_tenant(
    session: DbSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Tenant:
    if credentials is None:
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    tenant = tenant_for_token(session, credentials.credentials)
    if tenant is None:
        raise Unauthorized("invalid, revoked or expired API key")
    return tenant


CurrentTenant = Annotated[Tenant, Depends(get_current_tenant)]


def _parse_id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{what} {value!r} does not exist") from None


def get_audit_or_404(audit_id: str, tenant: CurrentTenant, session: DbSession) -> Audit:
    """The caller's audit; another tenant's audit is indistinguishable from a missing one."""
    audit = session.scalars(
        select(Audit).where(Audit.id == _parse_id(audit_id, "audit"), Audit.tenant_id == tenant.id)
    ).one_or_none()
    if audit is None:
        raise NotFound(f"audit {audit_id} does not exist")
    return audit


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
