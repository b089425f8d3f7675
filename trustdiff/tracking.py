"""Log an audit's result to an MLflow run: metrics with their intervals, params, tags, artifacts.

Needs the `mlflow` extra (`pip install 'trustdiff[mlflow]'`, which brings `mlflow-skinny`).
The names follow the result document's paths, so `calibration.delta.ece.ci_high` in MLflow is
`result["calibration"]["delta"]["ece"]["ci_high"]` in the JSON.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trustdiff.errors import ConfigError

if TYPE_CHECKING:
    from trustdiff.result import AuditResult

DEFAULT_EXPERIMENT = "trustdiff"
# Per-instance records, plotting data and matrices are artifacts, not scalar metrics.
_NOT_METRICS = frozenset(
    {"instances", "manifest", "histogram", "bins", "reliability", "gate", "settings"}
)
_NOT_METRICS_PATHS = frozenset({"parity.disagreement_matrix"})
# MLflow accepts letters, digits, `_ - . / ` and spaces in keys; anything else is replaced.
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-./ ]")
# Param values are capped by MLflow (6,000 characters on current stores).
MAX_PARAM_LENGTH = 6000


def _key(parts: tuple[str, ...]) -> str:
    return ".".join(_KEY_UNSAFE.sub("_", part) for part in parts)


def _numbers(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], float]]:
    if isinstance(node, Mapping):
        for name, value in node.items():
            if str(name) in _NOT_METRICS or _key((*path, str(name))) in _NOT_METRICS_PATHS:
                continue
            yield from _numbers(value, (*path, str(name)))
    elif isinstance(node, bool) or node is None:
        return
    elif isinstance(node, int | float) and math.isfinite(node):
        yield path, float(node)


def result_metrics(result: AuditResult) -> dict[str, float]:
    """Every scalar of the parity, calibration and alignment summaries, by dotted path.

    Intervals keep their bounds (`calibration.delta.ece.value`, `.ci_low`, `.ci_high`),
    alignment summaries their mean, median and interval; `gate.<check>` is each check's
    value, `timings.<stage>` the seconds each stage took.
    """
    document = result.model_dump(mode="json")
    metrics = {
        _key(path): value
        for section in ("parity", "calibration", "alignment")
        for path, value in _numbers(document.get(section) or {}, (section,))
    }
    for check in result.gate.checks:
        if check.value is not None and math.isfinite(check.value):
            metrics[_key(("gate", check.name))] = float(check.value)
    for stage, seconds in result.manifest.timings.items():
        metrics[_key(("timings", stage))] = float(seconds)
    return metrics


def _flatten(node: Any, path: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    if isinstance(node, Mapping) and node:
        for name, value in node.items():
            yield from _flatten(value, (*path, str(name)))
    else:
        text = node if isinstance(node, str) else json.dumps(node, sort_keys=True)
        yield _key(path), text[:MAX_PARAM_LENGTH]


def result_params(result: AuditResult) -> dict[str, str]:
    """The configuration as run (`config.explain.instances`, …), and the path, transform and
    fingerprint of every audited checkpoint (the twin's too, when there is one)."""
    manifest = result.manifest
    params = dict(_flatten(manifest.config, ("config",)))
    checkpoints = {"reference": manifest.reference, "candidate": manifest.candidate}
    if manifest.twin is not None:
        checkpoints["twin"] = manifest.twin
    for role, checkpoint in checkpoints.items():
        params[f"{role}.path"] = checkpoint.path
        params[f"{role}.transform"] = checkpoint.transform or "none"
        params[f"{role}.fingerprint"] = checkpoint.fingerprint
    params["dataset.path"] = manifest.dataset.path
    params["dataset.fingerprint"] = manifest.dataset.fingerprint
    params["dataset.rows"] = str(manifest.dataset.rows)
    params["seed"] = str(manifest.seed)
    params["device"] = manifest.device
    return params


def result_tags(result: AuditResult) -> dict[str, str]:
    """`trustdiff.gate=passed|failed` and `trustdiff.check.<name>=passed|failed`."""
    tags = {"trustdiff.gate": "passed" if result.gate.passed else "failed"}
    for check in result.gate.checks:
        tags[f"trustdiff.check.{_key((check.name,))}"] = "passed" if check.passed else "failed"
    tags["trustdiff.schema_version"] = result.schema_version
    return tags


def log_audit(
    result: AuditResult,
    *,
    report_html: str | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log `result` to a new MLflow run and return its run id.

    `tracking_uri` defaults to MLflow's own resolution (`MLFLOW_TRACKING_URI`, else ./mlruns);
    the experiment (default `trustdiff`) is created when missing. The result JSON and, when
    given, the HTML report are logged as artifacts `trustdiff/result.json` and
    `trustdiff/report.html`.
    """
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as error:
        raise ConfigError(
            "MLflow logging needs the mlflow extra: pip install 'trustdiff[mlflow]'"
        ) from error
    from trustdiff.result import dump_result

    client = MlflowClient(tracking_uri=tracking_uri)
    name = experiment or DEFAULT_EXPERIMENT
    found = client.get_experiment_by_name(name)
    experiment_id = found.experiment_id if found else client.create_experiment(name)
    manifest = result.manifest
    default_name = f"{manifest.candidate.path} vs {manifest.reference.path}"
    run = client.create_run(
        experiment_id,
        run_name=run_name or default_name,
        tags={**result_tags(result), **dict(tags or {})},
    )
    run_id: str = run.info.run_id
    try:
        _log_batches(client, run_id, result)
        with tempfile.TemporaryDirectory(prefix="trustdiff-mlflow-") as folder:
            artifacts = Path(folder) / "trustdiff"
            artifacts.mkdir()
            (artifacts / "result.json").write_text(dump_result(result) + "\n", encoding="utf-8")
            if report_html is not None:
                (artifacts / "report.html").write_text(report_html, encoding="utf-8")
            client.log_artifacts(run_id, str(artifacts), artifact_path="trustdiff")
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def _log_batches(client: Any, run_id: str, result: AuditResult) -> None:
    import time

    from mlflow.entities import Metric, Param

    timestamp = int(time.time() * 1000)
    metrics = [
        Metric(key, value, timestamp, 0) for key, value in sorted(result_metrics(result).items())
    ]
    params = [Param(key, value) for key, value in sorted(result_params(result).items())]
    # MLflow's batch limits: 1,000 metrics and 100 params per call.
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    for start in range(0, len(params), 100):
        client.log_batch(run_id, params=params[start : start + 100])
