"""Tenancy on real Postgres: each tenant sees only `<root>/<tenant>/...` of the model and data
roots and its own uploads; an operator can share a read-only models folder."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.db import Database
from service.settings import Settings
from tests.conftest import TinyAssets
from tests.service.fixtures import audit_body, new_api_key
from tests.service.test_api import assert_problem, submit

pytestmark = pytest.mark.services


def test_a_tenant_cannot_reach_another_tenants_folders(
    client: TestClient, auth: dict[str, str], settings: Settings, clean_database: Database
) -> None:
    # tenant-b's own, real folders (not the shared fixture links).
    private_data = settings.data_root / "tenant-private"
    private_models = settings.model_root / "tenant-private"
    private_data.mkdir(parents=True, exist_ok=True)
    private_models.mkdir(parents=True, exist_ok=True)
    shutil.copy(settings.data_root / "tenant-a" / "sentiment.jsonl", private_data / "secret.jsonl")
    shutil.copytree(
        settings.model_root / "tenant-a" / "reference", private_models / "model", dirs_exist_ok=True
    )
    try:
        for body in (
            audit_body(dataset={"path": "../tenant-private/secret.jsonl"}),
            audit_body(reference={"path": "../tenant-private/model"}),
        ):
            problem = assert_problem(submit(client, auth, body), 422, "path_outside_root")
            assert "tenant-private" in problem["detail"]
        # Named from inside its own root, another tenant's folder is simply not there.
        body = audit_body(dataset={"path": "tenant-private/secret.jsonl"})
        assert_problem(submit(client, auth, body), 422, "dataset_not_found")
        # The owner uses the same files with paths relative to its own folders.
        owner = {"Authorization": f"Bearer {new_api_key(clean_database, 'tenant-private')}"}
        body = audit_body(reference={"path": "model"}, candidate={"path": "model"},
                          dataset={"path": "secret.jsonl"})  # fmt: skip
        response = submit(client, owner, body)
        assert response.status_code == 202, response.text
    finally:
        shutil.rmtree(private_data)
        shutil.rmtree(private_models)


def test_shared_models_folder_is_offered_to_every_tenant(
    parked_settings: Settings, clean_database: Database, tiny_assets: TinyAssets
) -> None:
    settings = parked_settings.model_copy(update={"shared_model_root": tiny_assets.model_root})
    token = new_api_key(clean_database, "tenant-shared")
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        body = audit_body(reference={"path": "shared/reference"},
                          candidate={"path": "shared/perturbed"})  # fmt: skip
        assert submit(client, auth, body).status_code == 202
        escape = audit_body(reference={"path": "shared/../../data"})
        assert_problem(submit(client, auth, escape), 422, "path_outside_root")
    # Without the setting, `shared/` is just a folder name in the tenant's own root.
    with TestClient(create_app(parked_settings), raise_server_exceptions=False) as client:
        body = audit_body(reference={"path": "shared/reference"})
        assert_problem(submit(client, auth, body), 422, "checkpoint_not_found")


def test_a_weight_file_linked_out_of_the_model_root_is_refused(
    client: TestClient, auth: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.safetensors"
    tenant_root = (settings.model_root / "tenant-a").resolve()
    name = f"linked-weights-{uuid.uuid4().hex}"
    folder = tenant_root / name
    shutil.copytree(tenant_root / "reference", folder)
    try:
        weights = next(folder.glob("*.safetensors"))
        weights.rename(outside)
        weights.symlink_to(outside)
        problem = assert_problem(
            submit(client, auth, audit_body(candidate={"path": name})), 422, "path_outside_root"
        )
        assert weights.name in problem["detail"]
        assert str(tmp_path) not in problem["detail"]
    finally:
        shutil.rmtree(folder)
