"""Log configuration of the gateway and the worker: plain text, or one JSON object per line.

With `TRUSTDIFF_LOG_FORMAT=json` every line is a JSON object with `time`, `level`, `logger`,
`message` and `audit_id` — the audit the line is about, or null — so a log system can show
everything that happened to one audit across the gateway and the workers.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LogFormat = Literal["text", "json"]

# The audit the current request or job is about; contextvars follow both threads and tasks.
current_audit_id: ContextVar[str | None] = ContextVar("trustdiff_audit_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [audit %(audit_id)s] %(message)s"
ACCESS_LOGGER = "trustdiff.access"
_AUDIT_PATH = re.compile(r"^/v1/audits/([0-9a-fA-F-]{36})(?:/|$)")
# LogRecord attributes that are not "extra" fields a caller passed.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "audit_id"}


@contextmanager
def audit_context(audit_id: object) -> Iterator[None]:
    """Every log line inside the block carries `audit_id`."""
    token = current_audit_id.set(None if audit_id is None else str(audit_id))
    try:
        yield
    finally:
        current_audit_id.reset(token)


class AuditIdFilter(logging.Filter):
    """Puts the current audit id on every record (unless the caller passed one in `extra`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "audit_id", None) is None:
            record.audit_id = current_audit_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `extra` fields are kept, the traceback is one string."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "audit_id": getattr(record, "audit_id", None),
        }
        for name, value in vars(record).items():
            if name not in _RECORD_FIELDS and not name.startswith("_"):
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, default=str, ensure_ascii=False)


def log_handler(log_format: LogFormat) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(AuditIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(log_format: LogFormat, level: str | int = "INFO") -> None:
    """Route every logger (uvicorn's and Celery's included) to one handler on the root."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(log_handler(log_format))
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True


class AuditLogContext:
    """ASGI middleware: requests about an audit log with its id; one access line per request.

    The id comes from the path (`/v1/audits/{id}/...`) or, for a submission, from the
    `Location` of the response. The access line replaces uvicorn's, which is written outside
    the request's context and so could not carry the id.
    """

    def __init__(self, app: ASGIApp, *, access_log: bool) -> None:
        self.app = app
        self.access_log = access_log
        self.logger = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        match = _AUDIT_PATH.match(scope.get("path", ""))
        audit_id = match.group(1) if match else None
        token = current_audit_id.set(audit_id)
        started = time.perf_counter()
        status = 500

        async def send_tracked(message: Message) -> None:
            nonlocal status, audit_id
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    if name.lower() == b"location":
                        created = _AUDIT_PATH.match(value.decode("latin-1"))
                        audit_id = created.group(1) if created else audit_id
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        finally:
            if self.access_log:
                query = scope.get("query_string", b"").decode("latin-1")
                self.logger.info(
                    "%s %s%s %s",
                    scope["method"],
                    scope.get("path", ""),
                    f"?{query}" if query else "",
                    status,
                    extra={
                        "audit_id": audit_id,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                        "client": (scope.get("client") or ("", 0))[0],
                    },
                )
            current_audit_id.reset(token)
