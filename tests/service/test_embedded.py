"""`trustdiff serve` with no database or broker configured: SQLite, a local broker transport
and a worker it supervises, driven over real HTTP from a create-key-to-gate run."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import TinyAssets
from tests.service.fixtures import REPOSITORY_ROOT, start_process, stop_process


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def children_of(pid: int) -> list[int]:
    # Per thread: the supervisor thread, not the main one, starts the worker.
    return sorted(
        int(child)
        for children in Path(f"/proc/{pid}/task").glob("*/children")
        for child in children.read_text().split()
    )


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


def ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def embedded_env(tmp_path: Path, tiny_assets: TinyAssets) -> dict[str, str]:
    """The environment of a fresh laptop: only the state folder and the two roots are set."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("TRUSTDIFF_") and name not in {"DATABASE_URL", "BROKER_URL"}
    }
    model_root, data_root = tiny_assets.give_to_tenants(tmp_path / "roots", "laptop")
    env.update(
        TRUSTDIFF_HOME=str(tmp_path / "home"),
        TRUSTDIFF_MODEL_ROOT=str(model_root),
        TRUSTDIFF_DATA_ROOT=str(data_root),
        # Blocks of 4 instances: the audit below runs as shards on the one worker.
        TRUSTDIFF_BLOCK_INSTANCES="4",
    )
    return env


def create_key(env: dict[str, str]) -> str:
    """A key for the tenant "laptop", from `trustdiff keys create` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "trustdiff", "keys", "create", "--tenant", "laptop"],
        cwd=REPOSITORY_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def get_healthz(connection: http.client.HTTPConnection) -> int:
    connection.request("GET", "/v1/healthz")
    response = connection.getresponse()
    response.read()
    return response.status


def test_serve_alone_runs_an_audit_end_to_end_and_stops_cleanly(
    embedded_env: dict[str, str], tiny_assets: TinyAssets, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    serve = start_process(
        [sys.executable, "-m", "trustdiff", "serve", "--port", str(port)],
        embedded_env,
        log_path,
        ready=lambda: ready(f"{base}/v1/readyz"),
    )
    try:
        home = Path(embedded_env["TRUSTDIFF_HOME"])
        assert (home / "trustdiff.sqlite").exists(), log_path.read_text()
        key = create_key(embedded_env)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as api:
            upload = api.post(
                "/v1/datasets",
                files={
                    "file": ("eval.tsv", (tiny_assets.data_root / "sentiment.tsv").read_bytes())
                },
            )
            assert upload.status_code == 201, upload.text
            body = {
                "reference": {"path": "reference"},
                "candidate": {"path": "reference", "transform": "int8-dynamic"},
                "dataset": {"id": upload.json()["id"]},
                "explain": {
                    "instances": 8,
                    "methods": ["lime"],
                    "lime_samples": 30,
                    "top_k": 3,
                },
                "calibration": {"n_bootstrap": 50},
                "seed": 0,
            }
            submitted = api.post("/v1/audits", json=body, headers={"Idempotency-Key": "laptop-1"})
            assert submitted.status_code == 202, submitted.text
            location = submitted.headers["location"]
            deadline = time.monotonic() + 150
            while (audit := api.get(location).json())["status"] in {"queued", "running"}:
                assert time.monotonic() < deadline, f"still {audit}\n{log_path.read_text()}"
                time.sleep(0.5)
            assert audit["status"] == "succeeded", f"{audit}\n{log_path.read_text()}"
            gate = api.get(f"{location}/gate").json()
            assert gate["passed"] is audit["passed"]
            result = api.get(f"{location}/result").json()
            assert result["manifest"]["dataset"]["rows"] == 48
            assert len(result["instances"]) == 8
        # Its prediction shard, two explanation blocks and finaliser ran on the one worker.
        with sqlite3.connect(home / "trustdiff.sqlite") as database:
            shards = database.execute(
                'SELECT kind, status, attempts FROM audit_shards ORDER BY kind, "index"'
            ).fetchall()
        assert shards == [
            ("explain", "done", 1),
            ("explain", "done", 1),
            ("finalise", "done", 1),
            ("predict", "done", 1),
        ]
        # An idle keep-alive connection outlives the 5 s clients keep theirs, so reusing one
        # never races the server closing it.
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            assert get_healthz(connection) == 200
            kept = connection.sock
            time.sleep(6)
            assert get_healthz(connection) == 200 and connection.sock is kept
        finally:
            connection.close()
        workers = children_of(serve.pid)
        assert len(workers) == 1, "serve should supervise exactly one worker process"
        # The worker yields the CPU to the gateway (nice is field 19 of /proc/<pid>/stat).
        stat = Path(f"/proc/{workers[0]}/stat").read_text().rsplit(")", 1)[1].split()
        assert int(stat[16]) == os.getpriority(os.PRIO_PROCESS, 0) + 10
        # A worker that dies is replaced.
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while children_of(serve.pid) in ([], workers):
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.2)
        workers = children_of(serve.pid)
    finally:
        code = stop_process(serve, timeout_s=45)
    assert code == 0, log_path.read_text()
    assert not any(is_alive(pid) for pid in workers), "the worker outlived serve"


def test_serve_with_two_gateway_processes_answers_from_both_and_stops_them(
    embedded_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    command = [sys.executable, "-m", "trustdiff", "serve", "--port", str(port), "--no-worker"]
    serve = start_process(
        [*command, "--processes", "2"],
        embedded_env,
        log_path,
        ready=lambda: ready(f"{base}/v1/readyz"),
    )
    try:
        key = create_key(embedded_env)
        gateways = children_of(serve.pid)
        assert len(gateways) >= 2, log_path.read_text()
        # Fresh connections land on either process; each authenticates against the one
        # SQLite database and answers the same.
        for _ in range(20):
            listed = httpx.get(f"{base}/v1/audits", headers={"Authorization": f"Bearer {key}"})
            assert listed.status_code == 200 and listed.json()["items"] == []
    finally:
        code = stop_process(serve, timeout_s=45)
    assert code == 0, log_path.read_text()
    # The spawned processes (and multiprocessing's resource tracker, which leaves when it sees
    # serve's end of its pipe close) are gone moments after serve.
    deadline = time.monotonic() + 15
    while any(is_alive(pid) for pid in gateways):
        assert time.monotonic() < deadline, "a gateway process outlived serve"
        time.sleep(0.2)
