"""A worker with TRUSTDIFF_MLFLOW_TRACKING_URI logs each succeeded audit to MLflow (a real
SQLite tracking store), and, in JSON log format, every line of the job carries its audit id."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.signals import task_postrun, task_prerun

from service.db import Database
from service.logs import log_handler
from service.settings import Settings
from tests.workers.test_runner import load, submit
from workers import celery_app  # noqa: F401  (as in the worker: connects its log signals)
from workers.runner import run_audit_job

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

pytestmark = pytest.mark.services


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Everything logged meanwhile, as the worker writes it with TRUSTDIFF_LOG_FORMAT=json."""
    stream = io.StringIO()
    handler = log_handler("json")
    handler.setStream(stream)  # type: ignore[attr-defined]
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def test_a_succeeded_audit_is_logged_to_mlflow_and_its_log_lines_carry_its_id(
    parked_settings: Settings, parked_database: Database, tmp_path: Path, json_log: io.StringIO
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = MlflowClient(tracking_uri=uri)
    tracking.create_experiment("audits", artifact_location=(tmp_path / "artifacts").as_uri())
    settings = parked_settings.model_copy(
        update={"mlflow_tracking_uri": uri, "mlflow_experiment": "audits"}
    )
    audit_id = submit(parked_database, settings)

    # As the Celery task does: the worker's signals put the id in the log context.
    task_prerun.send(sender=None, task_id="task-1", task=None, args=[str(audit_id)])
    try:
        status = run_audit_job(audit_id, database=parked_database, settings=settings)
    finally:
        task_postrun.send(sender=None, task_id="task-1", task=None)
    assert status == "succeeded"
    audit = load(parked_database, audit_id)

    (experiment,) = [e for e in tracking.search_experiments() if e.name == "audits"]
    (run,) = tracking.search_runs(
        [experiment.experiment_id], f"tags.`trustdiff.audit_id` = '{audit_id}'"
    )
    assert run.data.tags["trustdiff.gate"] == ("passed" if audit.passed else "failed")
    assert run.data.metrics["parity.agreement"] == pytest.approx(
        audit.result["parity"]["agreement"]  # type: ignore[index]
    )
    artifacts = {item.path for item in tracking.list_artifacts(run.info.run_id, "trustdiff")}
    assert artifacts == {"trustdiff/result.json", "trustdiff/report.html"}

    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    job_lines = [line for line in lines if line["logger"].startswith("workers.")]
    assert any("logged to MLflow run" in line["message"] for line in job_lines)
    assert job_lines and all(line["audit_id"] == str(audit_id) for line in job_lines), [
        line for line in job_lines if line["audit_id"] != str(audit_id)
    ]
    logging.getLogger("workers.runner").info("after the task")
    assert json.loads(json_log.getvalue().splitlines()[-1])["audit_id"] is None


def test_a_tracking_server_that_is_down_costs_a_warning_not_the_audit(
    parked_settings: Settings, parked_database: Database, tmp_path: Path, json_log: io.StringIO
) -> None:
    settings = parked_settings.model_copy(
        update={"mlflow_tracking_uri": "http://127.0.0.1:9/", "mlflow_experiment": "audits"}
    )
    audit_id = submit(parked_database, settings, explain={"instances": 0})
    import os

    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        assert run_audit_job(audit_id, database=parked_database, settings=settings) == "succeeded"
    finally:
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
    assert load(parked_database, audit_id).status == "succeeded"
    warnings = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert any(
        line["level"] == "WARNING" and "MLflow logging failed" in line["message"]
        and "exception" in line
        for line in warnings
    )  # fmt: skip
