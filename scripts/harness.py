"""Shared by `scripts/load.py`, `scripts/chaos.py` and `bench/bench_scale_service.py`: fixture
models, a fresh Postgres database, service processes on 127.0.0.1, and waiting for audits over
HTTP.

Run from the repository root (`make load`, `make chaos`); it imports the test suite's tiny
model builder (so the scripts need no download) and its throwaway Postgres database. Nothing
here talks to another host.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY_ROOT))

from service.serve import KEEP_ALIVE_S  # noqa: E402
from tests.postgres import throwaway_database  # noqa: E402
from tests.tiny_models import build_tiny_bert, sentiment_rows, write_dataset  # noqa: E402

LOOPBACK = "127.0.0.1"
FINAL_STATUSES = {"succeeded", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cores)"


def build_assets(root: Path, *, rows: int, tenant: str) -> tuple[Path, Path]:
    """The fixture models and a sentiment dataset of `rows` rows in `tenant`'s folders of the
    model and data roots (a tenant's paths resolve there); (model root, data root)."""
    models, data = root / "models", root / "data"
    if not (models / tenant / "reference" / "config.json").exists():
        build_tiny_bert(models / tenant / "reference", seed=0)
    write_dataset(data / tenant / "sentiment.jsonl", sentiment_rows(rows, seed=1))
    return models, data


def audit_body(*, seed: int, instances: int, lime_samples: int, rows: int) -> dict[str, Any]:
    return {
        "reference": {"path": "reference"},
        "candidate": {"path": "reference", "transform": "int8-dynamic"},
        "dataset": {
            "path": "sentiment.jsonl",
            "text_field": "text",
            "label_field": "label",
            "limit": rows,
        },
        "explain": {"instances": instances, "lime_samples": lime_samples, "shap_max_evals": 64},
        "calibration": {"n_bootstrap": 100},
        "seed": seed,
    }


def postgres_database() -> contextlib.AbstractContextManager[str]:
    """A Postgres database of its own, dropped at the end; yields its SQLAlchemy URL."""
    return throwaway_database("trustdiff_script")


@dataclass
class Service:
    """Processes started by a script, all stopped (and their groups killed) at the end."""

    env: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(
        self, name: str, command: list[str], *, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `command` logging to `<logs>/<name>.log`, with `env` over the service's."""
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command,
            cwd=REPOSITORY_ROOT,
            env=self.env | (env or {}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a SIGKILL reaches its children too
        )
        self.processes[name] = process
        return process

    def kill(self, name: str) -> None:
        """SIGKILL the process and everything in its group: a crash, not a shutdown."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for name in list(self.processes):
            process = self.processes.pop(name)
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()

    def trustdiff(self, *args: str) -> str:
        """Run a `trustdiff` command to completion; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "trustdiff", *args],
            cwd=REPOSITORY_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()


def gateway_command(port: int | str, *, workers: int | None = None) -> list[str]:
    """uvicorn serving the gateway on 127.0.0.1:`port` (with `workers` processes when given),
    logging warnings only."""
    command = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
    command += ["--host", LOOPBACK, "--port", str(port), "--log-level", "warning"]
    command += ["--timeout-keep-alive", str(KEEP_ALIVE_S)]
    return command if workers is None else [*command, "--workers", str(workers)]


def worker_command(pool: str = "solo") -> list[str]:
    """One `trustdiff worker` running one task at a time: in its own process (solo pool), or
    in one pool child (prefork, as docker-compose deploys it)."""
    command = [sys.executable, "-m", "trustdiff", "worker", f"--pool={pool}", "--log-level=info"]
    return command if pool == "solo" else [*command, "--concurrency=1"]


def wait_until_ready(base: str, *, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/v1/readyz", timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{base} not ready after {timeout_s}s")


def service_env(home: Path, models: Path, data: Path, **settings: str) -> dict[str, str]:
    """The environment for service processes: only what the script sets, plus PATH etc."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TRUSTDIFF_") and name not in {"DATABASE_URL", "BROKER_URL"}
    }
    env.update(
        TRUSTDIFF_HOME=str(home),
        TRUSTDIFF_MODEL_ROOT=str(models),
        TRUSTDIFF_DATA_ROOT=str(data),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update({f"TRUSTDIFF_{name.upper()}": value for name, value in settings.items()})
    return env


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
