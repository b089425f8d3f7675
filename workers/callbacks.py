"""Deliver an audit's final status to its `callback_url`, signed with HMAC-SHA256."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from typing import Any

import httpx
from sqlalchemy import select

from service.callback_urls import CallbackTarget, ForbiddenCallback, resolve_callback_target
from service.db import Database
from service.models import Audit, utc_now
from service.schemas import AuditOut
from service.settings import Settings

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Trustdiff-Signature"


class CallbackDeliveryError(Exception):
    """The receiver did not answer 2xx (or could not be reached); worth retrying."""


def sign_body(body: bytes, secret: str, *, timestamp: int) -> str:
    """The `X-Trustdiff-Signature` value: `t=<unix seconds>,v1=<hex>`.

    `v1` is HMAC-SHA256 over `"<t>." + body` (the exact body bytes). The timestamp is signed
    with the body, so a receiver that refuses signatures older than a few minutes cannot be
    sent a recorded callback again (see the README for verification).
    """
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


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
    try:
        target = resolve_callback_target(url, settings)
    except ForbiddenCallback as error:
        record_callback_failure(audit_id, str(error), database=database)
        return False
    signature = sign_body(
        body, settings.callback_secret.get_secret_value(), timestamp=int(time.time())
    )
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "trustdiff-callback",
        SIGNATURE_HEADER: signature,
    }
    try:
        response = _post_to(target, url, body=body, headers=headers, settings=settings)
    except httpx.HTTPError as error:
        raise CallbackDeliveryError(f"POST {url} failed: {error}") from error
    if response.is_redirect:
        # A redirect could point anywhere, the checks above included: never followed.
        record_callback_failure(
            audit_id, f"POST {url} answered a redirect ({response.status_code})", database=database
        )
        return False
    if not response.is_success:
        raise CallbackDeliveryError(f"POST {url} answered {response.status_code}")
    with database.transaction() as session:
        audit = session.get(Audit, uuid.UUID(str(audit_id)))
        if audit is not None:
            audit.callback_delivered_at = utc_now()
            audit.callback_error = None
    logger.info("audit %s: callback delivered to %s", audit_id, url)
    return True


def _post_to(
    target: CallbackTarget,
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    settings: Settings,
) -> httpx.Response:
    """POST to the address that was checked, not to whatever the name resolves to now.

    The URL's host goes in the Host header and, for https, in SNI and certificate checks.
    """
    address = target.address
    netloc = f"[{address}]" if address.version == 6 else str(address)
    pinned = httpx.URL(url).copy_with(host=netloc.strip("[]"), port=target.port)
    default_port = 443 if pinned.scheme == "https" else 80
    host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
    with httpx.Client(timeout=settings.callback_timeout_s, follow_redirects=False) as client:
        return client.post(
            pinned,
            content=body,
            headers={**headers, "Host": host_header},
            extensions={"sni_hostname": target.host},
        )


def record_callback_failure(audit_id: str | uuid.UUID, reason: str, *, database: Database) -> None:
    """Give up on the callback, keeping the reason on the audit for its owner to read."""
    logger.warning("audit %s: callback abandoned: %s", audit_id, reason)
    with database.transaction() as session:
        audit = session.get(Audit, uuid.UUID(str(audit_id)))
        if audit is not None:
            audit.callback_error = reason[:2000]
