"""Errors that carry their HTTP status, and their rendering as `application/problem+json`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from trustdiff.errors import TrustdiffError

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_type(code: str) -> str:
    # A URN names the problem kind stably without promising a page to dereference.
    return f"urn:trustdiff:problem:{code}"


class Problem(Exception):
    """An error response: `status`, a stable machine `code`, a human `detail`, extra members."""

    status = 500
    code = "internal_error"
    title = "Internal server error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})


class BadRequest(Problem):
    status, code, title = 400, "bad_request", "Bad request"


class Unauthorized(Problem):
    status, code, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class NotFound(Problem):
    status, code, title = 404, "not_found", "Not found"


class Conflict(Problem):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(Problem):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnprocessableContent(Problem):
    status, code, title = 422, "invalid_request", "Invalid request"


class ServiceUnavailable(Problem):
    status, code, title = 503, "not_ready", "Service unavailable"


# Stable codes of the 503s a loaded gateway sheds requests with (always with Retry-After).
OVERLOADED = "overloaded"
DATABASE_UNAVAILABLE = "database_unavailable"


def overloaded_response(detail: str, *, retry_after_s: int, code: str = OVERLOADED) -> JSONResponse:
    """503 + `Retry-After`: the request was not handled and may be sent again as it is."""
    return problem_response(
        503,
        title="Service unavailable",
        detail=detail,
        code=code,
        extra={"retry_after_s": retry_after_s},
        headers={"Retry-After": str(retry_after_s)},
    )


def problem_response(
    status: int,
    *,
    title: str,
    detail: str,
    code: str,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    # Extension members never override the standard ones.
    body: dict[str, Any] = jsonable_encoder(dict(extra or {}))
    body.update(type=problem_type(code), title=title, status=status, detail=detail, code=code)
    return JSONResponse(body, status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE)


def engine_problem(error: TrustdiffError) -> Problem:
    """The HTTP problem for an engine error: its code, message and details (e.g. `row`).

    Everything the engine refuses before compute is a problem with the request's content
    (422), not with the URL (404) or the server (5xx).
    """
    return UnprocessableContent(error.message, code=error.code, extra=error.details)


def _validation_errors(errors: Any) -> list[dict[str, Any]]:
    # `input` echoes the client's (possibly secret) value and `url` points at pydantic's docs:
    # keep location, message and type, which is what a caller fixes the request with.
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in errors
    ]


async def _render_problem(_request: Request, exc: Problem) -> JSONResponse:
    return problem_response(
        exc.status,
        title=exc.title,
        detail=exc.detail,
        code=exc.code,
        extra=exc.extra,
        headers=exc.headers,
    )


def redacted(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redacted(item, redact) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(item, redact) for item in value]
    return value


async def _render_engine_error(request: Request, exc: TrustdiffError) -> JSONResponse:
    problem = engine_problem(exc)
    settings = getattr(request.app.state, "settings", None)
    if settings is not None:
        problem.detail = settings.redact_paths(problem.detail)
        problem.extra = redacted(problem.extra, settings.redact_paths)
    return await _render_problem(request, problem)


async def _render_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = _validation_errors(exc.errors())
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(part) for part in first["loc"])
    return problem_response(
        422,
        title="Invalid request",
        detail=f"{where}: {first['msg']}" if where else str(first["msg"]),
        code="invalid_request",
        extra={"errors": errors},
    )


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path.

    Starlette's 405 names only the first route that matched the path, so `GET /v1/audits`
    went unmentioned next to `POST`.
    """
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _child = route.matches({**request.scope, "method": "GET"})
        route_methods = getattr(route, "methods", None)
        if match != Match.NONE and route_methods:
            methods.update(route_methods)
    return sorted(methods)


async def _render_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    phrase = HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers or {})
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return problem_response(
        exc.status_code,
        title=phrase,
        detail=str(exc.detail) if exc.detail else phrase,
        code=phrase.lower().replace(" ", "_").replace("-", "_"),
        headers=headers,
    )


def _retry_after_s(request: Request) -> int:
    settings = getattr(request.app.state, "settings", None)
    return int(getattr(settings, "retry_after_s", 2))


async def _render_pool_timeout(request: Request, _exc: SQLAlchemyTimeoutError) -> JSONResponse:
    # Every pooled connection stayed busy for the pool timeout: shed, do not fail.
    return overloaded_response(
        "the server is busy: no database connection came free in time; retry shortly",
        retry_after_s=_retry_after_s(request),
    )


async def _render_database_error(request: Request, exc: OperationalError) -> JSONResponse:
    # Connection refused or dropped, SQLite's busy timeout, a failover: transient, and not
    # the request's fault. The driver's text names hosts and files: it goes to the log only.
    logger.warning("database unavailable: %s", exc.orig if exc.orig is not None else exc)
    return overloaded_response(
        "the database is busy or unreachable; retry shortly",
        retry_after_s=_retry_after_s(request),
        code=DATABASE_UNAVAILABLE,
    )


async def _render_unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return problem_response(
        500,
        title="Internal server error",
        detail="The server failed to handle the request; the error has been logged.",
        code="internal_error",
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error, including FastAPI's own 404/405/422, as problem+json."""
    app.exception_handler(Problem)(_render_problem)
    app.exception_handler(TrustdiffError)(_render_engine_error)
    app.exception_handler(RequestValidationError)(_render_validation_error)
    app.exception_handler(StarletteHTTPException)(_render_http_error)
    app.exception_handler(SQLAlchemyTimeoutError)(_render_pool_timeout)
    app.exception_handler(OperationalError)(_render_database_error)
    app.exception_handler(Exception)(_render_unexpected_error)
