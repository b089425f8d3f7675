"""Shared route dependencies: settings, the request's session, the caller's tenant, lookups."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.orm import Session, defer

from service.auth import (
    INVALID_KEY,
    MISSING_KEY,
    KeyMatch,
    TenantRef,
    authenticate,
    key_match_from_row,
    key_match_statement,
    match_key,
    record_use_if_due,
)
from service.db import Database
from service.key_gate import TENANT_STATE
from service.models import Audit, Dataset, Tenant
from service.problems import NotFound, Problem, Unauthorized
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


def match_key_with_audits(
    session: Session,
    token: str,
    conditions: Sequence[ColumnElement[bool]],
    *,
    order_by: Sequence[ColumnElement[Any]] = (),
    limit: int | None = None,
) -> tuple[KeyMatch, list[Audit]] | None:
    """The token's key and its tenant's audits that meet `conditions`, in one statement (None
    for an invalid, revoked or expired key).

    The audits are outer-joined to the key's one row, so a valid key with no such audit still
    comes back; `order_by` and `limit` apply to the audits.
    """
    statement = (
        key_match_statement(token)
        .add_columns(Audit)
        .outerjoin(Audit, and_(Audit.tenant_id == Tenant.id, *conditions))
        .options(defer(Audit.config))
        .order_by(*order_by)
        .limit(limit)
    )
    rows = session.execute(statement).all()
    if not rows:
        return None
    # The audit is the row's last column, after the key's.
    audits = [row[-1] for row in rows if row[-1] is not None]
    return key_match_from_row(rows[0]), audits


async def read_audits_as_tenant(
    database: Database,
    token: str,
    conditions: Callable[[], Sequence[ColumnElement[bool]]],
    *,
    order_by: Sequence[ColumnElement[Any]] = (),
    limit: int | None = None,
) -> list[Audit]:
    """Check the key and read its tenant's audits meeting `conditions()`, in one statement
    (`match_key_with_audits`) and one hand-off to the thread pool.

    For the routes clients poll: a plain `def` route with a session and the tenant as
    dependencies costs half a dozen hand-offs (the key check, the session's start and end,
    each dependency, the handler, the response validation), and under load the hand-offs,
    not the queries, set the latency; each round trip to the database costs CPU on both
    sides. `conditions` raising a `Problem` (a malformed id or cursor) is answered after the
    key is checked, as on every route: an invalid key is a 401 whatever else is wrong.
    """

    def run() -> list[Audit]:
        with database.read_transaction() as session:
            try:
                where = conditions()
            except Problem:
                if match_key(session, token) is None:
                    raise Unauthorized(INVALID_KEY) from None
                raise
            found = match_key_with_audits(session, token, where, order_by=order_by, limit=limit)
        if found is None:
            raise Unauthorized(INVALID_KEY)
        match, audits = found
        record_use_if_due(database, match)
        return audits

    return await anyio.to_thread.run_sync(run)


CurrentTenant = Annotated[TenantRef, Depends(get_current_tenant)]


def _parse_id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{what} {value!r} does not exist") from None


def audit_id_condition(audit_id: str) -> ColumnElement[bool]:
    """The audit `audit_id` names (404 when it is not an id)."""
    return Audit.id == _parse_id(audit_id, "audit")


def find_audit(session: Session, tenant: TenantRef, audit_id: str) -> Audit:
    """The caller's audit; another tenant's audit is indistinguishable from a missing one."""
    audit = session.scalars(
        select(Audit)
        .where(audit_id_condition(audit_id), Audit.tenant_id == tenant.id)
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
