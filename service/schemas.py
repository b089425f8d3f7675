"""Request and response bodies of the HTTP API (inputs forbid unknown fields)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    HttpUrl,
    Tag,
    model_validator,
)

from service.models import AuditStatus
from trustdiff.config import AuditOptions, DatasetSpec, RowLimit, RowSampling

if TYPE_CHECKING:
    from service.models import Audit


# The stored column's width; a URL is measured after normalisation (punycode, escapes).
MAX_CALLBACK_URL_CHARS = 2048


def _strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings_in(key)
            yield from _strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings_in(item)


def _fits_callback_column(url: HttpUrl) -> HttpUrl:
    if len(str(url)) > MAX_CALLBACK_URL_CHARS:
        raise ValueError(f"the URL is longer than {MAX_CALLBACK_URL_CHARS} characters")
    return url


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UploadedDatasetRef(_Input):
    """A dataset uploaded with `POST /v1/datasets`; its field mapping is the upload's."""

    id: uuid.UUID
    limit: RowLimit = None
    sampling: RowSampling = "head"


def _dataset_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "upload" if "id" in value else "path"
    return "upload" if isinstance(value, UploadedDatasetRef) else "path"


DatasetRef = Annotated[
    Annotated[DatasetSpec, Tag("path")] | Annotated[UploadedDatasetRef, Tag("upload")],
    Discriminator(_dataset_kind),
]


class AuditCreate(AuditOptions[DatasetRef]):
    """An audit request: everything but the checkpoints and the dataset has a default.

    Paths are relative to the service's model root and data root and may not leave them.
    """

    # The options and their limits are the engine's (`AuditOptions`); the device is the
    # worker's to choose, so only the dataset reference and the callback are the API's own.

    dataset: DatasetRef = Field(
        description='`{"path": ...}` under the data root, or `{"id": ...}` of an upload.'
    )
    callback_url: Annotated[HttpUrl, AfterValidator(_fits_callback_column)] | None = Field(
        default=None,
        description="Receives a signed POST with the final status and gate when the audit ends.",
    )

    @model_validator(mode="after")
    def _no_nul_characters(self) -> Any:
        # Requests are stored as they came; no field means a NUL, and Postgres text and JSONB
        # cannot hold one.
        if any("\x00" in text for text in _strings_in(self.model_dump(mode="json"))):
            raise ValueError("the request contains a NUL character (\\u0000)")
        return self


class Progress(BaseModel):
    stage: str
    done: int
    total: int


class AuditError(BaseModel):
    code: str
    message: str


class AuditLinks(BaseModel):
    self: str
    result: str
    gate: str
    report: str
    cancel: str


class AuditOut(BaseModel):
    id: uuid.UUID
    status: AuditStatus
    progress: Progress | None
    error: AuditError | None
    passed: bool | None = Field(description="The gate's verdict once the audit succeeded.")
    cancel_requested: bool
    attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    request: dict[str, Any] = Field(description="The request as validated, defaults filled in.")
    links: AuditLinks

    @classmethod
    def from_audit(cls, audit: Audit) -> AuditOut:
        """The API's view of an audit row (also the body of its callback)."""
        base = f"/v1/audits/{audit.id}"
        progress = None
        if audit.progress_stage is not None:
            progress = Progress(
                stage=audit.progress_stage,
                done=audit.progress_done or 0,
                total=audit.progress_total or 0,
            )
        error = None
        if audit.error_code is not None:
            error = AuditError(code=audit.error_code, message=audit.error_message or "")
        return cls(
            id=audit.id,
            status=audit.status,
            progress=progress,
            error=error,
            passed=audit.passed,
            cancel_requested=audit.cancel_requested_at is not None,
            attempts=audit.attempts,
            created_at=audit.created_at,
            updated_at=audit.updated_at,
            started_at=audit.started_at,
            finished_at=audit.finished_at,
            heartbeat_at=audit.heartbeat_at,
            request=audit.request,
            links=AuditLinks(
                self=base,
                result=f"{base}/result",
                gate=f"{base}/gate",
                report=f"{base}/report",
                cancel=f"{base}/cancel",
            ),
        )


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page.")


class RowOut(BaseModel):
    """One audited row's outcome, as the rows file holds it (`trustdiff.rows`)."""

    index: int = Field(description="0-based row index in the audited dataset.")
    row_number: int = Field(description="1-based data row in the dataset file.")
    label: str = Field(description="The gold label.")
    reference_prediction: str
    candidate_prediction: str
    flipped: bool = Field(description="The two models predict different classes.")
    reference_proba: list[float] = Field(description="In the order of the audit's labels.")
    candidate_proba: list[float]
    text: str | None = Field(default=None, description="Only when the rows file holds text.")
    text_pair: str | None = None


class RowsPage(BaseModel):
    items: list[RowOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")
    total_rows: int = Field(description="Rows in the audit, before the `flipped` filter.")


class DatasetOut(BaseModel):
    id: uuid.UUID
    filename: str
    format: str
    sha256: str
    size_bytes: int
    rows: int
    fields: list[str]
    label_names: list[str] = Field(description="Distinct label values seen in the file.")
    text_field: str
    text_pair_field: str | None
    label_field: str
    created_at: datetime


class ProblemOut(BaseModel):
    """RFC 9457 problem details; members such as `row` or `errors` are added when relevant."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str]
