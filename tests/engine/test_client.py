"""The HTTP client holds to openapi/openapi.json: its routes, request fields and models."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from trustdiff import client as client_module
from trustdiff.client import (
    Audit,
    AuditFailure,
    AuditLinks,
    AuditPage,
    Conflict,
    Dataset,
    InvalidRequest,
    NotFound,
    Progress,
    ServerError,
    TransportError,
    TrustdiffClient,
    Unauthorized,
    problem_error,
)

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
SPEC = json.loads((REPOSITORY_ROOT / "openapi" / "openapi.json").read_text())
SCHEMAS = SPEC["components"]["schemas"]


def test_every_route_the_client_calls_is_in_the_spec() -> None:
    source = Path(client_module.__file__).read_text()
    calls = re.findall(r'_request\(\s*"(GET|POST)",\s*f?"([^"]+)"', source)
    assert len(calls) >= 9
    for method, path in calls:
        assert path in SPEC["paths"], path
        assert method.lower() in SPEC["paths"][path], f"{method} {path}"


@pytest.mark.parametrize(
    ("model", "schema"),
    [
        (Audit, "AuditOut"),
        (AuditPage, "AuditPage"),
        (Dataset, "DatasetOut"),
        (Progress, "Progress"),
        (AuditFailure, "AuditError"),
        (AuditLinks, "AuditLinks"),
    ],
)
def test_response_models_match_the_spec(model: type[BaseModel], schema: str) -> None:
    spec = SCHEMAS[schema]
    assert set(model.model_fields) == set(spec["properties"]), schema
    required = {name for name, field in model.model_fields.items() if field.is_required()}
    assert required == set(spec.get("required", [])), schema


def test_audit_status_values_match_the_spec() -> None:
    status = SCHEMAS["AuditOut"]["properties"]["status"]
    values = set(status.get("enum") or SCHEMAS[status["$ref"].rsplit("/", 1)[1]]["enum"])
    assert values == set(Audit.model_fields["status"].annotation.__args__)  # type: ignore[union-attr]


def test_submission_and_upload_fields_are_in_the_spec() -> None:
    requests: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(500, json={"code": "internal_error", "detail": "recorded"})

    client = TrustdiffClient(
        "http://trustdiff", "key", retries=0, transport=httpx.MockTransport(record)
    )
    with pytest.raises(ServerError):
        client.submit(reference="a", candidate="b", dataset="dev.jsonl", options={"seed": 3})
    body = json.loads(requests[-1].content)
    assert set(body) <= set(SCHEMAS["AuditCreate"]["properties"])
    assert body["dataset"] == {"path": "dev.jsonl"}
    assert requests[-1].headers["Idempotency-Key"].startswith("trustdiff-client-")
    upload_fields = set(SCHEMAS["Body_upload_dataset_v1_datasets_post"]["properties"])
    assert {"file", "text_field", "label_field", "format", "text_pair_field"} <= upload_fields


def _responder(*responses: Any) -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []
    queue = list(responses)

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return seen, httpx.MockTransport(respond)


def test_retries_keep_the_idempotency_key_and_stop_at_the_limit() -> None:
    seen, transport = _responder(
        httpx.Response(502),
        httpx.ConnectError("refused"),
        httpx.Response(503, headers={"Retry-After": "0"}),
        httpx.Response(500, json={"code": "internal_error", "detail": "still broken"}),
    )
    client = TrustdiffClient("http://t", retries=3, backoff_s=0.0, transport=transport)
    with pytest.raises(ServerError, match="still broken"):
        client.submit(reference="a", candidate="b", dataset="d.jsonl")
    assert len(seen) == 4
    assert len({request.headers["Idempotency-Key"] for request in seen}) == 1


def test_an_upload_is_not_resent_once_it_may_have_been_stored(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a", "label": 0}\n')
    seen, transport = _responder(httpx.ReadError("reset"))
    client = TrustdiffClient("http://t", retries=3, backoff_s=0.0, transport=transport)
    with pytest.raises(TransportError):
        client.upload_dataset(path)
    assert len(seen) == 1
    seen, transport = _responder(httpx.Response(502))
    client = TrustdiffClient("http://t", retries=3, backoff_s=0.0, transport=transport)
    with pytest.raises(ServerError):
        client.upload_dataset(path)
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, Unauthorized), (404, NotFound), (409, Conflict), (413, InvalidRequest),
     (422, InvalidRequest), (502, ServerError)],
)  # fmt: skip
def test_problems_become_typed_errors(status: int, error: type[Exception]) -> None:
    problem = problem_error(
        httpx.Response(status, json={"code": "some_code", "detail": "what went wrong", "row": 7})
    )
    assert isinstance(problem, error)
    assert (problem.status, problem.code, problem.detail) == (
        status,
        "some_code",
        "what went wrong",
    )
    assert problem.body["row"] == 7
    plain = problem_error(httpx.Response(status, text="Bad Gateway from the balancer"))
    assert isinstance(plain, error) and plain.detail == "Bad Gateway from the balancer"
