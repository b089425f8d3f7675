"""The error responses routes document in the OpenAPI schema, all `application/problem+json`."""

from __future__ import annotations

from typing import Any

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
