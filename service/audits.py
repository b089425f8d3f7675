"""Audit use cases: create (validated, idempotent), list, cancel."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import transitions
from service.auth import TenantRef
from service.callback_urls import ForbiddenCallback, check_callback_url
from service.jobs import RUN_AUDIT_TASK, enqueue_after_commit
from service.models import Audit, AuditStatus, Dataset
from service.problems import Conflict, UnprocessableContent, engine_problem, redacted
from service.quotas import check_concurrent_audits, check_work_quotas, refuse_over_quota
from service.schemas import AuditCreate
from service.settings import DATA_ROOT, UPLOAD_ROOT, Settings
from trustdiff.config import AuditConfig, DatasetSpec
from trustdiff.errors import TrustdiffError
from trustdiff.paths import resolve_under_root


def canonical_sha256(document: Any) -> str:
    """sha256 of a JSON document with sorted keys, so key order and spacing do not matter."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _engine_config(
    session: Session, tenant: TenantRef, body: AuditCreate
) -> tuple[AuditConfig, str, uuid.UUID | None]:
    """The engine's AuditConfig for `body`, which root its dataset path is under, the upload."""
    dataset_id = None
    if isinstance(body.dataset, DatasetSpec):
        dataset_spec, dataset_root = body.dataset, DATA_ROOT
    else:
        upload = session.scalars(
            select(Dataset).where(Dataset.id == body.dataset.id, Dataset.tenant_id == tenant.id)
        ).one_or_none()
        if upload is None:
            raise UnprocessableContent(
                f"dataset {body.dataset.id} does not exist", code="dataset_not_found"
            )
        dataset_id, dataset_root = upload.id, UPLOAD_ROOT
        dataset_spec = DatasetSpec(
            path=upload.storage_path,
            format=upload.format,  # type: ignore[arg-type]  # validated at upload
            text_field=upload.text_field,
            text_pair_field=upload.text_pair_field,
            label_field=upload.label_field,
            limit=body.dataset.limit,
            sampling=body.dataset.sampling,
        )
    fields = body.model_dump(exclude={"dataset", "callback_url"})
    try:
        config = AuditConfig.model_validate({**fields, "dataset": dataset_spec.model_dump()})
    except ValidationError as error:
        raise UnprocessableContent(str(error), code="config_invalid") from error
    return config, dataset_root, dataset_id


def _validate_before_queueing(
    config: AuditConfig, dataset_root: str, tenant: TenantRef, settings: Settings
) -> None:
    """The engine's cheap checks: paths inside the tenant's roots, checkpoints and dataset
    readable. Engine errors become problems naming the tenant's roots, not this machine's
    folders."""
    # The engine's validation imports its reader modules, not torch; imported here so the
    # gateway's import stays light even if the engine package grows.
    from trustdiff.audit import validate_audit

    data_root = settings.dataset_folder(dataset_root, tenant.name)
    try:
        # Sized before it is read: validation reads every row of the file.
        dataset_path = resolve_under_root(config.dataset.path, data_root, what="dataset")
        if dataset_path.is_file():
            refuse_over_quota(
                "the dataset file's size in bytes",
                dataset_path.stat().st_size,
                settings.max_upload_bytes,
                "max_upload_bytes",
            )
        validated = validate_audit(
            config,
            model_root=settings.tenant_model_root(tenant.name),
            data_root=data_root,
            shared_model_root=settings.shared_model_root,
        )
        refuse_over_quota(
            "the number of dataset rows the audit reads",
            len(validated.dataset),
            settings.max_dataset_rows,
            "max_dataset_rows",
        )
    except TrustdiffError as error:
        redact = partial(settings.redact_paths, tenant_name=tenant.name)
        problem = engine_problem(error)
        problem.detail, problem.extra = redact(problem.detail), redacted(problem.extra, redact)
        raise problem from error


def _find_idempotent(session: Session, tenant: TenantRef, key: str) -> Audit | None:
    return session.scalars(
        select(Audit).where(Audit.tenant_id == tenant.id, Audit.idempotency_key == key)
    ).one_or_none()


def _replay(existing: Audit, request_sha256: str) -> Audit:
    if existing.request_sha256 != request_sha256:
        raise Conflict(
            "this Idempotency-Key was already used with a different request body",
            code="idempotency_key_reused",
            extra={"audit_id": str(existing.id)},
        )
    return existing


def create_audit(
    session: Session,
    tenant: TenantRef,
    body: AuditCreate,
    *,
    idempotency_key: str | None,
    settings: Settings,
) -> tuple[Audit, bool]:
    """A new queued audit, or the one an earlier request with this key created.

    Returns `(audit, created)`. Everything cheap is checked here, before anything is queued:
    paths stay inside their roots and exist, checkpoints are safetensors folders with
    readable, matching labels, the dataset file exists. The job is sent after the commit.
    """
    request_json = body.model_dump(mode="json")
    request_sha256 = canonical_sha256(request_json)
    if idempotency_key is not None:
        existing = _find_idempotent(session, tenant, idempotency_key)
        if existing is not None:
            return _replay(existing, request_sha256), False
    if body.callback_url is not None and settings.callback_secret is None:
        raise UnprocessableContent(
            "callback_url needs a signing secret: set TRUSTDIFF_CALLBACK_SECRET on the service",
            code="callback_not_configured",
        )
    if body.callback_url is not None:
        try:
            check_callback_url(str(body.callback_url), settings)
        except ForbiddenCallback as error:
            raise UnprocessableContent(str(error), code="callback_url_forbidden") from None
    config, dataset_root, dataset_id = _engine_config(session, tenant, body)
    check_work_quotas(config, settings)
    check_concurrent_audits(session, tenant, settings)
    _validate_before_queueing(config, dataset_root, tenant, settings)
    audit = Audit(
        tenant_id=tenant.id,
        status=AuditStatus.QUEUED,
        request=request_json,
        request_sha256=request_sha256,
        idempotency_key=idempotency_key,
        config=config.model_dump(mode="json"),
        dataset_root=dataset_root,
        dataset_id=dataset_id,
        callback_url=str(body.callback_url) if body.callback_url else None,
        progress_stage="queued",
        progress_done=0,
        progress_total=0,
    )
    winner = _insert_unless_raced(session, tenant, audit)
    if winner is not None:
        return _replay(winner, request_sha256), False
    enqueue_after_commit(session, RUN_AUDIT_TASK, audit.id)
    return audit, True


def _insert_unless_raced(session: Session, tenant: TenantRef, audit: Audit) -> Audit | None:
    """Insert `audit`; None, or the audit a concurrent request with the same key inserted."""
    try:
        # A savepoint: losing the race to a concurrent request with the same key must leave
        # the outer transaction usable for reading the winner.
        with session.begin_nested():
            session.add(audit)
    except IntegrityError:
        if audit.idempotency_key is None:
            raise
        winner = _find_idempotent(session, tenant, audit.idempotency_key)
        if winner is None:
            raise
        return winner
    return None


def cancel_audit(session: Session, audit: Audit) -> Audit:
    return transitions.request_cancel(session, audit.id)


def _encode_cursor(audit: Audit) -> str:
    raw = json.dumps([audit.created_at.isoformat(), str(audit.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at_text, audit_id = json.loads(raw)
        created_at = datetime.fromisoformat(created_at_text)
        # Cursors this API writes are UTC; a naive or unrepresentable time was crafted.
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        return created_at.astimezone(UTC), uuid.UUID(audit_id)
    except (binascii.Error, ValueError, TypeError, OverflowError, RecursionError) as error:
        raise UnprocessableContent(
            "the cursor is not one this API returned", code="invalid_cursor"
        ) from error


# Newest first; (created_at, id) is also the keyset the cursor continues from.
NEWEST_FIRST = (Audit.created_at.desc(), Audit.id.desc())


def audit_page_conditions(
    *, status: list[AuditStatus] | None, cursor: str | None
) -> list[ColumnElement[bool]]:
    """What a page of audits (newest first, see `NEWEST_FIRST`) selects beyond its tenant:
    the statuses asked for, and the audits after the cursor's (422 for a foreign cursor).

    Keyset pagination on (created_at, id): pages stay stable while new audits arrive.
    """
    conditions: list[ColumnElement[bool]] = []
    if status:
        conditions.append(Audit.status.in_(status))
    if cursor is not None:
        created_at, audit_id = _decode_cursor(cursor)
        conditions.append(
            or_(
                Audit.created_at < created_at,
                (Audit.created_at == created_at) & (Audit.id < audit_id),
            )
        )
    return conditions


def audit_page(audits: list[Audit], *, limit: int) -> tuple[list[Audit], str | None]:
    """The page and the cursor of the next, from up to `limit + 1` audits selected by
    `audit_page_conditions` in `NEWEST_FIRST` order."""
    next_cursor = _encode_cursor(audits[limit - 1]) if len(audits) > limit else None
    return audits[:limit], next_cursor
