"""Routes for audits: submit, read, list, cancel, and the result, gate and report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse

from service import audit_rows
from service import audits as audit_service
from service.api.deps import (
    AppDatabase,
    AppSettings,
    BearerToken,
    CurrentAudit,
    CurrentTenant,
    DbSession,
    audit_id_condition,
    read_audits_as_tenant,
)
from service.api.responses import PROBLEMS, json_body, problems
from service.artifacts import ArtifactStore
from service.models import Audit, AuditStatus
from service.problems import Conflict, NotFound
from service.schemas import AuditCreate, AuditOut, AuditPage, RowsPage
from service.settings import Settings
from trustdiff.result import AuditResult, Gate

# The registered media type of Parquet (IANA, 2024); `rows.parquet` always answers with it.
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
_PARQUET_RESPONSE: dict[int | str, dict[str, object]] = {
    200: {"content": {PARQUET_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}}
}

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


@router.get("", response_model=AuditPage, responses=PROBLEMS)
async def list_audits(
    token: BearerToken,
    database: AppDatabase,
    status: Annotated[list[AuditStatus] | None, Query(description="Repeat for several.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    """The caller's audits, newest first."""
    audits = await read_audits_as_tenant(
        database,
        token,
        lambda: audit_service.audit_page_conditions(status=status, cursor=cursor),
        order_by=audit_service.NEWEST_FIRST,
        limit=limit + 1,
    )
    page, next_cursor = audit_service.audit_page(audits, limit=limit)
    return json_body(
        AuditPage(items=[AuditOut.from_audit(a) for a in page], next_cursor=next_cursor)
    )


@router.get("/{audit_id}", response_model=AuditOut, responses=PROBLEMS)
async def get_audit(audit_id: str, token: BearerToken, database: AppDatabase) -> Response:
    """Status, progress, timestamps, and the error when it failed."""
    audits = await read_audits_as_tenant(database, token, lambda: [audit_id_condition(audit_id)])
    if not audits:
        raise NotFound(f"audit {audit_id} does not exist")
    return json_body(AuditOut.from_audit(audits[0]))


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


def _rows_file_response(audit: Audit, settings: Settings) -> Response:
    url = audit_rows.rows_url(audit)
    filename = f"audit-{audit.id}-rows.parquet"
    store = ArtifactStore.from_settings(settings)
    local = store.local_path(url)
    if local is not None:
        return FileResponse(local, media_type=PARQUET_MEDIA_TYPE, filename=filename)
    return StreamingResponse(
        audit_rows.rows_file_chunks(settings, url),
        media_type=PARQUET_MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Content-Length": str(store.size(url)),
        },
    )


@router.get(
    "/{audit_id}/rows",
    response_model=RowsPage,
    responses={
        **PROBLEMS,
        **problems(409),
        200: {"content": {"application/json": {}, PARQUET_MEDIA_TYPE: {}}},
    },
)
def get_rows(
    audit: CurrentAudit,
    settings: AppSettings,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    flipped: Annotated[
        bool, Query(description="Only rows the two models predict differently.")
    ] = False,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> RowsPage | Response:
    """Every audited row's outcome, a page at a time, in row order.

    With `Accept: application/vnd.apache.parquet` the whole rows file comes back instead
    (as from `/rows.parquet`). An unknown or foreign cursor is a 422 `invalid_cursor`.
    """
    _require_succeeded(audit, "rows")
    if accept is not None and PARQUET_MEDIA_TYPE in accept:
        return _rows_file_response(audit, settings)
    return audit_rows.rows_page(settings, audit, cursor=cursor, limit=limit, flipped=flipped)


@router.get(
    "/{audit_id}/rows.parquet",
    response_class=Response,
    responses={**PROBLEMS, **problems(409), **_PARQUET_RESPONSE},
)
def get_rows_file(audit: CurrentAudit, settings: AppSettings) -> Response:
    """The whole rows file (Parquet): one row per audited row, columns as in `/rows`."""
    _require_succeeded(audit, "rows")
    return _rows_file_response(audit, settings)
