"""Audits planned into shards and run by real worker processes (Postgres, Redis): one worker
or three give the engine's own document, and a worker killed mid-shard costs that shard."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.artifacts import ArtifactStore
from service.db import Database
from service.models import Audit, AuditShard, Tenant
from service.settings import Settings
from tests.conftest import TinyAssets
from tests.documents import comparable
from tests.service.fixtures import (
    WORKERS,
    WorkerProcess,
    stop_process,
    wait_for_status,
)
from tests.tiny_models import sentiment_rows, write_dataset
from trustdiff.audit import run_audit
from trustdiff.config import AuditConfig
from trustdiff.result import dump_result
from workers.runner import sweep_stale_audits

pytestmark = pytest.mark.services

FINAL = {"succeeded", "failed", "cancelled"}
# 1,100 rows (TSV: under the test upload limit), three prediction shards of 512 rows under
# the test settings (TRUSTDIFF_SHARD_ROWS).
DATASET = "sharded-1100.tsv"


@pytest.fixture(scope="module")
def sharded_dataset(tiny_assets: TinyAssets) -> str:
    """A dataset of three prediction shards, in every tenant's data folder."""
    write_dataset(tiny_assets.data_root / DATASET, sentiment_rows(1100, seed=11))
    return DATASET


def sharded_body(dataset: str, **explain: Any) -> dict[str, Any]:
    """Three prediction shards and (with 8 instances) two explanation blocks of 4."""
    return {
        "reference": {"path": "reference"},
        "candidate": {"path": "perturbed"},
        "dataset": {"path": dataset, "text_field": "text", "label_field": "label"},
        "explain": {
            "instances": 8,
            "lime_samples": 40,
            "shap_max_evals": 40,
            "top_k": 3,
            "faithfulness": True,
            **explain,
        },
        "calibration": {"n_bootstrap": 50},
        "seed": 0,
    }


def shards_of(database: Database, audit_id: str) -> list[AuditShard]:
    with database.read_transaction() as session:
        return list(
            session.scalars(
                select(AuditShard)
                .where(AuditShard.audit_id == uuid.UUID(audit_id))
                .order_by(AuditShard.kind, AuditShard.index)
            ).all()
        )


def run_to_the_end(client: TestClient, auth: dict[str, str], body: dict[str, Any]) -> str:
    response = client.post("/v1/audits", json=body, headers=auth)
    assert response.status_code == 202, response.text
    audit_id: str = response.json()["id"]
    audit = wait_for_status(client, audit_id, auth, FINAL, timeout_s=180)
    assert audit["status"] == "succeeded", audit
    assert audit["progress"]["stage"] == "done"
    return audit_id


def engine_document(
    database: Database, settings: Settings, audit_id: str, tmp_path: Path
) -> dict[str, Any]:
    """The document `run_audit` makes of the audit's stored config, in one process."""
    with database.read_transaction() as session:
        audit = session.get_one(Audit, uuid.UUID(audit_id))
        tenant = session.get_one(Tenant, audit.tenant_id).name
        config, dataset_root = AuditConfig.model_validate(audit.config), audit.dataset_root
    result = run_audit(
        config,
        model_root=settings.tenant_model_root(tenant),
        data_root=settings.dataset_folder(dataset_root, tenant),
        rows_path=tmp_path / "rows.parquet",
        shard_rows=settings.shard_rows,
        block_instances=settings.block_instances,
    )
    return comparable(dump_result(result))


def service_document(client: TestClient, auth: dict[str, str], audit_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/audits/{audit_id}/result", headers=auth)
    assert response.status_code == 200, response.text
    return comparable(response.json())


@pytest.fixture(scope="module")
def engine_result() -> dict[str, Any]:
    """The engine's document of the first audit below, shared by the tests that compare."""
    return {}


def test_one_worker_runs_every_shard_and_gives_the_engines_document(
    live_client: TestClient,
    auth: dict[str, str],
    clean_database: Database,
    settings: Settings,
    sharded_dataset: str,
    engine_result: dict[str, Any],
    tmp_path: Path,
) -> None:
    audit_id = run_to_the_end(live_client, auth, sharded_body(sharded_dataset))
    shards = shards_of(clean_database, audit_id)
    assert [(shard.kind.value, shard.index) for shard in shards] == [
        ("explain", 0),
        ("explain", 1),
        ("finalise", 0),
        ("predict", 0),
        ("predict", 1),
        ("predict", 2),
    ]
    assert {(shard.status.value, shard.attempts) for shard in shards} == {("done", 1)}
    assert len({shard.worker for shard in shards}) == 1
    engine_result.update(engine_document(clean_database, settings, audit_id, tmp_path))
    document = service_document(live_client, auth, audit_id)
    assert len(document["instances"]) == 8
    assert document == engine_result
    # The plan and the shards' outputs went when the audit ended; the rows file stays.
    store = ArtifactStore.from_settings(settings)
    outputs = [shard.artifact_url for shard in shards if shard.kind.value != "finalise"]
    assert outputs and not any(url is None or store.exists(url) for url in outputs)
    assert live_client.get(f"/v1/audits/{audit_id}/rows", headers=auth).status_code == 200


def start_workers(count: int, env: dict[str, str], folder: Path) -> list[WorkerProcess]:
    """`count` more worker processes on the session's queue, started side by side."""
    started = []
    for number in range(count):
        log_path = folder / f"worker-{number}.log"
        command = [sys.executable, "-m", "trustdiff", "worker", "--pool=solo", "--log-level=info"]
        process = subprocess.Popen(
            command, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT
        )
        started.append(WorkerProcess(process, log_path))
    deadline = time.monotonic() + 120
    for worker in started:
        while " ready." not in worker.log():
            assert worker.process.poll() is None, worker.log()
            assert time.monotonic() < deadline, worker.log()
            time.sleep(0.2)
    return started


@pytest.fixture(scope="module")
def more_workers(
    service_env: dict[str, str],
    worker: WorkerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[WorkerProcess]]:
    """Two more workers beside the session's: three in all."""
    extra = start_workers(2, {**os.environ, **service_env}, tmp_path_factory.mktemp("workers"))
    WORKERS.extend(extra)
    yield extra
    for started in extra:
        WORKERS.remove(started)
        stop_process(started.process)


def test_three_workers_share_the_shards_and_give_the_same_document(
    live_client: TestClient,
    auth: dict[str, str],
    clean_database: Database,
    more_workers: list[WorkerProcess],
    sharded_dataset: str,
    engine_result: dict[str, Any],
) -> None:
    audit_id = run_to_the_end(live_client, auth, sharded_body(sharded_dataset))
    shards = shards_of(clean_database, audit_id)
    assert {(shard.status.value, shard.attempts) for shard in shards} == {("done", 1)}
    assert len({shard.worker for shard in shards}) > 1
    assert engine_result, "runs after the one-worker test, which computes the engine's document"
    assert service_document(live_client, auth, audit_id) == engine_result


def test_a_worker_killed_mid_shard_costs_that_shard_not_the_audit(
    live_client: TestClient,
    auth: dict[str, str],
    clean_database: Database,
    settings: Settings,
    more_workers: list[WorkerProcess],
    sharded_dataset: str,
) -> None:
    # Blocks slow enough (a few seconds each) to be caught running.
    body = sharded_body(sharded_dataset, instances=12, lime_samples=400, shap_max_evals=400)
    response = live_client.post("/v1/audits", json=body, headers=auth)
    assert response.status_code == 202, response.text
    audit_id = response.json()["id"]
    victims = {f"{socket.gethostname()}:{started.process.pid}": started for started in more_workers}

    deadline = time.monotonic() + 120
    while True:
        running = [
            shard
            for shard in shards_of(clean_database, audit_id)
            if shard.status.value == "running" and shard.worker in victims
        ]
        if running and running[0].kind.value == "explain":
            break
        assert time.monotonic() < deadline, "no block ran on an extra worker"
        time.sleep(0.1)
    killed = running[0]
    victims[killed.worker or ""].process.send_signal(signal.SIGKILL)
    victims[killed.worker or ""].process.wait()

    # The killed shard's heartbeat stops; the sweep (run here, as the workers' own would)
    # sends it again once it has been silent longer than the timeout.
    impatient = settings.model_copy(update={"heartbeat_timeout_s": 3.0})
    while not any(
        shard.id == killed.id and shard.status.value != "running"
        for shard in shards_of(clean_database, audit_id)
    ):
        assert time.monotonic() < deadline, "the killed shard was never sent again"
        sweep_stale_audits(database=clean_database, settings=impatient)
        time.sleep(0.5)

    audit = wait_for_status(live_client, audit_id, auth, FINAL, timeout_s=180)
    assert audit["status"] == "succeeded", audit
    shards = shards_of(clean_database, audit_id)
    attempts = {(shard.kind.value, shard.index): shard.attempts for shard in shards}
    assert attempts.pop((killed.kind.value, killed.index)) == 2
    assert set(attempts.values()) == {1}
