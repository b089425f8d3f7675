"""trustdiff: audit a compressed text classifier against its reference for trust-equivalence.

The Python API, importable from the package itself::

    from trustdiff import AuditConfig, CheckpointSpec, DatasetSpec, render_report, run_audit

Names load on first use (PEP 562), so `import trustdiff` stays cheap: nothing of numpy,
pydantic, torch or the report's templates is imported until a name that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "run_audit": "trustdiff.audit",
    "validate_audit": "trustdiff.audit",
    "AuditConfig": "trustdiff.config",
    "CheckpointSpec": "trustdiff.config",
    "DatasetSpec": "trustdiff.config",
    "CalibrationSettings": "trustdiff.config",
    "ExplainSettings": "trustdiff.config",
    "GateSettings": "trustdiff.config",
    "CheckSetting": "trustdiff.config",
    "AuditResult": "trustdiff.result",
    "dump_result": "trustdiff.result",
    "render_report": "trustdiff.report",
    "TrustdiffError": "trustdiff.errors",
}

__all__ = [
    "AuditConfig",
    "AuditResult",
    "CalibrationSettings",
    "CheckSetting",
    "CheckpointSpec",
    "DatasetSpec",
    "ExplainSettings",
    "GateSettings",
    "TrustdiffError",
    "__version__",
    "dump_result",
    "render_report",
    "run_audit",
    "validate_audit",
]

if TYPE_CHECKING:
    from trustdiff.audit import run_audit, validate_audit
    from trustdiff.config import (
        AuditConfig,
        CalibrationSettings,
        CheckpointSpec,
        CheckSetting,
        DatasetSpec,
        ExplainSettings,
        GateSettings,
    )
    from trustdiff.errors import TrustdiffError
    from trustdiff.report import render_report
    from trustdiff.result import AuditResult, dump_result


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trustdiff' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
