"""docker-compose.yml and the Dockerfile stay consistent with the CLI (Docker cannot run here)."""

from __future__ import annotations

import json
import shlex

import pytest
import yaml

from service.settings import Settings
from tests.service.fixtures import REPOSITORY_ROOT
from trustdiff.cli import build_parser


@pytest.fixture(scope="module")
def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((REPOSITORY_ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_services_and_a_gpu_worker(compose: dict) -> None:  # type: ignore[type-arg]
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker"}
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
        mounts = services[name]["volumes"]
        assert any(mount.endswith(":/models:ro") for mount in mounts)
        assert any(mount.endswith(":/data:ro") for mount in mounts)


def test_compose_and_dockerfile_commands_are_real_cli_commands(compose: dict) -> None:  # type: ignore[type-arg]
    parser = build_parser()
    commands = [compose["services"][name]["command"] for name in ("migrate", "api", "worker")]
    dockerfile = (REPOSITORY_ROOT / "Dockerfile").read_text()
    cmd_line = next(line for line in dockerfile.splitlines() if line.startswith("CMD "))
    commands.append(json.loads(cmd_line.removeprefix("CMD ")))
    for command in commands:
        assert command[0] == "trustdiff", command
        args = parser.parse_args(command[1:])
        assert callable(args.func), shlex.join(command)


def test_compose_environment_is_read_by_settings(
    compose: dict,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environment = compose["services"]["api"]["environment"]
    for name, value in environment.items():
        monkeypatch.setenv(
            name,
            value.replace("${POSTGRES_PASSWORD:-trustdiff}", "pw").replace(
                "${TRUSTDIFF_CALLBACK_SECRET:-}", ""
            ),
        )
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://trustdiff:pw@postgres:5432/trustdiff"
    assert settings.broker_url == "redis://redis:6379/0"
    assert settings.callback_secret is None
