"""Per-tenant quotas on real Postgres: work per audit, dataset size, audits in flight."""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.db import Database
from service.settings import Settings
from tests.conftest import TinyAssets
from tests.service.fixtures import audit_body, new_api_key
from tests.service.test_api import assert_problem, submit

pytestmark = pytest.mark.services


@pytest.mark.parametrize(
    ("override", "quota"),
    [
        ({"explain": {"instances": 10**9}}, "max_explain_instances"),
        ({"explain": {"instances": 2, "lime_samples": 100_000}}, "max_lime_samples"),
        ({"explain": {"instances": 2, "shap_max_evals": 100_000}}, "max_shap_evals"),
        ({"calibration": {"n_bootstrap": 100_000}}, "max_bootstrap_resamples"),
    ],
)
def test_work_beyond_the_quotas_is_refused(
    client: TestClient, auth: dict[str, str], override: dict[str, object], quota: str
) -> None:
    problem = assert_problem(submit(client, auth, audit_body(**override)), 422, "quota_exceeded")
    assert problem["quota"] == quota
    assert client.get("/v1/audits", headers=auth).json()["items"] == []


def test_explaining_nothing_needs_no_explanation_quota(
    client: TestClient, auth: dict[str, str]
) -> None:
    body = audit_body(explain={"instances": 0, "lime_samples": 100_000})
    assert submit(client, auth, body).status_code == 202


def test_dataset_rows_bytes_and_columns_have_quotas(
    parked_settings: Settings, clean_database: Database, tiny_assets: TinyAssets
) -> None:
    auth = {"Authorization": f"Bearer {new_api_key(clean_database, 'tenant-quota')}"}
    small = parked_settings.model_copy(update={"max_dataset_rows": 10, "max_dataset_fields": 3})
    with TestClient(create_app(small), raise_server_exceptions=False) as client:
        problem = assert_problem(submit(client, auth, audit_body()), 422, "quota_exceeded")
        assert problem["quota"] == "max_dataset_rows" and problem["requested"] == 48
        # A limit within the quota makes the same file usable.
        body = audit_body(dataset={"path": "sentiment.jsonl", "limit": 10})
        assert submit(client, auth, body).status_code == 202
        wide = json.dumps({"text": "x", "label": "pos", **{f"c{i}": i for i in range(5)}})
        upload = client.post(
            "/v1/datasets", files={"file": ("wide.jsonl", wide.encode())}, headers=auth
        )
        assert assert_problem(upload, 422, "quota_exceeded")["quota"] == "max_dataset_fields"
    name = f"big-{uuid.uuid4().hex}.jsonl"
    (tiny_assets.data_root / name).write_bytes(tiny_assets.dataset.read_bytes() * 40)
    try:
        tight = parked_settings.model_copy(update={"max_upload_bytes": 64 * 1024})
        with TestClient(create_app(tight), raise_server_exceptions=False) as client:
            body = audit_body(dataset={"path": name})
            problem = assert_problem(submit(client, auth, body), 422, "quota_exceeded")
            assert problem["quota"] == "max_upload_bytes"
    finally:
        (tiny_assets.data_root / name).unlink()


def test_audits_in_flight_per_tenant_have_a_quota(
    parked_settings: Settings, clean_database: Database
) -> None:
    auth = {"Authorization": f"Bearer {new_api_key(clean_database, 'tenant-busy')}"}
    other = {"Authorization": f"Bearer {new_api_key(clean_database, 'tenant-idle')}"}
    two = parked_settings.model_copy(update={"max_concurrent_audits": 2})
    with TestClient(create_app(two), raise_server_exceptions=False) as client:
        first, second = (submit(client, auth, audit_body(seed=seed)) for seed in (1, 2))
        assert first.status_code == second.status_code == 202
        refused = submit(client, auth, audit_body(seed=3))
        assert_problem(refused, 429, "too_many_audits")
        assert refused.headers["retry-after"]
        # Another tenant is not held back, and a finished audit frees a place.
        assert submit(client, other, audit_body(seed=3)).status_code == 202
        cancelled = client.post(f"/v1/audits/{first.json()['id']}/cancel", headers=auth)
        assert cancelled.status_code == 200
        assert submit(client, auth, audit_body(seed=3)).status_code == 202
