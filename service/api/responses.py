"""The error responses every authenticated route documents in the OpenAPI schema."""

from __future__ import annotations

from typing import Any

from service.schemas import ProblemOut

# 401 (no or bad key), 404 (not the caller's, or missing), 422 (invalid request), 503 (busy:
# shed with Retry-After).
PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": ProblemOut, "content": {"application/problem+json": {}}}
    for code in (401, 404, 422, 503)
}
