"""The error responses routes document in the OpenAPI schema, all `application/problem+json`,
and the polled routes' JSON bodies."""

from __future__ import annotations

from typing import Any

from fastapi import Response
from pydantic import BaseModel

from service.problems import PROBLEM_MEDIA_TYPE
from service.schemas import ProblemOut


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these error statuses, each a problem+json `ProblemOut`."""
    return {
        status: {"model": ProblemOut, "content": {PROBLEM_MEDIA_TYPE: {}}} for status in statuses
    }


# Every authenticated route: 400 (a body or form the server cannot parse), 401 (no or bad
# key), 404 (not the caller's, or missing), 422 (invalid request), 503 (busy: shed with
# Retry-After).
PROBLEMS = problems(400, 401, 404, 422, 503)


def json_body(model: BaseModel) -> Response:
    """`model` as the `application/json` body FastAPI would send for it, serialized once.

    For the routes clients poll: a route that returns a model has FastAPI validate it again
    against the route's `response_model` before serializing, and for a page of audits, each
    with its request document, that second validation costs about as much as building the
    page. A returned `Response` is sent as it is; the route still names its `response_model`
    for the OpenAPI schema, and a test holds the bodies equal to FastAPI's own.
    """
    return Response(model.model_dump_json(), media_type="application/json")
