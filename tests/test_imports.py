"""Import hygiene: the engine's light modules never pull in the service stack or torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVICE_STACK = ("fastapi", "sqlalchemy", "celery")
HEAVY_ML = ("torch", "transformers", "shap", "lime")


def _imported_after(modules: list[str]) -> set[str]:
    """Top-level package names in sys.modules after importing `modules` in a fresh process."""
    script = (
        "import json, sys\n"
        f"for name in {modules!r}:\n"
        "    __import__(name)\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(completed.stdout))


def test_engine_modules_never_import_the_service_stack() -> None:
    imported = _imported_after(
        [
            "trustdiff",
            "trustdiff.metrics.parity",
            "trustdiff.metrics.calibration",
            "trustdiff.result",
            "trustdiff.config",
            "trustdiff.checkpoints",
            "trustdiff.datasets",
        ]
    )
    assert not imported & set(SERVICE_STACK)


@pytest.mark.parametrize(
    "module",
    [
        "trustdiff.checkpoints",
        "trustdiff.datasets",
        "trustdiff.config",
        "trustdiff.result",
        "trustdiff.paths",
        "trustdiff.gate",
        # the gateway validates audits synchronously: this import must stay cheap
        "trustdiff.audit",
    ],
)
def test_gateway_facing_modules_do_not_import_torch(module: str) -> None:
    imported = _imported_after([module])
    assert not imported & set(HEAVY_ML + SERVICE_STACK)
