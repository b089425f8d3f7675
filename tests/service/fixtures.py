"""Fixtures on real services: a fresh Postgres database per session, a Redis db and queue,
settings pointing at them, and a real Celery worker process."""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.app import create_app
from service.auth import create_api_key
from service.db import Database
from service.jobs import build_celery_app
from service.migrations import upgrade_to_head
from service.settings import Settings, get_settings
from tests.conftest import TinyAssets
from tests.postgres import throwaway_database

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
REDIS_HOST = "127.0.0.1:6379"
TABLES = ("audit_shards", "audits", "datasets", "api_keys", "tenants")
# Small but real settings: every pillar runs, in seconds, on the tiny fixture models.
FAST_SETTINGS: dict[str, Any] = {
    "explain": {"instances": 2, "lime_samples": 50, "shap_max_evals": 50, "top_k": 3},
    "calibration": {"n_bootstrap": 50},
}


def audit_body(**overrides: Any) -> dict[str, Any]:
    """The issue's minimal request on the fixture models, with fast settings."""
    body: dict[str, Any] = {
        "reference": {"path": "reference"},
        "candidate": {"path": "reference", "transform": "int8-dynamic"},
        "dataset": {"path": "sentiment.jsonl", "text_field": "text", "label_field": "label"},
        **FAST_SETTINGS,
        "seed": 0,
    }
    body.update(overrides)
    return body


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A Postgres database of its own for this test session, dropped at the end."""
    with throwaway_database("trustdiff_test") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis db number for this session; our own queue name keeps sessions apart too."""
    number = random.randint(1, 15)
    url = f"redis://{REDIS_HOST}/{number}"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        pytest.fail(f"Redis is not answering on {REDIS_HOST} (run `make services`): {error}")
    yield url


@pytest.fixture(scope="session")
def service_env(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_assets: TinyAssets,
    postgres_url: str,
    redis_url: str,
) -> Iterator[dict[str, str]]:
    """TRUSTDIFF_* variables for this session, set in os.environ (and passed to subprocesses)."""
    home = tmp_path_factory.mktemp("service-home")
    # Tenants get the fixture assets in their folders when their key is made (`new_api_key`).
    model_root, data_root = tiny_assets.give_to_tenants(home)
    FIXTURE_ASSETS[:] = [tiny_assets]
    env = {
        "TRUSTDIFF_HOME": str(home),
        "TRUSTDIFF_DATABASE_URL": postgres_url,
        "TRUSTDIFF_BROKER_URL": redis_url,
        "TRUSTDIFF_MODEL_ROOT": str(model_root),
        "TRUSTDIFF_DATA_ROOT": str(data_root),
        "TRUSTDIFF_UPLOAD_DIR": str(home / "uploads"),
        "TRUSTDIFF_QUEUE": f"trustdiff-test-{secrets.token_hex(4)}",
        "TRUSTDIFF_MAX_UPLOAD_BYTES": str(64 * 1024),
        "TRUSTDIFF_MAX_REQUEST_BYTES": str(32 * 1024),
        "TRUSTDIFF_CALLBACK_SECRET": "callback-test-secret",
        # Audits pile up queued on the parked queue; the quota has a test of its own.
        "TRUSTDIFF_MAX_CONCURRENT_AUDITS": "1000",
        # The cancel test's deliberately slow audit asks for more than the default quotas.
        "TRUSTDIFF_MAX_LIME_SAMPLES": "2000",
        "TRUSTDIFF_MAX_SHAP_EVALS": "2000",
        # The test receivers listen on loopback, which callbacks may not reach by default.
        "TRUSTDIFF_CALLBACK_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "TRUSTDIFF_CALLBACK_BACKOFF_S": "0.2",
        "TRUSTDIFF_CALLBACK_MAX_ATTEMPTS": "4",
        # Audits of more than 4 explained instances or 512 rows run as several shards.
        "TRUSTDIFF_SHARD_ROWS": "512",
        "TRUSTDIFF_BLOCK_INSTANCES": "4",
        "TRUSTDIFF_HEARTBEAT_INTERVAL_S": "0.3",
        "TRUSTDIFF_HEARTBEAT_TIMEOUT_S": "60",
        # Tests call the sweep themselves; the worker's own sweep would race them.
        "TRUSTDIFF_SWEEP_INTERVAL_S": "3600",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    get_settings.cache_clear()
    yield env
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def settings(service_env: dict[str, str]) -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def database(settings: Settings) -> Iterator[Database]:
    """The session database, built by the real migrations."""
    upgrade_to_head(settings.database_url)
    database = Database(settings.database_url, build_celery_app(settings))
    yield database
    database.dispose()


@pytest.fixture
def clean_database(database: Database) -> Database:
    """The database with every table emptied before the test."""
    with database.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
    return database


@pytest.fixture(scope="session")
def parked_settings(settings: Settings, redis_url: str) -> Iterator[Settings]:
    """Settings whose queue no worker consumes: audits stay queued, and cost no CPU."""
    parked = settings.model_copy(update={"queue": f"{settings.queue}-parked"})
    yield parked
    redis.Redis.from_url(redis_url).delete(parked.queue)


@pytest.fixture
def client(parked_settings: Settings, clean_database: Database) -> Iterator[TestClient]:
    """The gateway in-process; what it queues waits on a queue no worker reads."""
    with TestClient(create_app(parked_settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def live_client(
    settings: Settings, clean_database: Database, worker: WorkerProcess
) -> Iterator[TestClient]:
    """The gateway in-process, queueing to the real worker process."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


# The session's fixture assets, once `service_env` built them.
FIXTURE_ASSETS: list[TinyAssets] = []


def give_fixture_assets(tenant: str) -> None:
    """Put the fixture models and datasets in `tenant`'s folders of the session's roots."""
    (assets,) = FIXTURE_ASSETS
    assets.give_to_tenants(Path(os.environ["TRUSTDIFF_HOME"]), tenant)


def new_api_key(database: Database, tenant: str) -> str:
    """A key for `tenant`, whose folders hold the fixture assets."""
    give_fixture_assets(tenant)
    with database.transaction() as session:
        _key, token = create_api_key(session, tenant)
    return token


@pytest.fixture
def api_key(clean_database: Database) -> str:
    return new_api_key(clean_database, "tenant-a")


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_process(
    command: list[str], env: dict[str, str], log_path: Path, *, ready: Callable[[], bool]
) -> subprocess.Popen[bytes]:
    """Start `command` with exactly `env`, logging to `log_path`, and wait until `ready()`."""
    log = log_path.open("wb")
    process = subprocess.Popen(command, cwd=REPOSITORY_ROOT, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{command} exited early:\n{log_path.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{command} not ready:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.2)
    return process


def stop_process(process: subprocess.Popen[bytes], *, timeout_s: float = 20) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@pytest.fixture(scope="session")
def worker(
    service_env: dict[str, str],
    database: Database,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """A real Celery worker process (solo pool) on this session's queue."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    command = [sys.executable, "-m", "trustdiff", "worker", "--pool=solo", "--log-level=info"]
    process = start_process(
        command,
        {**os.environ, **service_env},
        log_path,
        ready=lambda: " ready." in log_path.read_text("utf-8", "replace"),
    )
    worker = WorkerProcess(process, log_path)
    WORKERS.append(worker)
    yield worker
    WORKERS.remove(worker)
    stop_process(process)


# Read by the report hook in conftest to attach the worker's log to a failing test.
WORKERS: list[WorkerProcess] = []


def wait_for_status(
    client: TestClient,
    audit_id: str,
    headers: dict[str, str],
    statuses: set[str],
    *,
    timeout_s: float = 120,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(f"/v1/audits/{audit_id}", headers=headers)
        assert response.status_code == 200, response.text
        audit: dict[str, Any] = response.json()
        if audit["status"] in statuses:
            return audit
        if time.monotonic() > deadline:
            raise AssertionError(f"audit {audit_id} still {audit['status']}: {audit}")
        time.sleep(0.2)


def random_id() -> str:
    return str(uuid.uuid4())
