"""`pip install trustdiff` is the engine and its CLI; the gateway and workers are the extra."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import TinyAssets

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPOSITORY_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# Named here as well as in pyproject.toml: moving one of these into the core list by mistake
# must fail a test, not silently redefine what "the service packages" are.
SERVICE_PACKAGES = {
    "fastapi",
    "starlette",
    "uvicorn",
    "python-multipart",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "celery",
    "kombu",
    "redis",
    "pydantic-settings",
}
SERVICE_COMMANDS = (["serve"], ["worker"], ["keys", "create", "--tenant", "t"], ["migrate"])


def requirement_names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(line).name) for line in requirements}


def service_import_names() -> list[str]:
    """The top-level modules the `service` extra's distributions (as installed) provide."""
    extra = requirement_names(PYPROJECT["project"]["optional-dependencies"]["service"])
    return sorted(
        module
        for module, distributions in packages_distributions().items()
        if any(canonicalize_name(name) in extra for name in distributions) and module.isidentifier()
    )


# A fresh interpreter in which every service package raises ModuleNotFoundError on import,
# as if the extra were not installed; then the `trustdiff` command line runs.
BLOCKED_CLI = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

assert not BLOCKED & {name.partition(".")[0] for name in sys.modules}
sys.meta_path.insert(0, NotInstalled())
from trustdiff.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


def run_without_service(argv: list[str]) -> subprocess.CompletedProcess[str]:
    blocked = service_import_names()
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_CLI, ",".join(blocked), *argv],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_core_requirements_hold_no_service_package() -> None:
    core = requirement_names(PYPROJECT["project"]["dependencies"])
    extra = requirement_names(PYPROJECT["project"]["optional-dependencies"]["service"])
    assert not core & SERVICE_PACKAGES
    assert not core & extra
    assert {"fastapi", "celery", "sqlalchemy", "uvicorn"} <= extra


def test_the_blocked_modules_cover_the_service_stack() -> None:
    blocked = set(service_import_names())
    assert {"fastapi", "uvicorn", "sqlalchemy", "alembic", "celery", "redis"} <= blocked
    assert not blocked & {"torch", "transformers", "pydantic", "numpy", "trustdiff"}


def test_the_engine_audits_with_the_service_packages_unimportable(
    tiny_assets: TinyAssets, tmp_path: Path
) -> None:
    out, report = tmp_path / "result.json", tmp_path / "report.html"
    completed = run_without_service(
        [
            "audit",
            "--reference",
            str(tiny_assets.reference),
            "--candidate",
            str(tiny_assets.perturbed),
            "--dataset",
            str(tiny_assets.dataset),
            "--limit",
            "16",
            "--bootstrap",
            "50",
            "--explain-instances",
            "2",
            "--top-k",
            "3",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            str(out),
            "--report",
            str(report),
        ]
    )
    assert completed.returncode in (0, 1), completed.stderr
    assert "warning" not in completed.stderr
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["parity"]["reference"]["accuracy"] >= 0
    assert set(document["alignment"]) >= {"lime", "shap"}
    assert report.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")


@pytest.mark.parametrize("argv", SERVICE_COMMANDS, ids=lambda argv: argv[0])
def test_service_commands_name_the_extra_to_install(argv: list[str]) -> None:
    completed = run_without_service(argv)
    assert completed.returncode == 2
    assert "pip install 'trustdiff[service]'" in completed.stderr
    assert "fastapi" in completed.stderr  # says what is missing
    assert "Traceback" not in completed.stderr
