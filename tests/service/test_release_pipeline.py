"""The CI templates in examples/ci, run as written against `trustdiff serve` (embedded
default) on the fixture models, so they cannot rot; one run loses a response on the way."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import TinyAssets
from tests.service.fixtures import FAST_SETTINGS, REPOSITORY_ROOT, start_process, stop_process
from tests.service.live_server import flaky_proxy, free_port
from tests.service.test_embedded import ready
from trustdiff.client import TrustdiffClient

EXAMPLES = REPOSITORY_ROOT / "examples" / "ci"
# What the test puts in place of the templates' placeholders.
JOB_VARIABLES = {
    "REFERENCE_MODEL": "reference",
    "CANDIDATE_MODEL": "perturbed",
    "EVAL_DATA": "data/dev.jsonl",
}


def github_job() -> tuple[list[str], dict[str, Any], list[str]]:
    """The `trustdiff` lines of the job's steps, the job's env, the artifact paths."""
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    (job,) = workflow["jobs"].values()
    commands = [
        command
        for step in job["steps"]
        if "run" in step
        for command in shell_commands(step["run"])
        if command.startswith("trustdiff ")
    ]
    upload = next(step for step in job["steps"] if str(step.get("uses", "")).startswith(
        "actions/upload-artifact"
    ))  # fmt: skip
    return commands, job["env"], upload["with"]["path"].split()


def gitlab_job() -> tuple[list[str], dict[str, Any], list[str]]:
    pipeline = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())
    job = pipeline["trustdiff"]
    commands = [line for line in job["script"] if line.startswith("trustdiff ")]
    return commands, job["variables"], job["artifacts"]["paths"]


def shell_commands(script: str) -> list[str]:
    """A `run:` block's commands, backslash continuations joined."""
    return [command.strip() for command in re.sub(r"\\\n\s*", " ", script).splitlines()]


@pytest.fixture(scope="module")
def embedded_server(
    tiny_assets: TinyAssets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """`trustdiff serve` with no configuration but its roots; yields (URL, API key)."""
    home = tmp_path_factory.mktemp("pipeline-home")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TRUSTDIFF_") and name not in {"DATABASE_URL", "BROKER_URL"}
    }
    model_root, data_root = tiny_assets.give_to_tenants(home / "roots", "ci")
    env.update(
        TRUSTDIFF_HOME=str(home),
        TRUSTDIFF_MODEL_ROOT=str(model_root),
        TRUSTDIFF_DATA_ROOT=str(data_root),
    )
    url = f"http://127.0.0.1:{free_port()}"
    log_path = home / "serve.log"
    serve = start_process(
        [sys.executable, "-m", "trustdiff", "serve", "--port", url.rsplit(":", 1)[1]],
        env,
        log_path,
        ready=lambda: ready(f"{url}/v1/readyz"),
    )
    try:
        key = subprocess.run(
            [sys.executable, "-m", "trustdiff", "keys", "create", "--tenant", "ci"],
            cwd=REPOSITORY_ROOT, env=env, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        yield url, key
    finally:
        stop_process(serve, timeout_s=45)


@pytest.mark.parametrize("template", ["github-actions", "gitlab-ci"])
def test_ci_template_runs_against_the_embedded_service(
    template: str,
    embedded_server: tuple[str, str],
    tiny_assets: TinyAssets,
    tmp_path: Path,
) -> None:
    url, key = embedded_server
    commands, job_env, artifacts = github_job() if template == "github-actions" else gitlab_job()
    assert len(commands) == 1 and commands[0].startswith("trustdiff submit "), commands
    assert set(JOB_VARIABLES) <= set(job_env), "the template's variables changed: update the test"
    # The job's checkout: the evaluation set and the audit settings file it passes.
    workspace = tmp_path / "checkout"
    (workspace / "data").mkdir(parents=True)
    shutil.copy(tiny_assets.dataset, workspace / JOB_VARIABLES["EVAL_DATA"])
    (workspace / "trustdiff.yaml").write_text(yaml.safe_dump(FAST_SETTINGS))
    with TrustdiffClient(url, key) as client:
        audits_before = len(client.audits(limit=100).items)
    # The GitHub run goes through a proxy that loses the submission's first response.
    lost = {("POST", "/v1/audits"): 1} if template == "github-actions" else {}
    with flaky_proxy(url, lost) as proxy:
        env = {
            **{
                name: value
                for name, value in os.environ.items()
                if not name.startswith("TRUSTDIFF_")
            },
            **JOB_VARIABLES,
            "TRUSTDIFF_URL": proxy.url,
            "TRUSTDIFF_API_KEY": key,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        completed = subprocess.run(
            ["bash", "-ec", commands[0]], cwd=workspace, env=env, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
    output = completed.stdout + completed.stderr
    result_path = workspace / "trustdiff-result.json"
    assert result_path.exists(), output
    result = json.loads(result_path.read_text())
    assert completed.returncode == (0 if result["gate"]["passed"] else 1), output
    assert ("verdict: PASS" if result["gate"]["passed"] else "verdict: FAIL") in completed.stdout
    assert result["manifest"]["candidate"]["path"] == "perturbed"
    assert (
        result["manifest"]["config"]["explain"]["instances"]
        == FAST_SETTINGS["explain"]["instances"]
    )
    for artifact in artifacts:
        assert (workspace / artifact).is_file(), f"{template} keeps {artifact}, never written"
    with TrustdiffClient(url, key) as client:
        assert len(client.audits(limit=100).items) == audits_before + 1
    if lost:
        assert [seen[3] for seen in proxy.seen if seen[:2] == ("POST", "/v1/audits")] == [502, 202]
