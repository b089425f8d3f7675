"""The gateway as a deployable: import weight, OpenAPI drift, probes, and its CLI commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.openapi_export import render
from service.settings import Settings
from tests.service.fixtures import REPOSITORY_ROOT

HEAVY_MODULES = ("torch", "transformers", "shap", "lime", "workers")


def test_gateway_import_pulls_in_no_model_code_or_worker(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from service.app import create_app\n"
        "from service.openapi_export import openapi_document\n"
        "create_app(); openapi_document()\n"
        f"print([name for name in {HEAVY_MODULES!r} if name in sys.modules])\n"
    )
    env = {**os.environ, "TRUSTDIFF_HOME": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPOSITORY_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert completed.stdout.strip() == "[]", completed.stdout + completed.stderr


def test_committed_openapi_document_matches_the_app() -> None:
    committed = (REPOSITORY_ROOT / "openapi" / "openapi.json").read_text()
    assert json.loads(committed) == json.loads(render()), (
        "openapi/openapi.json is stale: run `make openapi` and commit it"
    )


@pytest.mark.services
def test_healthz_and_readyz_on_real_services(client: TestClient) -> None:
    assert client.get("/v1/healthz").json() == {"status": "ok"}
    response = client.get("/v1/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}


@pytest.mark.services
def test_readyz_is_503_with_the_reason_when_broker_or_database_is_down(
    settings: Settings,
) -> None:
    no_broker = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(no_broker)) as client:
        response = client.get("/v1/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "not_ready"
    assert set(problem["checks"]) == {"broker"}
    assert "unreachable" in problem["checks"]["broker"]

    no_database = settings.model_copy(
        update={"database_url": "postgresql+psycopg://root@127.0.0.1:1/none"}
    )
    with TestClient(create_app(no_database)) as client:
        response = client.get("/v1/readyz")
    assert response.status_code == 503
    assert set(response.json()["checks"]) == {"database"}
    assert client.get("/v1/healthz").status_code == 200


@pytest.mark.services
def test_readyz_reports_an_unmigrated_database(tmp_path: Path, settings: Settings) -> None:
    fresh = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'new.sqlite'}"})
    with TestClient(create_app(fresh)) as client:
        response = client.get("/v1/readyz")
    assert response.status_code == 503
    assert "trustdiff migrate" in response.json()["checks"]["database"]


def test_engine_cli_gains_the_service_commands() -> None:
    from trustdiff.cli import build_parser

    parser = build_parser()
    for argv in (
        ["serve", "--host", "0.0.0.0", "--port", "9000", "--no-worker"],
        ["worker", "--pool", "solo"],
        ["keys", "create", "--tenant", "ci"],
        ["migrate"],
    ):
        args = parser.parse_args(argv)
        assert callable(args.func)
    assert parser.parse_args(["serve"]).port == 8000


@pytest.mark.parametrize("module", ["service.cli", "workers.cli"])
def test_cli_command_modules_import_nothing_beyond_the_standard_library(module: str) -> None:
    # `trustdiff --help` builds the whole parser, service commands included: it must stay fast.
    script = (
        "import sys\n"
        "before = set(sys.modules)\n"
        f"import {module}\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before} - {'service', 'workers'}\n"
        "print(sorted(new - set(sys.stdlib_module_names)))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert completed.stdout.strip() == "[]", completed.stdout


@pytest.mark.services
def test_keys_create_prints_a_working_key_once(
    client: TestClient, service_env: dict[str, str]
) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "trustdiff", "keys", "create", "--tenant", "pipeline"],
        cwd=REPOSITORY_ROOT,
        env={**os.environ, **service_env},
        capture_output=True,
        text=True,
        check=True,
    )
    token = completed.stdout.strip()
    assert token.startswith("td_") and len(token) > 40
    assert "not shown again" in completed.stderr
    response = client.get("/v1/audits", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
