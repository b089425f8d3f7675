"""Deliver an audit's final status to its `callback_url`, signed with HMAC-SHA256."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from typing import Any

import httpx
from sqlalchemy import select

from service.db import Database
from service.models import Audit, utc_now
from service.schemas import AuditOut
from service.settings import Settings

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Trustdiff-Signature"


class CallbackDeliveryError(Exception):
    """The receiver did not answer 2xx (or could not be reached); worth retrying."""


def sign_body(body: bytes, secret: str) -> str:
    """The `X-Trustdiff-Signature` value: `sha256=` + hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def callback_body(audit: Audit) -> bytes:
    resource = AuditOut.from_audit(audit).model_dump(mode="json")
    document: dict[str, Any] = {
        "event": "audit.finished",
        "audit_id": resource["id"],
        "status": resource["status"],
        "passed": resource["passed"],
        "gate": audit.gate,
        "error": resource["error"],
        "finished_at": resource["finished_at"],
        "links": resource["links"],
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("utf-8")


def deliver_callback(audit_id: str | uuid.UUID, *, database: Database, settings: Settings) -> bool:
    """POST the audit's final status and gate once; True when delivered (or nothing to do).

    Raises `CallbackDeliveryError` on a non-2xx answer or a network error, for the task to
    retry with backoff. The same body bytes are signed and sent on every attempt.
    """
    with database.transaction() as session:
        audit = session.scalars(
            select(Audit).where(Audit.id == uuid.UUID(str(audit_id)))
        ).one_or_none()
        if audit is None or audit.callback_url is None or audit.callback_delivered_at:
            return True
        url, body = audit.callback_url, callback_body(audit)
    if settings.callback_secret is None:
        record_callback_failure(
            audit_id, "no TRUSTDIFF_CALLBACK_SECRET configured", database=database
        )
        return False
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "trustdiff-callback",
        SIGNATURE_HEADER: sign_body(body, settings.callback_secret.get_secret_value()),
    }
    try:
        response = httpx.post(
            url, content=body, headers=headers, timeout=settings.callback_timeout_s
        )
    except httpx.HTTPError as error:
        raise CallbackDeliveryError(f"POST {url} failed: {error}") from error
    if not response.is_success:
        raise CallbackDeliveryError(f"POST {url} answered {response.status_code}")
    with database.transaction() as session:
        audit = session.get(Audit, uuid.UUID(str(audit_id)))
        if audit is not None:
            audit.callback_delivered_at = utc_now()
            audit.callback_error = None
    logger.info("audit %s: callback delivered to %s", audit_id, url)
    return True


def record_callback_failure(audit_id: str | uuid.UUID, reason: str, *, database: Database) -> None:
    """Give up on the callback, keeping the reason on the audit for its owner to read."""
    logger.warning("audit %s: callback abandoned: %s", audit_id, reason)
    with database.transaction() as session:
        audit = session.get(Audit, uuid.UUID(str(audit_id)))
        if audit is not None:
            audit.callback_error = reason[:2000]
