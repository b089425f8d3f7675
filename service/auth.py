"""API keys: creation, hashed storage and the bearer-token lookup that yields the tenant."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, or_, select, update
from sqlalchemy.orm import Session

from service.db import Database
from service.models import ApiKey, Tenant, utc_now

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "td_"
# What a request without a usable key is told (401).
MISSING_KEY = "missing API key: send `Authorization: Bearer <key>`"
INVALID_KEY = "invalid, revoked or expired API key"


def hash_token(token: str) -> str:
    """sha256 (hex) of a token — how keys are stored and looked up.

    A fast unsalted hash is enough here, unlike for passwords: tokens carry 256 random bits,
    so nobody can guess one from its hash, and a deterministic hash lets each request find its
    key with one indexed lookup instead of trying a slow KDF against every stored key.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# Writing the time of every request would turn each read into a write; a minute is precise
# enough to tell a key in use from a forgotten one.
LAST_USE_RESOLUTION = timedelta(minutes=1)


# A tenant's name is its folder under the model and data roots: one plain path component.
TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def create_api_key(
    session: Session, tenant_name: str, *, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """A new key for `tenant_name` (created if new); the token is returned here only.

    Raises `ValueError` for a name that cannot be a folder name (see `TENANT_NAME`).
    """
    if not TENANT_NAME.fullmatch(tenant_name) or tenant_name in (".", ".."):
        raise ValueError(
            f"tenant name {tenant_name!r} must be 1-64 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit: it names the tenant's folder"
        )
    tenant = session.scalars(select(Tenant).where(Tenant.name == tenant_name)).one_or_none()
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey(
        tenant_id=tenant.id,
        token_sha256=hash_token(token),
        display_prefix=token[:10],
        expires_at=expires_at,
    )
    session.add(api_key)
    session.flush()
    return api_key, token


@dataclass(frozen=True, slots=True)
class TenantRef:
    """The tenant a request acts for, as its API key names it: all the routes need of it."""

    id: uuid.UUID
    name: str


@dataclass(frozen=True, slots=True)
class KeyMatch:
    """An unrevoked, unexpired key that a token matched, with its tenant."""

    key_id: uuid.UUID
    last_used_at: datetime | None
    tenant: TenantRef

    @property
    def needs_use_recorded(self) -> bool:
        return self.last_used_at is None or utc_now() - self.last_used_at >= LAST_USE_RESOLUTION


def key_match_statement(token: str) -> Select[uuid.UUID, datetime | None, uuid.UUID, str]:
    """The unrevoked, unexpired key with this token and its tenant, as `key_match_from_row`
    reads them; routes that read join their rows to it (one round trip, not two)."""
    return (
        select(ApiKey.id, ApiKey.last_used_at, Tenant.id, Tenant.name)
        .join(Tenant, ApiKey.tenant_id == Tenant.id)
        .where(
            ApiKey.token_sha256 == hash_token(token),
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > utc_now()),
        )
    )


def key_match_from_row(row: Sequence[Any]) -> KeyMatch:
    """The `KeyMatch` in the first columns of a row of `key_match_statement`."""
    key_id, last_used_at, tenant_id, tenant_name = row[:4]
    return KeyMatch(key_id, last_used_at, TenantRef(tenant_id, tenant_name))


def match_key(session: Session, token: str) -> KeyMatch | None:
    """The unrevoked, unexpired key with this token and its tenant (one query), or None."""
    row = session.execute(key_match_statement(token)).one_or_none()
    return None if row is None else key_match_from_row(row)


def record_key_use(session: Session, key_id: uuid.UUID) -> None:
    """Set the key's last use to now (a short write of its own, not the request's)."""
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utc_now()))


def record_use_if_due(database: Database, match: KeyMatch) -> None:
    """Record the key's use when the last record is older than `LAST_USE_RESOLUTION`."""
    if not match.needs_use_recorded:
        return
    try:
        with database.transaction() as session:
            record_key_use(session, match.key_id)
    except Exception:
        # Bookkeeping only: a busy database must not turn a valid key away.
        logger.warning("could not record the use of API key %s", match.key_id, exc_info=True)


def authenticate(database: Database, token: str) -> KeyMatch | None:
    """The usable key this token matches (its use recorded when due), or None."""
    with database.read_transaction() as session:
        match = match_key(session, token)
    if match is not None:
        record_use_if_due(database, match)
    return match


def list_api_keys(session: Session, tenant_name: str | None = None) -> list[tuple[ApiKey, str]]:
    """Every key with its tenant's name, oldest first; only `tenant_name`'s when given."""
    statement = select(ApiKey, Tenant.name).join(Tenant, ApiKey.tenant_id == Tenant.id)
    if tenant_name is not None:
        statement = statement.where(Tenant.name == tenant_name)
    rows = session.execute(statement.order_by(ApiKey.created_at, ApiKey.id))
    return [(api_key, name) for api_key, name in rows]


def revoke_api_key(session: Session, prefix: str) -> ApiKey:
    """Revoke the one key whose displayed prefix is `prefix` (from `trustdiff keys list`).

    Raises `LookupError` when no key, or more than one, has that prefix.
    """
    matches = list(session.scalars(select(ApiKey).where(ApiKey.display_prefix == prefix)))
    if len(matches) != 1:
        found = "no key" if not matches else f"{len(matches)} keys"
        raise LookupError(f"{found} with prefix {prefix!r}")
    api_key = matches[0]
    if api_key.revoked_at is None:
        api_key.revoked_at = utc_now()
        session.flush()
    return api_key
