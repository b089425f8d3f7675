"""The Python API: what `from trustdiff import ...` offers, and how it takes paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from pydantic import ValidationError

import trustdiff
from tests.conftest import TinyAssets
from tests.report.builders import build_audit_result


def test_the_documented_names_import_from_the_package() -> None:
    from trustdiff import AuditConfig, CheckpointSpec, DatasetSpec, render_report, run_audit
    from trustdiff.audit import run_audit as engine_run_audit
    from trustdiff.config import AuditConfig as EngineAuditConfig
    from trustdiff.report import render_report as report_render_report

    assert run_audit is engine_run_audit
    assert AuditConfig is EngineAuditConfig
    assert render_report is report_render_report
    assert CheckpointSpec(path="m").path == "m"
    assert DatasetSpec(path="d.jsonl").path == "d.jsonl"
    for name in trustdiff.__all__:
        assert getattr(trustdiff, name) is not None
    assert set(trustdiff.__all__) <= set(dir(trustdiff))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'run_audits'"):
        trustdiff.run_audits  # noqa: B018


def test_importing_the_package_loads_nothing_heavy() -> None:
    script = (
        "import json, sys, trustdiff\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    loaded = set(json.loads(completed.stdout))
    assert not loaded & {"numpy", "pydantic", "torch", "transformers", "jinja2", "yaml"}


def test_specs_take_path_like_paths_and_store_strings(tmp_path: Path) -> None:
    checkpoint = trustdiff.CheckpointSpec(path=tmp_path / "model")
    assert checkpoint.path == str(tmp_path / "model")
    assert trustdiff.DatasetSpec(path=PurePosixPath("data/dev.jsonl")).path == "data/dev.jsonl"
    with pytest.raises(ValidationError, match="valid string"):
        trustdiff.CheckpointSpec(path=3)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="at least 1 character"):
        trustdiff.DatasetSpec(path="")


def test_run_audit_takes_path_like_specs_and_roots(tiny_assets: TinyAssets) -> None:
    config = trustdiff.AuditConfig(
        reference=trustdiff.CheckpointSpec(path=Path("reference")),
        candidate=trustdiff.CheckpointSpec(path=tiny_assets.perturbed),
        dataset=trustdiff.DatasetSpec(path=Path("sentiment.jsonl"), limit=12),
        calibration=trustdiff.CalibrationSettings(n_bootstrap=0),
        explain=trustdiff.ExplainSettings(instances=0),
        device="cpu",
    )
    result = trustdiff.run_audit(
        config, model_root=tiny_assets.model_root, data_root=str(tiny_assets.data_root)
    )
    assert result.manifest.reference.path == "reference"
    assert result.manifest.candidate.path == str(tiny_assets.perturbed)
    assert result.manifest.dataset.rows == 12
    document = json.loads(trustdiff.dump_result(result))
    assert document["manifest"]["config"]["dataset"]["path"] == "sentiment.jsonl"


def test_a_result_shows_its_html_report_in_jupyter() -> None:
    result = build_audit_result(passed=True)
    page = result._repr_html_()
    assert page == trustdiff.render_report(result)
    assert page.lstrip().lower().startswith("<!doctype html>")
