"""Callback delivery, called directly: signed body, errors raised for the task to retry."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import pytest
from sqlalchemy import select

from service import transitions
from service.audits import create_audit
from service.auth import create_api_key
from service.db import Database
from service.models import Audit, Tenant
from service.schemas import AuditCreate
from service.settings import Settings
from tests.service.callback_server import CallbackServer
from tests.service.fixtures import audit_body
from workers.callbacks import (
    CallbackDeliveryError,
    deliver_callback,
    record_callback_failure,
    sign_body,
)

pytestmark = pytest.mark.services


def failed_audit_with_callback(database: Database, settings: Settings, url: str) -> uuid.UUID:
    with database.transaction() as session:
        create_api_key(session, "tenant-callbacks")
        tenant = session.scalars(select(Tenant).where(Tenant.name == "tenant-callbacks")).one()
        audit, _ = create_audit(
            session,
            tenant,
            AuditCreate.model_validate(audit_body(callback_url=url)),
            idempotency_key=None,
            settings=settings,
        )
        audit_id = audit.id
    with database.transaction() as session:
        transitions.start_running(session, audit_id, worker="w:1")
    with database.transaction() as session:
        transitions.mark_failed(session, audit_id, code="label_mismatch", message="labels differ")
    return audit_id


def test_signature_is_hmac_sha256_of_the_exact_body() -> None:
    body = b'{"status":"succeeded"}'
    expected = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert sign_body(body, "k") == f"sha256={expected}"


def test_delivery_is_signed_and_failures_raise_for_retry(
    parked_database: Database, parked_settings: Settings
) -> None:
    with CallbackServer(fail_first=1) as receiver:
        audit_id = failed_audit_with_callback(parked_database, parked_settings, receiver.url)
        kwargs = {"database": parked_database, "settings": parked_settings}
        with pytest.raises(CallbackDeliveryError, match="503"):
            deliver_callback(audit_id, **kwargs)
        assert deliver_callback(audit_id, **kwargs) is True
        # Delivered once: a duplicate task does not post again.
        assert deliver_callback(audit_id, **kwargs) is True
    assert receiver.attempts == 2
    (delivery,) = receiver.deliveries
    secret = parked_settings.callback_secret.get_secret_value()  # type: ignore[union-attr]
    assert delivery.headers["X-Trustdiff-Signature"] == sign_body(delivery.body, secret)
    payload = json.loads(delivery.body)
    assert payload["status"] == "failed"
    assert payload["error"] == {"code": "label_mismatch", "message": "labels differ"}
    assert payload["gate"] is None
    with parked_database.transaction() as session:
        audit = session.get(Audit, audit_id)
        assert audit is not None and audit.callback_delivered_at is not None


def test_unreachable_receiver_raises_and_abandonment_is_recorded(
    parked_database: Database, parked_settings: Settings
) -> None:
    audit_id = failed_audit_with_callback(
        parked_database, parked_settings, "http://127.0.0.1:1/closed"
    )
    with pytest.raises(CallbackDeliveryError):
        deliver_callback(audit_id, database=parked_database, settings=parked_settings)
    record_callback_failure(audit_id, "gave up after 4 attempts", database=parked_database)
    with parked_database.transaction() as session:
        audit = session.get(Audit, audit_id)
        assert audit is not None
        assert audit.callback_delivered_at is None
        assert audit.callback_error == "gave up after 4 attempts"
