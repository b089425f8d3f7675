"""A finished audit of the tiny fixture models, shared by the report's integration tests."""

from __future__ import annotations

import pytest

from tests.conftest import TinyAssets
from trustdiff.config import (
    AuditConfig,
    CalibrationSettings,
    CheckpointSpec,
    DatasetSpec,
    ExplainSettings,
)
from trustdiff.result import AuditResult


@pytest.fixture(scope="session")
def tiny_audit_result(tiny_assets: TinyAssets) -> AuditResult:
    from trustdiff.audit import run_audit

    config = AuditConfig(
        reference=CheckpointSpec(path="reference"),
        candidate=CheckpointSpec(path="perturbed"),
        dataset=DatasetSpec(path=tiny_assets.dataset.name),
        explain=ExplainSettings(instances=2, lime_samples=50, shap_max_evals=50, top_k=3),
        calibration=CalibrationSettings(n_bootstrap=50),
        device="cpu",
    )
    return run_audit(config, model_root=tiny_assets.model_root, data_root=tiny_assets.data_root)
