"""The job runner and the stale-audit sweep, called as plain functions on real Postgres/Redis."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import select, update
from sqlalchemy.orm import undefer

from service import transitions
from service.audits import create_audit
from service.auth import create_api_key
from service.db import Database
from service.models import Audit, AuditShard, AuditStatus, Tenant, utc_now
from service.schemas import AuditCreate
from service.settings import Settings
from service.transitions import InvalidTransition
from tests.service.fixtures import audit_body, give_fixture_assets
from workers.runner import run_audit_job, sweep_stale_audits

pytestmark = pytest.mark.services


def queued_messages(settings: Settings, redis_url: str) -> list[str]:
    """Audit ids of the run-audit messages waiting on the parked queue, oldest first."""
    import json

    client = redis.Redis.from_url(redis_url)
    raw = client.lrange(settings.queue, 0, -1)
    client.delete(settings.queue)
    messages = [json.loads(item) for item in reversed(raw)]
    return [message["headers"]["argsrepr"].strip("()[],'\"") for message in messages]


def submit(database: Database, settings: Settings, **overrides: Any) -> uuid.UUID:
    with database.transaction() as session:
        give_fixture_assets("tenant-runner")
        _key, _token = create_api_key(session, "tenant-runner")
        tenant = session.scalars(select(Tenant).where(Tenant.name == "tenant-runner")).one()
        audit, _created = create_audit(
            session,
            tenant,
            AuditCreate.model_validate(audit_body(**overrides)),
            idempotency_key=None,
            settings=settings,
        )
        return audit.id


def load(database: Database, audit_id: uuid.UUID) -> Audit:
    with database.transaction() as session:
        audit = session.get(Audit, audit_id, options=[undefer(Audit.result)])
        assert audit is not None
        return audit


def shard_statuses(database: Database, audit_id: uuid.UUID) -> dict[tuple[str, int], str]:
    with database.transaction() as session:
        rows = session.scalars(select(AuditShard).where(AuditShard.audit_id == audit_id)).all()
        return {(row.kind.value, row.index): row.status.value for row in rows}


def make_running(
    database: Database, audit_id: uuid.UUID, *, silent_for_s: float, **values: Any
) -> None:
    with database.transaction() as session:
        transitions.start_running(session, audit_id, worker="gone:1")
    with database.transaction() as session:
        audit = session.get(Audit, audit_id)
        assert audit is not None
        audit.heartbeat_at = utc_now() - timedelta(seconds=silent_for_s)
        for name, value in values.items():
            setattr(audit, name, value)


def test_runner_completes_a_queued_audit_once(
    parked_database: Database, parked_settings: Settings, redis_url: str
) -> None:
    audit_id = submit(parked_database, parked_settings, explain={"instances": 0})
    queued_messages(parked_settings, redis_url)
    assert run_audit_job(audit_id, database=parked_database, settings=parked_settings) == (
        "succeeded"
    )
    audit = load(parked_database, audit_id)
    assert audit.status == AuditStatus.SUCCEEDED
    assert audit.result is not None and audit.gate == audit.result["gate"]
    assert audit.attempts == 1 and audit.heartbeat_at is None
    assert audit.progress_stage == "done" and audit.progress_done == audit.progress_total
    # A redelivered message finds the audit finished and does nothing.
    assert run_audit_job(audit_id, database=parked_database, settings=parked_settings) is None
    assert run_audit_job(uuid.uuid4(), database=parked_database, settings=parked_settings) is None


@pytest.mark.parametrize("step", ["plan_audit", "predict_shard", "finish_audit"])
def test_runner_turns_unexpected_errors_into_a_generic_failure(
    parked_database: Database,
    parked_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
) -> None:
    import trustdiff.audit

    def explode(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(trustdiff.audit, step, explode)
    audit_id = submit(parked_database, parked_settings)
    assert run_audit_job(audit_id, database=parked_database, settings=parked_settings) == "failed"
    audit = load(parked_database, audit_id)
    assert audit.error_code == "internal_error"
    assert "secret" not in (audit.error_message or "")
    assert str(audit_id) in (audit.error_message or "")


def test_runner_reports_progress_and_stops_when_cancel_is_requested(
    parked_database: Database, parked_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trustdiff.audit
    from trustdiff.errors import AuditCancelledError

    stages_seen: list[str] = []

    def slow_engine(*_args: Any, progress: Any, should_cancel: Any, **_kwargs: Any) -> None:
        # Stands in for a prediction shard's batch loop: reports progress, polls for cancel.
        for done in range(1, 600):
            progress("predict", done, 600)
            stages_seen.append("predict")
            if should_cancel():
                raise AuditCancelledError("audit cancelled")
            time.sleep(0.05)
        raise AssertionError("never cancelled")

    monkeypatch.setattr(trustdiff.audit, "predict_shard", slow_engine)
    audit_id = submit(parked_database, parked_settings)
    outcome: list[str | None] = []
    runner = threading.Thread(
        target=lambda: outcome.append(
            run_audit_job(audit_id, database=parked_database, settings=parked_settings)
        )
    )
    runner.start()
    deadline = time.monotonic() + 10
    while (load(parked_database, audit_id).progress_done or 0) == 0:
        assert time.monotonic() < deadline, "no progress written"
        time.sleep(0.1)
    audit = load(parked_database, audit_id)
    assert audit.status == AuditStatus.RUNNING and audit.progress_stage == "predict"
    assert audit.progress_total == 48
    with parked_database.transaction() as session:
        transitions.request_cancel(session, audit_id)
    runner.join(15)
    assert outcome == ["cancelled"]
    assert load(parked_database, audit_id).status == AuditStatus.CANCELLED
    assert shard_statuses(parked_database, audit_id) == {
        ("predict", 0): "cancelled",
        ("explain", 0): "cancelled",
        ("finalise", 0): "cancelled",
    }


def test_transitions_check_the_previous_state(
    parked_database: Database, parked_settings: Settings
) -> None:
    audit_id = submit(parked_database, parked_settings)
    with pytest.raises(InvalidTransition), parked_database.transaction() as session:
        transitions.mark_succeeded(session, audit_id, result={"gate": {"passed": True}})
    with parked_database.transaction() as session:
        transitions.start_running(session, audit_id, worker="w:1")
    with pytest.raises(InvalidTransition), parked_database.transaction() as session:
        transitions.start_running(session, audit_id, worker="w:2")
    with parked_database.transaction() as session:
        transitions.mark_failed(session, audit_id, code="x", message="y")
    with pytest.raises(InvalidTransition), parked_database.transaction() as session:
        transitions.request_cancel(session, audit_id)
    assert load(parked_database, audit_id).worker == "w:1"


def test_sweep_requeues_then_fails_audits_whose_worker_died(
    parked_database: Database, parked_settings: Settings, redis_url: str
) -> None:
    timeout = parked_settings.heartbeat_timeout_s
    lost = submit(parked_database, parked_settings, seed=1)
    alive = submit(parked_database, parked_settings, seed=2)
    cancelled = submit(parked_database, parked_settings, seed=3)
    queued_messages(parked_settings, redis_url)
    make_running(parked_database, lost, silent_for_s=timeout + 5)
    make_running(parked_database, alive, silent_for_s=1)
    make_running(
        parked_database, cancelled, silent_for_s=timeout + 5, cancel_requested_at=utc_now()
    )

    assert set(sweep_stale_audits(database=parked_database, settings=parked_settings)) == {
        lost,
        cancelled,
    }
    audit = load(parked_database, lost)
    assert audit.status == AuditStatus.QUEUED and audit.worker is None
    assert queued_messages(parked_settings, redis_url) == [str(lost)]
    assert load(parked_database, alive).status == AuditStatus.RUNNING
    assert load(parked_database, cancelled).status == AuditStatus.CANCELLED

    # Its second run dies too: with max_attempts=2 spent, it fails with a clear error.
    make_running(parked_database, lost, silent_for_s=timeout + 5)
    assert sweep_stale_audits(database=parked_database, settings=parked_settings) == [lost]
    audit = load(parked_database, lost)
    assert audit.status == AuditStatus.FAILED
    assert audit.error_code == "worker_lost"
    assert "stopped responding" in (audit.error_message or "")
    assert audit.attempts == 2
    assert queued_messages(parked_settings, redis_url) == []


def test_sweep_resends_jobs_the_broker_refused(
    parked_database: Database, parked_settings: Settings, redis_url: str
) -> None:
    unreachable = parked_settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    from service.jobs import build_celery_app

    offline = Database(parked_settings.database_url, build_celery_app(unreachable))
    try:
        audit_id = submit(offline, parked_settings)
    finally:
        offline.dispose()
    audit = load(parked_database, audit_id)
    assert audit.status == AuditStatus.QUEUED and audit.enqueue_failed_at is not None
    assert queued_messages(parked_settings, redis_url) == []
    assert sweep_stale_audits(database=parked_database, settings=parked_settings) == [audit_id]
    assert queued_messages(parked_settings, redis_url) == [str(audit_id)]
    assert load(parked_database, audit_id).enqueue_failed_at is None


def backdate(database: Database, audit_id: uuid.UUID, seconds: float) -> None:
    with database.transaction() as session:
        audit = session.get(Audit, audit_id)
        assert audit is not None
        audit.updated_at = utc_now() - timedelta(seconds=seconds)


def test_sweep_resends_queued_audits_no_worker_claimed(
    parked_database: Database, parked_settings: Settings, redis_url: str
) -> None:
    audit_id = submit(parked_database, parked_settings)
    # The broker loses the message (a flush, a restart without persistence).
    assert queued_messages(parked_settings, redis_url) == [str(audit_id)]
    assert sweep_stale_audits(database=parked_database, settings=parked_settings) == []
    backdate(parked_database, audit_id, parked_settings.requeue_queued_after_s + 1)
    assert sweep_stale_audits(database=parked_database, settings=parked_settings) == [audit_id]
    assert queued_messages(parked_settings, redis_url) == [str(audit_id)]
    # Sent again once per threshold, not on every sweep.
    assert sweep_stale_audits(database=parked_database, settings=parked_settings) == []
    # Both copies may arrive: the first runs the audit, the second finds it claimed.
    assert run_audit_job(audit_id, database=parked_database, settings=parked_settings) == (
        "succeeded"
    )
    assert run_audit_job(audit_id, database=parked_database, settings=parked_settings) is None
    assert load(parked_database, audit_id).attempts == 1


def test_a_lost_message_is_sent_again_and_the_worker_completes_the_audit(
    settings: Settings,
    parked_settings: Settings,
    clean_database: Database,
    parked_database: Database,
    worker: Any,
    redis_url: str,
) -> None:
    # Committed, but its message went to a queue no worker reads, then was lost.
    audit_id = submit(parked_database, parked_settings, explain={"instances": 0})
    assert queued_messages(parked_settings, redis_url) == [str(audit_id)]
    backdate(clean_database, audit_id, settings.requeue_queued_after_s + 1)
    # The worker's own sweep (the same function) sends it on the queue the worker reads.
    assert sweep_stale_audits(database=clean_database, settings=settings) == [audit_id]
    deadline = time.monotonic() + 120
    while (audit := load(clean_database, audit_id)).status in {"queued", "running"}:
        assert time.monotonic() < deadline, f"still {audit.status}"
        time.sleep(0.3)
    assert audit.status == AuditStatus.SUCCEEDED and audit.result is not None
    assert audit.attempts == 1


def test_a_result_the_database_refuses_is_retried_then_kept_as_an_artifact(
    parked_database: Database,
    parked_settings: Settings,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    import workers.shard_runner

    settings = parked_settings.model_copy(
        update={
            "artifacts_dir": tmp_path / "artifacts",
            "result_store_attempts": 3,
            "result_store_backoff_s": 0.01,
        }
    )
    real_document = workers.shard_runner.result_document

    def with_nul(result: Any) -> dict[str, Any]:
        # Postgres JSONB cannot hold U+0000: a real, persistent storage error.
        document = real_document(result)
        document["manifest"]["note"] = "a\u0000b"
        return document

    attempts: list[int] = []
    real_mark_succeeded = transitions.mark_succeeded

    def counted(*args: Any, **kwargs: Any) -> Audit:
        attempts.append(1)
        return real_mark_succeeded(*args, **kwargs)

    monkeypatch.setattr(workers.shard_runner, "result_document", with_nul)
    monkeypatch.setattr(transitions, "mark_succeeded", counted)
    audit_id = submit(parked_database, settings, explain={"instances": 0})
    assert run_audit_job(audit_id, database=parked_database, settings=settings) == "failed"
    assert len(attempts) == 3
    audit = load(parked_database, audit_id)
    assert audit.status == AuditStatus.FAILED and audit.result is None
    assert audit.error_code == "result_storage_failed"
    assert f"artifacts/{audit_id}.json" in (audit.error_message or "")
    assert str(tmp_path) not in (audit.error_message or "")
    kept = json.loads((tmp_path / "artifacts" / f"{audit_id}.json").read_text("utf-8"))
    assert kept["manifest"]["note"] == "a\u0000b" and "gate" in kept
    # Beside the audit's rows file (audits/<id>/rows.parquet), the kept document only.
    assert list((tmp_path / "artifacts").glob("*.json")) == [
        tmp_path / "artifacts" / f"{audit_id}.json"
    ]


def test_an_audit_past_its_soft_time_limit_fails_with_a_clear_code(
    parked_database: Database, parked_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trustdiff.audit
    from trustdiff.errors import AuditCancelledError

    def endless_engine(*_args: Any, should_cancel: Any, **_kwargs: Any) -> None:
        while not should_cancel():
            time.sleep(0.05)
        raise AuditCancelledError("stopped at a batch boundary")

    monkeypatch.setattr(trustdiff.audit, "predict_shard", endless_engine)
    settings = parked_settings.model_copy(update={"task_soft_time_limit_s": 0.5})
    audit_id = submit(parked_database, settings)
    assert run_audit_job(audit_id, database=parked_database, settings=settings) == "failed"
    audit = load(parked_database, audit_id)
    assert audit.error_code == "time_limit_exceeded"
    assert "0.5s time limit" in (audit.error_message or "")


def test_a_second_candidate_reuses_the_reference_predictions_and_stores_rows(
    parked_database: Database, parked_settings: Settings, tmp_path: Any
) -> None:
    from service.artifacts import ArtifactStore

    settings = parked_settings.model_copy(update={"cache_dir": tmp_path / "cache"})
    first = submit(
        parked_database, settings, candidate={"path": "perturbed"}, explain={"instances": 0}
    )
    second = submit(parked_database, settings, explain={"instances": 0})
    for audit_id in (first, second):
        assert run_audit_job(audit_id, database=parked_database, settings=settings) == "succeeded"
    timings = [
        load(parked_database, audit_id).result["manifest"]["timings"]
        for audit_id in (first, second)
    ]  # type: ignore[index]
    assert "forward_without_reference" not in timings[0]
    # The reference's predictions on the dataset came from the cache the first audit filled.
    assert "forward_without_reference" in timings[1]
    audit = load(parked_database, second)
    assert audit.rows_url is not None
    assert ArtifactStore.from_settings(settings).exists(audit.rows_url)


def shard_messages(settings: Settings, redis_url: str) -> list[tuple[str, str, int]]:
    """(audit id, kind, index) of the run-shard messages waiting on the parked queue."""
    import ast
    import json

    client = redis.Redis.from_url(redis_url)
    raw = client.lrange(settings.queue, 0, -1)
    client.delete(settings.queue)
    messages = [json.loads(item)["headers"] for item in reversed(raw)]
    return [
        tuple(ast.literal_eval(message["argsrepr"]))
        for message in messages
        if message["task"] == "trustdiff.run_shard"
    ]


def test_sweep_sends_a_silent_shard_again_then_fails_its_audit(
    parked_database: Database, parked_settings: Settings, redis_url: str
) -> None:
    from service import shards
    from service.models import ShardKind
    from service.shards import ShardRef

    # Eight instances in blocks of 4 (TRUSTDIFF_BLOCK_INSTANCES): planned, not run here.
    audit_id = submit(parked_database, parked_settings, explain={"instances": 8, "top_k": 3})
    queued_messages(parked_settings, redis_url)
    status = run_audit_job(audit_id, database=parked_database, settings=parked_settings)
    assert status == AuditStatus.RUNNING
    assert shard_messages(parked_settings, redis_url) == [(str(audit_id), "predict", 0)]
    predict = ShardRef(audit_id, ShardKind.PREDICT, 0)
    timeout = parked_settings.heartbeat_timeout_s

    def run_silently(worker: str) -> None:
        with parked_database.transaction() as session:
            assert shards.claim_shard(session, predict, worker=worker) is not None
        silent_since = utc_now() - timedelta(seconds=timeout + 5)
        with parked_database.transaction() as session:
            session.execute(
                update(AuditShard)
                .where(AuditShard.audit_id == audit_id, AuditShard.kind == "predict")
                .values(heartbeat_at=silent_since)
            )
            session.execute(
                update(Audit).where(Audit.id == audit_id).values(heartbeat_at=silent_since)
            )

    run_silently("gone:1")
    # A planned audit's own heartbeat goes stale too: the sweep leaves it to its shards.
    assert sweep_stale_audits(database=parked_database, settings=parked_settings) == [audit_id]
    assert shard_messages(parked_settings, redis_url) == [(str(audit_id), "predict", 0)]
    assert shard_statuses(parked_database, audit_id)[("predict", 0)] == "queued"
    assert load(parked_database, audit_id).status == AuditStatus.RUNNING

    # Its second worker dies too: with max_attempts=2 spent, the audit fails.
    run_silently("gone:2")
    assert sweep_stale_audits(database=parked_database, settings=parked_settings) == [audit_id]
    audit = load(parked_database, audit_id)
    assert audit.status == AuditStatus.FAILED and audit.error_code == "worker_lost"
    assert "predict shard 0" in (audit.error_message or "")
    assert shard_statuses(parked_database, audit_id) == {
        ("predict", 0): "failed",
        ("explain", 0): "cancelled",
        ("explain", 1): "cancelled",
        ("finalise", 0): "cancelled",
    }
    assert shard_messages(parked_settings, redis_url) == []
    # Its plan went with it.
    assert audit.plan_url is None


def test_sweep_sends_a_shard_whose_message_was_lost(
    parked_database: Database, parked_settings: Settings, redis_url: str
) -> None:
    audit_id = submit(parked_database, parked_settings, explain={"instances": 8, "top_k": 3})
    queued_messages(parked_settings, redis_url)
    run_audit_job(audit_id, database=parked_database, settings=parked_settings)
    # The broker loses the shard's message.
    assert shard_messages(parked_settings, redis_url) == [(str(audit_id), "predict", 0)]
    assert sweep_stale_audits(database=parked_database, settings=parked_settings) == []
    with parked_database.transaction() as session:
        session.execute(
            update(AuditShard)
            .where(AuditShard.audit_id == audit_id)
            .values(queued_at=utc_now() - timedelta(seconds=parked_settings.requeue_queued_after_s))
        )
    assert sweep_stale_audits(database=parked_database, settings=parked_settings) == [audit_id]
    assert shard_messages(parked_settings, redis_url) == [(str(audit_id), "predict", 0)]
    # A copy of a message for a shard already running (or done) does nothing.
    from workers.shard_runner import run_shard_job

    with parked_database.transaction() as session:
        session.execute(
            update(AuditShard)
            .where(AuditShard.audit_id == audit_id, AuditShard.kind == "predict")
            .values(status="done")
        )
    assert (
        run_shard_job(
            audit_id,
            "predict",
            0,
            database=parked_database,
            settings=parked_settings,
            runners=None,  # type: ignore[arg-type]  (never reached)
        )
        == []
    )
