"""docker-compose.yml and the Dockerfile stay consistent with the CLI (Docker cannot run here)."""

from __future__ import annotations

import json
import re
import shlex

import pytest
import yaml

from service.settings import Settings
from tests.service.fixtures import REPOSITORY_ROOT
from trustdiff.cli import build_parser


@pytest.fixture(scope="module")
def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((REPOSITORY_ROOT / "docker-compose.yml").read_text())


def with_defaults(value: str, **variables: str) -> str:
    """`value` as compose interpolates it: `${NAME:-default}` is `variables[NAME]` when
    given, else its default."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda match: variables.get(match[1], match[2]), value)


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
        args = parser.parse_args([with_defaults(part) for part in command[1:]])
        assert callable(args.func), shlex.join(command)


def test_compose_worker_concurrency_and_block_size_are_settable(compose: dict) -> None:  # type: ignore[type-arg]
    worker = compose["services"]["worker"]
    command = [with_defaults(part, TRUSTDIFF_WORKER_CONCURRENCY="14") for part in worker["command"]]
    assert build_parser().parse_args(command[1:]).concurrency == 14
    default = [with_defaults(part) for part in worker["command"]]
    assert build_parser().parse_args(default[1:]).concurrency == 1
    assert worker["environment"]["TRUSTDIFF_BLOCK_INSTANCES"].startswith("${")


def test_compose_environment_is_read_by_settings(
    compose: dict,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environment = compose["services"]["api"]["environment"]
    for name, value in environment.items():
        monkeypatch.setenv(name, with_defaults(value, POSTGRES_PASSWORD="pw"))
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://trustdiff:pw@postgres:5432/trustdiff"
    assert settings.broker_url == "redis://redis:6379/0"
    assert settings.callback_secret is None
    assert settings.block_instances == 32
