"""A typed HTTP client of the trustdiff service: submit an audit, wait for it, read its gate.

Its routes and response models follow `openapi/openapi.json` (a test holds them to it). It
depends on httpx and the engine's result models only, never on the service's code, so a
release pipeline can gate on an audit with nothing of the service installed.

    with TrustdiffClient("http://trustdiff:8000", api_key) as client:
        dataset = client.upload_dataset("data/dev.jsonl")
        audit = client.submit(reference="bert", candidate="distilbert", dataset=dataset.id)
        audit = client.wait(audit.id, timeout=1800)
        gate = client.gate(audit.id)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict

from trustdiff.config import CheckpointSpec, DatasetSpec
from trustdiff.result import AuditResult, Gate

AuditStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

# Answers that say the server did not (or may not have) finished handling the request.
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
DEFAULT_TIMEOUT_S = 30.0
MAX_RETRY_AFTER_S = 30.0


# --- response models (the subset of the spec's schemas a pipeline reads) -----------------


class _Response(BaseModel):
    # Newer servers may add fields; an older client must keep working against them.
    model_config = ConfigDict(extra="allow", frozen=True)


class Progress(_Response):
    stage: str
    done: int
    total: int


class AuditFailure(_Response):
    code: str
    message: str


class AuditLinks(_Response):
    self: str
    result: str
    gate: str
    report: str
    cancel: str


class Audit(_Response):
    """`AuditOut` of the spec: an audit's status, progress and, once finished, its verdict."""

    id: uuid.UUID
    status: AuditStatus
    progress: Progress | None
    error: AuditFailure | None
    passed: bool | None
    cancel_requested: bool
    attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    request: dict[str, Any]
    links: AuditLinks

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class AuditPage(_Response):
    items: list[Audit]
    next_cursor: str | None


class Dataset(_Response):
    """`DatasetOut` of the spec: an uploaded dataset, validated and fingerprinted."""

    id: uuid.UUID
    filename: str
    format: str
    sha256: str
    size_bytes: int
    rows: int
    fields: list[str]
    label_names: list[str]
    text_field: str
    text_pair_field: str | None
    label_field: str
    created_at: datetime


# --- errors -------------------------------------------------------------------------------


class ClientError(Exception):
    """Anything that kept the client from an answer."""


class ProblemError(ClientError):
    """The service answered with an RFC 9457 problem (`application/problem+json`).

    `code` is the service's stable machine code (`invalid_request`, `dataset_not_found`, …),
    `detail` its human message; `body` holds every member, e.g. `errors` or `row`.
    """

    def __init__(self, status: int, body: Mapping[str, Any]) -> None:
        self.status = status
        self.body = dict(body)
        self.code = str(body.get("code") or f"http_{status}")
        self.title = str(body.get("title") or "")
        self.detail = str(body.get("detail") or self.title or f"HTTP {status}")
        super().__init__(self.detail)


class Unauthorized(ProblemError):
    """401: no API key, or one the service does not know (revoked, mistyped)."""


class NotFound(ProblemError):
    """404: no such audit or dataset for this key's tenant."""


class Conflict(ProblemError):
    """409: e.g. the gate of an audit that has not succeeded, a reused idempotency key."""


class InvalidRequest(ProblemError):
    """422 (or 400, 413): the request's content was refused; `detail` says why."""


class ServerError(ProblemError):
    """5xx that persisted through every retry."""


class TransportError(ClientError):
    """The service could not be reached (connection refused, reset, timed out) after retries."""


class WaitTimeout(ClientError):
    """`wait` gave up before the audit finished; `audit` is its last known state."""

    def __init__(self, audit: Audit, timeout_s: float) -> None:
        self.audit = audit
        self.timeout_s = timeout_s
        stage = audit.progress.stage if audit.progress else audit.status
        where = "" if stage == audit.status else f" ({stage})"
        super().__init__(
            f"audit {audit.id} still {audit.status}{where} after {timeout_s:g} s; "
            f"it carries on on the server"
        )


_PROBLEM_CLASSES: Mapping[int, type[ProblemError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
}


# Callbacks older than this are refused: long enough for clock skew and retries in flight,
# short enough that a recorded callback cannot be replayed later.
CALLBACK_TOLERANCE_S = 300


def verify_callback_signature(
    body: bytes,
    header: str,
    secret: str,
    *,
    tolerance_s: float = CALLBACK_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether `header` (`X-Trustdiff-Signature: t=<unix>,v1=<hex>`) signs `body` recently.

    True when `v1` is HMAC-SHA256 of `"<t>." + body` under `secret` and `t` is within
    `tolerance_s` seconds of `now` (default: this machine's clock). Compares in constant time.
    """
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
        signature = fields["v1"]
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    signed = f"{timestamp}.".encode() + body
    expected = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def problem_error(response: httpx.Response) -> ProblemError:
    """The typed error for a non-2xx answer (a body that is not a problem still gets one)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text.strip()[:500]
        body = {"detail": text or response.reason_phrase or f"HTTP {response.status_code}"}
    status = response.status_code
    error_class = ServerError if status >= 500 else _PROBLEM_CLASSES.get(status, ProblemError)
    return error_class(status, body)


# --- the client ---------------------------------------------------------------------------


def _checkpoint(value: str | os.PathLike[str] | CheckpointSpec | Mapping[str, Any]) -> Any:
    if isinstance(value, CheckpointSpec):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, Mapping):
        return dict(value)
    return {"path": os.fspath(value)}


def _dataset_ref(value: str | uuid.UUID | Dataset | DatasetSpec | Mapping[str, Any]) -> Any:
    if isinstance(value, Dataset):
        return {"id": str(value.id)}
    if isinstance(value, uuid.UUID):
        return {"id": str(value)}
    if isinstance(value, DatasetSpec):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, Mapping):
        return dict(value)
    try:
        return {"id": str(uuid.UUID(value))}
    except ValueError:
        return {"path": value}


class TrustdiffClient:
    """The service's REST API, typed, with retries that never duplicate an audit.

    GETs and audit submissions are retried on 5xx answers and connection errors with
    exponential backoff (honouring `Retry-After`). `submit` always sends an
    `Idempotency-Key` (a fresh UUID unless one is given), so a retried POST whose first
    attempt did reach the server returns that same audit instead of creating a second one.
    A dataset upload is retried only when it cannot have been stored (connection refused,
    503), since the server has no idempotency key for uploads.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = 4,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        headers = {"User-Agent": "trustdiff-client"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.retries = retries
        self.backoff_s = backoff_s
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout_s,
            transport=transport,
        )

    def __enter__(self) -> TrustdiffClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport ------------------------------------------------------------------------

    def _request(
        self, method: str, url: str, *, idempotent: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """Send, retrying transient failures; raise a typed error for any other answer.

        An idempotent request is retried on any 5xx and any transport error. One that is not
        is retried only when it cannot have taken effect: the connection was refused, or the
        server answered 503 (it sheds load before handling).
        """
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TransportError as error:
                retryable = idempotent or isinstance(error, httpx.ConnectError)
                if attempt >= self.retries or not retryable:
                    raise TransportError(f"{method} {url}: {error}") from error
            else:
                if response.is_success:
                    return response
                retryable_statuses = RETRYABLE_STATUSES if idempotent else {503}
                if response.status_code not in retryable_statuses or attempt >= self.retries:
                    raise problem_error(response)
            time.sleep(self._delay(attempt, response))
            attempt += 1

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            retry_after = response.headers.get("Retry-After", "")
            if retry_after.isdigit():
                return min(float(retry_after), MAX_RETRY_AFTER_S)
        return float(self.backoff_s * 2**attempt)

    # -- audits ---------------------------------------------------------------------------

    def submit(
        self,
        *,
        reference: str | os.PathLike[str] | CheckpointSpec | Mapping[str, Any],
        candidate: str | os.PathLike[str] | CheckpointSpec | Mapping[str, Any],
        dataset: str | uuid.UUID | Dataset | DatasetSpec | Mapping[str, Any],
        twin: str | os.PathLike[str] | CheckpointSpec | Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Audit:
        """Queue an audit (`POST /v1/audits`); returns it, `queued`.

        Checkpoint paths are relative to the server's model root. `dataset` is an upload's
        id (a `Dataset`, UUID or its string) or a path under the server's data root.
        `options` holds the rest of the request body (`explain`, `calibration`, `gate`,
        `seed`, `label_mapping`, `callback_url`, …) as the spec's `AuditCreate` names them.
        """
        body: dict[str, Any] = dict(options or {})
        body.update(
            reference=_checkpoint(reference),
            candidate=_checkpoint(candidate),
            dataset=_dataset_ref(dataset),
        )
        if twin is not None:
            body["twin"] = _checkpoint(twin)
        key = idempotency_key or f"trustdiff-client-{uuid.uuid4()}"
        response = self._request("POST", "/v1/audits", json=body, headers={"Idempotency-Key": key})
        return Audit.model_validate(response.json())

    def audit(self, audit_id: str | uuid.UUID) -> Audit:
        """The audit's status and progress (`GET /v1/audits/{id}`)."""
        return Audit.model_validate(self._request("GET", f"/v1/audits/{audit_id}").json())

    def audits(
        self,
        *,
        status: AuditStatus | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> AuditPage:
        """A page of this key's audits, newest first (`GET /v1/audits`)."""
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = status
        if cursor is not None:
            params["cursor"] = cursor
        return AuditPage.model_validate(self._request("GET", "/v1/audits", params=params).json())

    def cancel(self, audit_id: str | uuid.UUID) -> Audit:
        """Cancel a queued audit, or ask a running one to stop (`POST .../cancel`)."""
        response = self._request("POST", f"/v1/audits/{audit_id}/cancel")
        return Audit.model_validate(response.json())

    def wait(
        self,
        audit_id: str | uuid.UUID,
        *,
        timeout: float | None = None,
        poll_interval: float = 2.0,
        on_update: Callable[[Audit], None] | None = None,
    ) -> Audit:
        """Poll until the audit is `succeeded`, `failed` or `cancelled`; return it.

        `on_update` sees every polled state (for progress display). Raises `WaitTimeout`
        after `timeout` seconds (None: wait for as long as it takes); the audit itself keeps
        running on the server.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            audit = self.audit(audit_id)
            if on_update is not None:
                on_update(audit)
            if audit.is_final:
                return audit
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(audit, timeout or 0.0)
                time.sleep(min(poll_interval, left))
            else:
                time.sleep(poll_interval)

    def gate(self, audit_id: str | uuid.UUID) -> Gate:
        """The verdict of a succeeded audit: `passed` and every check (409 before that)."""
        return Gate.model_validate(self._request("GET", f"/v1/audits/{audit_id}/gate").json())

    def result(self, audit_id: str | uuid.UUID) -> AuditResult:
        """The full result document of a succeeded audit (the JSON `trustdiff audit` writes)."""
        response = self._request("GET", f"/v1/audits/{audit_id}/result")
        return AuditResult.model_validate(response.json())

    def result_json(self, audit_id: str | uuid.UUID) -> dict[str, Any]:
        """The result document as the server sent it, unparsed (to store byte-faithfully)."""
        document: dict[str, Any] = self._request("GET", f"/v1/audits/{audit_id}/result").json()
        return document

    def report(self, audit_id: str | uuid.UUID) -> str:
        """The self-contained HTML report of a succeeded audit."""
        return self._request("GET", f"/v1/audits/{audit_id}/report").text

    # -- datasets -------------------------------------------------------------------------

    def upload_dataset(
        self,
        path: str | os.PathLike[str],
        *,
        format: Literal["jsonl", "csv", "tsv"] | None = None,
        text_field: str = "text",
        text_pair_field: str | None = None,
        label_field: str = "label",
    ) -> Dataset:
        """Upload a JSONL, CSV or TSV file (`POST /v1/datasets`); every row is validated."""
        file_path = Path(path)
        form = {"text_field": text_field, "label_field": label_field}
        if format is not None:
            form["format"] = format
        if text_pair_field is not None:
            form["text_pair_field"] = text_pair_field
        content = file_path.read_bytes()
        response = self._request(
            "POST",
            "/v1/datasets",
            idempotent=False,
            data=form,
            files={"file": (file_path.name, content)},
        )
        return Dataset.model_validate(response.json())

    def dataset(self, dataset_id: str | uuid.UUID) -> Dataset:
        return Dataset.model_validate(self._request("GET", f"/v1/datasets/{dataset_id}").json())
