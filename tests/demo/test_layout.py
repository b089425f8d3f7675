"""The demo is a program run from a checkout: never installed with the package, yet type-checked."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_installs_the_engine_and_service_but_not_the_demo() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    find = pyproject["tool"]["setuptools"]["packages"]["find"]

    installed = find_packages(str(ROOT), include=find["include"], exclude=find.get("exclude", ()))

    assert {"trustdiff", "service", "workers"} <= set(installed)
    assert not [name for name in installed if name.split(".")[0] in {"demo", "bench", "tests"}]
    assert "demo" in pyproject["tool"]["mypy"]["packages"]
