"""MLflow logging on a real local tracking store (SQLite backend, file artifact root),
read back with MlflowClient."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TinyAssets
from tests.report.builders import build_audit_result
from trustdiff.cli import main
from trustdiff.result import AuditResult
from trustdiff.tracking import log_audit, result_metrics, result_params

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, MlflowClient]:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment("release-gates", artifact_location=(root / "artifacts").as_uri())
    return uri, client


def test_an_audit_is_logged_with_intervals_params_tags_and_artifacts(
    tracking: tuple[str, MlflowClient],
) -> None:
    uri, client = tracking
    result = build_audit_result(passed=False)
    run_id = log_audit(
        result,
        report_html="<!doctype html><title>report</title>",
        tracking_uri=uri,
        experiment="release-gates",
        tags={"trustdiff.audit_id": "a-1"},
    )
    run = client.get_run(run_id)
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    assert run.info.status == "FINISHED"
    assert metrics["parity.agreement"] == pytest.approx(result.parity.agreement)
    ece = result.calibration.delta["ece"]
    assert metrics["calibration.delta.ece.value"] == pytest.approx(ece.value)
    assert metrics["calibration.delta.ece.ci_low"] == pytest.approx(ece.ci_low)
    assert metrics["calibration.delta.ece.ci_high"] == pytest.approx(ece.ci_high)
    lime = result.alignment["lime"].jaccard_at_k
    assert metrics["alignment.lime.jaccard_at_k.mean"] == pytest.approx(lime.mean)
    assert metrics["alignment.lime.jaccard_at_k.ci_high"] == pytest.approx(lime.ci_high)
    assert set(metrics) == set(result_metrics(result))
    assert not any(key.startswith("instances") or "histogram" in key for key in metrics)

    manifest = result.manifest
    assert params["reference.fingerprint"] == manifest.reference.fingerprint
    assert params["candidate.fingerprint"] == manifest.candidate.fingerprint
    assert params["dataset.fingerprint"] == manifest.dataset.fingerprint
    assert params["config.explain.instances"] == str(manifest.config["explain"]["instances"])  # type: ignore[index]

    assert tags["trustdiff.gate"] == "failed"
    assert tags["trustdiff.audit_id"] == "a-1"
    for check in result.gate.checks:
        assert tags[f"trustdiff.check.{check.name}"] == ("passed" if check.passed else "failed")

    artifacts = {item.path for item in client.list_artifacts(run_id, "trustdiff")}
    assert artifacts == {"trustdiff/result.json", "trustdiff/report.html"}
    local = Path(client.download_artifacts(run_id, "trustdiff/result.json"))
    assert AuditResult.model_validate(json.loads(local.read_text())) == result


def test_a_twin_is_logged_like_the_other_checkpoints() -> None:
    result = build_audit_result()
    manifest = result.manifest
    assert not any(key.startswith("twin.") for key in result_params(result))
    twin = manifest.reference.model_copy(update={"path": "models/bert-seed2", "fingerprint": "f"})
    with_twin = result.model_copy(update={"manifest": manifest.model_copy(update={"twin": twin})})
    params = result_params(with_twin)
    assert (params["twin.path"], params["twin.fingerprint"]) == ("models/bert-seed2", "f")
    assert params["twin.transform"] == "none"


def test_a_passing_audit_is_tagged_passed_without_a_report(
    tracking: tuple[str, MlflowClient],
) -> None:
    uri, client = tracking
    run_id = log_audit(
        build_audit_result(passed=True, with_alignment=False),
        tracking_uri=uri,
        experiment="release-gates",
    )
    run = client.get_run(run_id)
    assert run.data.tags["trustdiff.gate"] == "passed"
    assert not any(key.startswith("alignment.") for key in run.data.metrics)
    assert {item.path for item in client.list_artifacts(run_id, "trustdiff")} == {
        "trustdiff/result.json"
    }


def test_audit_with_mlflow_logs_the_run_it_prints(
    tiny_assets: TinyAssets,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment("cli", artifact_location=(tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "result.json"
    code = main(
        [
            "audit", "--reference", str(tiny_assets.reference),
            "--candidate", str(tiny_assets.reference), "--candidate-transform", "int8-dynamic",
            "--dataset", str(tiny_assets.dataset), "--bootstrap", "50",
            "--explain-instances", "0", "--device", "cpu", "--out", str(out),
            "--mlflow", "--mlflow-experiment", "cli", "--quiet",
        ]
    )  # fmt: skip
    printed = capsys.readouterr()
    result = AuditResult.model_validate_json(out.read_text())
    assert code == (0 if result.gate.passed else 1), printed.err
    run_id = printed.err.split("logged to MLflow run ")[1].split()[0]
    run = client.get_run(run_id)
    assert run.data.tags["trustdiff.gate"] == ("passed" if result.gate.passed else "failed")
    assert run.data.metrics["parity.agreement"] == pytest.approx(result.parity.agreement)
    assert run.data.params["candidate.transform"] == "int8-dynamic"
    artifacts = {item.path for item in client.list_artifacts(run_id, "trustdiff")}
    assert artifacts == {"trustdiff/result.json", "trustdiff/report.html"}
