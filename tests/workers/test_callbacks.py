"""Callback delivery, called directly: signed body, errors raised for the task to retry."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import uuid

import pytest
from sqlalchemy import select

from service import transitions
from service.audits import create_audit
from service.auth import create_api_key
from service.callback_urls import ForbiddenCallback, check_callback_url
from service.db import Database
from service.models import Audit, Tenant
from service.problems import UnprocessableContent
from service.schemas import AuditCreate
from service.settings import Settings
from tests.service.callback_server import CallbackServer
from tests.service.fixtures import audit_body, give_fixture_assets
from trustdiff.client import verify_callback_signature
from workers.callbacks import (
    CallbackDeliveryError,
    deliver_callback,
    record_callback_failure,
    sign_body,
)

pytestmark = pytest.mark.services


def failed_audit_with_callback(database: Database, settings: Settings, url: str) -> uuid.UUID:
    with database.transaction() as session:
        give_fixture_assets("tenant-callbacks")
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


def test_signature_is_hmac_sha256_of_timestamp_and_exact_body() -> None:
    body = b'{"status":"succeeded"}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    header = sign_body(body, "k", timestamp=1_700_000_000)
    assert header == f"t=1700000000,v1={expected}"
    assert verify_callback_signature(body, header, "k", now=1_700_000_100)
    # Replayed after the window, tampered with, or signed with another key: refused.
    assert not verify_callback_signature(body, header, "k", now=1_700_000_000 + 301)
    assert not verify_callback_signature(body + b" ", header, "k", now=1_700_000_000)
    assert not verify_callback_signature(body, header, "other", now=1_700_000_000)
    forged = header.replace("t=1700000000", "t=1700000200")
    assert not verify_callback_signature(body, forged, "k", now=1_700_000_200)


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
    assert verify_callback_signature(
        delivery.body, delivery.headers["X-Trustdiff-Signature"], secret
    )
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


def stored_callback_error(database: Database, audit_id: uuid.UUID) -> str | None:
    with database.transaction() as session:
        audit = session.get(Audit, audit_id)
        assert audit is not None
        return audit.callback_error


def test_callbacks_to_non_public_addresses_are_refused_at_send_time(
    parked_database: Database, parked_settings: Settings
) -> None:
    # The gateway cannot see where a name points; the worker checks the resolved address.
    # This machine's own name resolves to loopback, and so does nothing get sent.
    strict = parked_settings.model_copy(update={"callback_allowed_networks": []})
    with CallbackServer() as receiver:
        port = receiver.server.server_address[1]
        url = f"http://{socket.gethostname()}:{port}/hook"
        audit_id = failed_audit_with_callback(parked_database, parked_settings, url)
        assert deliver_callback(audit_id, database=parked_database, settings=strict) is False
    assert receiver.attempts == 0
    assert "not public" in (stored_callback_error(parked_database, audit_id) or "")


def test_delivery_connects_to_the_checked_address_with_the_urls_host(
    parked_database: Database, parked_settings: Settings
) -> None:
    with CallbackServer() as receiver:
        port = receiver.server.server_address[1]
        url = f"http://{socket.gethostname()}:{port}/hook"
        audit_id = failed_audit_with_callback(parked_database, parked_settings, url)
        assert deliver_callback(audit_id, database=parked_database, settings=parked_settings)
    (delivery,) = receiver.deliveries
    assert delivery.headers["Host"] == f"{socket.gethostname()}:{port}"


def test_redirects_are_not_followed(parked_database: Database, parked_settings: Settings) -> None:
    with CallbackServer(redirect_to="http://169.254.169.254/latest/meta-data") as receiver:
        audit_id = failed_audit_with_callback(parked_database, parked_settings, receiver.url)
        assert (
            deliver_callback(audit_id, database=parked_database, settings=parked_settings) is False
        )
    assert receiver.attempts == 1
    assert "redirect" in (stored_callback_error(parked_database, audit_id) or "")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://[::1]/x",
        "http://localhost/x",
        "http://0x7f000001/x",
        "http://2130706433/x",
        "http://10.0.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[::ffff:127.0.0.1]/x",
        "http://100.64.0.1/x",
    ],
)
def test_gateway_refuses_non_public_callback_urls_by_default(
    parked_database: Database, parked_settings: Settings, url: str
) -> None:
    strict = parked_settings.model_copy(update={"callback_allowed_networks": []})
    with parked_database.transaction() as session:
        give_fixture_assets("tenant-ssrf")
        create_api_key(session, "tenant-ssrf")
        tenant = session.scalars(select(Tenant).where(Tenant.name == "tenant-ssrf")).one()
        with pytest.raises(UnprocessableContent) as refused:
            create_audit(
                session,
                tenant,
                AuditCreate.model_validate(audit_body(callback_url=url)),
                idempotency_key=None,
                settings=strict,
            )
    assert refused.value.code == "callback_url_forbidden"


def test_allowed_hosts_narrow_where_callbacks_may_go(parked_settings: Settings) -> None:
    narrowed = parked_settings.model_copy(
        update={"callback_allowed_hosts": ["hooks.example.com", "*.ci.example.org"]}
    )
    assert check_callback_url("https://hooks.example.com/x", narrowed) == "hooks.example.com"
    assert check_callback_url("https://a.ci.example.org/x", narrowed) == "a.ci.example.org"
    for url in ("https://example.com/x", "https://evil.com/?hooks.example.com"):
        with pytest.raises(ForbiddenCallback):
            check_callback_url(url, narrowed)
