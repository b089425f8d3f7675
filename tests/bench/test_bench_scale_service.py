"""The service scale benchmark's figures: stage wall times from shard rows, document sizes as
served, a worker's processes and its peak beyond its warm RSS."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import pytest

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def shard(kind: str, index: int, queued: float, started: float, finished: float) -> dict[str, Any]:
    return {
        "kind": kind,
        "index": index,
        "queued_at": at(queued),
        "started_at": at(started),
        "finished_at": at(finished),
    }


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    # Imported when a test here runs, not at collection: it sets process defaults (OpenMP).
    return importlib.import_module("bench.bench_scale_service")


def test_stages_follow_one_another_from_the_shard_rows(bench: ModuleType) -> None:
    audit = {"created_at": at(0), "started_at": at(1), "finished_at": at(40)}
    shards = [
        # Two prediction shards queued by the plan at 3 s, run on two workers.
        shard("predict", 0, 3, 3.5, 10),
        shard("predict", 1, 3, 3.5, 12),
        # Blocks queued when the last prediction shard finished; one waited for a worker.
        shard("explain", 0, 12, 12.5, 20),
        shard("explain", 1, 12, 20, 25),
        shard("finalise", 0, 25, 25.5, 39.5),
    ]
    wall, busy = bench.stage_times(audit, shards)
    assert wall == {
        "queued": 1.0,
        "plan": 2.0,
        "predict": 9.0,
        "explain": 13.0,
        "finalise": 14.5,
        "total": 40.0,
    }
    assert busy == {"predict": 15.0, "explain": 12.5, "finalise": 14.0}

    # No explanation blocks: the finaliser follows the prediction stage.
    wall, _ = bench.stage_times(audit, [shards[0], shards[1], shards[4]])
    assert wall["explain"] is None and wall["finalise"] == 27.5


def test_document_sizes_are_as_served_with_and_without_explained_instances(
    bench: ModuleType,
) -> None:
    document = {"parity": {"agreement": 0.5}, "instances": [{"text": "é good"}], "rows": {}}
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    sizes = bench.document_sizes(body)
    without = json.dumps({"parity": {"agreement": 0.5}, "rows": {}}, separators=(",", ":"))
    assert sizes == {
        "result_document_bytes": len(body),
        "result_document_bytes_without_instances": len(without.encode("utf-8")),
        "explained_instances": 1,
    }


def test_a_workers_processes_include_its_pool_children(bench: ModuleType) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run(['sleep', '30'])"]
    )
    try:
        for _ in range(100):
            found = bench.descendants(parent.pid)
            if len(found) == 2:
                break
            subprocess.run(["sleep", "0.05"])
        assert found[0] == parent.pid and len(found) == 2
        memory = bench.memory_of(parent.pid)
        assert {process["pid"] for process in memory} == set(found)
        assert all(process["hwm_mib"] >= process["rss_mib"] > 0 for process in memory)
        assert bench.worker_of(f"host:{found[1]}", {"worker-1": set(found)}) == "worker-1"
        assert bench.worker_of("host:1", {"worker-1": set(found)}) == "host:1"
    finally:
        parent.kill()
        parent.wait()
    assert os.getpid() in bench.descendants(os.getppid())


def test_a_workers_peak_is_its_busiest_process_beyond_that_processs_warm_rss(
    bench: ModuleType,
) -> None:
    started = [{"pid": 1, "rss_mib": 130.0, "hwm_mib": 130.0}, {"pid": 2, "rss_mib": 100.0}]
    warm = [{"pid": 1, "rss_mib": 130.0, "hwm_mib": 130.0}, {"pid": 2, "rss_mib": 800.0}]
    end = [
        {"pid": 1, "rss_mib": 131.0, "hwm_mib": 131.0},
        {"pid": 2, "rss_mib": 900.0, "hwm_mib": 1100.0},
    ]
    memory = bench.process_memory(started, warm, end, {2: {"metrics": 1090.0}})
    assert memory["peak_rss_mib"] == 1100.0
    assert memory["peak_beyond_warm_mib"] == 300.0
    child = next(process for process in memory["processes"] if process["pid"] == 2)
    assert child == {
        "pid": 2,
        "rss_started_mib": 100.0,
        "rss_warm_mib": 800.0,
        "rss_end_mib": 900.0,
        "hwm_mib": 1100.0,
        "highest_rss_mib_by_stage": {"metrics": 1090.0},
    }
