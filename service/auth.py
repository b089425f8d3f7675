"""API keys: creation, hashed storage and the bearer-token lookup that yields the tenant."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import ApiKey, Tenant

TOKEN_PREFIX = "td_"


def hash_token(token: str) -> str:
    """sha256 (hex) of a token — how keys are stored and looked up.

    A fast unsalted hash is enough here, unlike for passwords: tokens carry 256 random bits,
    so nobody can guess one from its hash, and a deterministic hash lets each request find its
    key with one indexed lookup instead of trying a slow KDF against every stored key.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_api_key(session: Session, tenant_name: str) -> tuple[ApiKey, str]:
    """A new key for `tenant_name` (created if new); the token is returned here only."""
    tenant = session.scalars(select(Tenant).where(Tenant.name == tenant_name)).one_or_none()
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey(tenant_id=tenant.id, token_sha256=hash_token(token), display_prefix=token[:10])
    session.add(api_key)
    session.flush()
    return api_key, token


def tenant_for_token(session: Session, token: str) -> Tenant | None:
    """The tenant owning an unrevoked key with this token, or None."""
    statement = (
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.token_sha256 == hash_token(token), ApiKey.revoked_at.is_(None))
    )
    return session.scalars(statement).one_or_none()
