"""Routes for audits: submit, read, list, cancel, and the result, gate and report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from fastapi.responses import HTMLResponse, JSONResponse

from service import audits as audit_service
from service.api.deps import AppSettings, CurrentAudit, CurrentTenant, DbSession
from service.api.responses import PROBLEMS, problems
from service.models import Audit, AuditStatus
from service.problems import Conflict
from service.schemas import AuditCreate, AuditOut, AuditPage
from trustdiff.result import AuditResult, Gate

router = APIRouter(prefix="/audits", tags=["audits"])


def _require_succeeded(audit: Audit, what: str) -> None:
    if audit.status != AuditStatus.SUCCEEDED:
        raise Conflict(
            f"the audit's {what} exists once it has succeeded; it is {audit.status}",
            code="audit_not_succeeded",
            extra={"audit_status": audit.status},
        )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**PROBLEMS, **problems(408, 409, 413, 429)},
)
def create_audit(
    body: AuditCreate,
    response: Response,
    tenant: CurrentTenant,
    session: DbSession,
    settings: AppSettings,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            description="Retries with the same key and body return the same audit.",
        ),
    ] = None,
) -> AuditOut:
    """Validate the request cheaply and queue the audit."""
    audit, _created = audit_service.create_audit(
        session, tenant, body, idempotency_key=idempotency_key, settings=settings
    )
    response.headers["Location"] = f"/v1/audits/{audit.id}"
    return AuditOut.from_audit(audit)


@router.get("", responses=PROBLEMS)
def list_audits(
    tenant: CurrentTenant,
    session: DbSession,
    status: Annotated[list[AuditStatus] | None, Query(description="Repeat for several.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> AuditPage:
    """The caller's audits, newest first."""
    audits, next_cursor = audit_service.list_audits(
        session, tenant, status=status, limit=limit, cursor=cursor
    )
    return AuditPage(items=[AuditOut.from_audit(a) for a in audits], next_cursor=next_cursor)


@router.get("/{audit_id}", responses=PROBLEMS)
def get_audit(audit: CurrentAudit) -> AuditOut:
    """Status, progress, timestamps, and the error when it failed."""
    return AuditOut.from_audit(audit)


@router.post(
    "/{audit_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **PROBLEMS,
        **problems(409),
        200: {"model": AuditOut, "description": "A queued audit, cancelled at once."},
        202: {"description": "A running audit; it stops at its next batch boundary."},
    },
)
def cancel_audit(audit: CurrentAudit, session: DbSession, response: Response) -> AuditOut:
    """A queued audit is cancelled at once (200); a running one stops at its next batch
    boundary (202, `cancel_requested` true). A finished audit cannot be cancelled (409)."""
    audit = audit_service.cancel_audit(session, audit)
    if audit.status == AuditStatus.CANCELLED:
        response.status_code = status.HTTP_200_OK
    return AuditOut.from_audit(audit)


@router.get(
    "/{audit_id}/result",
    responses={**PROBLEMS, **problems(409), 200: {"model": AuditResult}},
)
def get_result(audit: CurrentAudit) -> JSONResponse:
    """The engine's result document (the same JSON the CLI writes)."""
    _require_succeeded(audit, "result")
    # Stored as validated JSON: returned as is rather than re-validated on every read.
    return JSONResponse(audit.result)


@router.get("/{audit_id}/gate", responses={**PROBLEMS, **problems(409)})
def get_gate(audit: CurrentAudit) -> Gate:
    """The verdict a deployment gate reads: `passed` and every check."""
    _require_succeeded(audit, "gate")
    return Gate.model_validate(audit.gate)


@router.get(
    "/{audit_id}/report",
    response_class=HTMLResponse,
    responses={**PROBLEMS, **problems(409)},
)
def get_report(audit: CurrentAudit) -> HTMLResponse:
    """A self-contained HTML report of the result."""
    _require_succeeded(audit, "report")
    # The report module pulls in plotting code; loaded on first use, not at gateway start.
    from trustdiff.report import render_report

    return HTMLResponse(render_report(AuditResult.model_validate(audit.result)))
