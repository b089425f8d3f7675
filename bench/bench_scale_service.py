"""Scale benchmark through the service: one large synthetic audit on Postgres + Redis, sharded
over 1, 2 and 4 workers.

    make bench-scale-service                              # 1,000,000 rows; 1, 2 and 4 workers
    make bench-scale-service ROWS=20000 WORKERS=1,2       # a check that it works
    python bench/bench_scale_service.py --rows 20000 --workers 1,2

The models and the dataset are `bench/bench_scale.py`'s (tiny untrained BERTs built from a
config, a reference and a noisy copy as the candidate; `--rows` synthetic rows of 4-12 of
their words): it measures the service's machinery, not the models. They are written into the
tenant's folders of the model and data roots, and the audit names the dataset by its path
there (a data-root dataset): no upload, whose default limit is 64 MiB.

For each worker count, in a fresh Postgres database, a fresh state folder (so no audit or
checkpoint cache carries over) and a queue of its own on the shared Redis: `trustdiff
migrate`, one uvicorn gateway, N `trustdiff worker` processes (prefork, one pool child each,
as docker-compose deploys them; `--pool solo` for one process each), a key. Then warm-up
audits of a 2,000-row dataset until every worker has explained a block (`warm_up`: a fresh
worker imports the explainers, compiles shap's numba kernels and loads the models once, which
a long-lived worker has done already; `--no-warm-up` measures cold workers), and then the
measured audit, polled to its end. The audit: 1,000 bootstrap resamples (the default),
`--explain-instances` instances (default 128: four blocks of `TRUSTDIFF_BLOCK_INSTANCES` =
32, so four workers each get one) explained with LIME `--lime-samples` and Partition SHAP
`--shap-evals` (default 200 each; noise floor and faithfulness on, as by default), top-10
words. On these tiny models that makes an explanation stage of tens of seconds on one
worker: measurable, and small beside the metrics stage. Prediction shards are `--shard-rows`
rows (`TRUSTDIFF_SHARD_ROWS`, default 100,000: ten shards at 1M rows).

Recorded per worker count (`runs.<N>`):

- `stages_wall_s`: wall time of each stage of the sharded audit, from the database's
  timestamps (`audits` and `audit_shards`), one after another: `queued` (created → a worker
  claimed the planning task), `plan` (→ the prediction shards were queued: validation,
  fingerprints, instance selection), `predict` (→ the last prediction shard finished),
  `explain` (→ the last explanation block finished), `finalise` (→ the finaliser finished:
  metrics, alignment, rows file, gate, result stored); `total` is created → finished, and
  `client_wall_s` is from the POST to the first poll that saw the audit ended (1 s polls).
- `stages_busy_s`: per stage, the seconds its shards ran, summed (started → finished of each).
- `engine_timings_s`: the result document's `manifest.timings`: the engine's seconds per step
  stage summed over every shard and block (so they add up work, not wall time).
- `shards`: every shard row (kind, index, attempts, worker, queued/started/finished).
- `processes`: per worker (and the gateway), each process (a prefork worker is a parent and
  the pool child that runs the tasks) with its RSS when started, when warm (after the
  warm-up: models loaded, explainers imported) and at the end, the highest RSS sampled during
  each stage of the audit (every 0.5 s), and `VmHWM` (the kernel's peak RSS) read just
  before stopping it. `peak_rss_mib` is a worker's highest `VmHWM`; `peak_beyond_warm_mib`
  that process's peak minus its warm RSS: what the audit added beyond the loaded models.
- `models_loaded_rss_mib` (top level): for scale, the RSS of a bare process that imported the
  engine and loaded both models, nothing else.
- the POST's duration (the gateway validates every row of the dataset before it answers),
  the gateway's `VmHWM`, the result document's size as served (`GET /result`) and without
  its explained instances, the rows file's size, and `GET /v1/audits/{id}/rows` (100 rows):
  the gateway's first such request (pyarrow loads then), the median of 20 more, and of 20
  pages of flipped rows.

Torch threads: each worker gets `OMP_NUM_THREADS` = cores ÷ workers (at least 1;
`--worker-threads` to fix it), so N workers share the cores rather than oversubscribe them;
`OMP_WAIT_POLICY=PASSIVE` (`bench/conditions.py`). `explain_ratio`: the explanation stage's
wall time with N workers ÷ with 1. Results: `out/bench-scale/bench_scale_service-<rows>.json`.

Service settings the benchmark sets beyond the defaults, so a large audit is admitted and not
cut short: the row, byte and explained-instance quotas (to what the audit asks), the time
limits (`--time-limit-s`, default 3 h, with the hard limit and the broker's visibility timeout
above it), and the re-send of queued-but-unclaimed shards (off: with 10 prediction shards
queued at once on one worker, the last waits its turn longer than the default 300 s, and a
re-send would only add a duplicate message and move `queued_at`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The benchmark runs from a checkout, as the tests and scripts do; none is part of the package.
sys.path.insert(0, str(ROOT))

from bench.conditions import set_conditions_before_torch  # noqa: E402

CONDITIONS_BEFORE_TORCH = set_conditions_before_torch()

import httpx  # noqa: E402

from bench.bench_scale import build_checkpoint, write_dataset  # noqa: E402
from scripts.harness import (  # noqa: E402
    FINAL_STATUSES,
    LOOPBACK,
    Service,
    free_port,
    gateway_command,
    load_average,
    postgres_database,
    service_env,
    wait_until_ready,
    worker_command,
)

TENANT = "bench"
STAGES = ("queued", "plan", "predict", "explain", "finalise")
MODELS_PROBE = """
import json, sys
from pathlib import Path

def rss():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}

from trustdiff.inference import load_model_runner
imported = rss()
runners = [
    load_model_runner(Path(path), transform=None, device="cpu", dtype="float32")
    for path in sys.argv[1:]
]
loaded = rss()
runners[0].predict_proba(["the movie was good"] * 64)
print(json.dumps({"imported": imported, "loaded": loaded, "predicted": rss()}))
"""


# --- processes ------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, str]:
    """`/proc/<pid>/status` as a mapping; empty when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            return {
                name: value.strip()
                for name, value in (line.split(":", 1) for line in handle if ":" in line)
            }
    except OSError:
        return {}


def kib_as_mib(value: str | None) -> float | None:
    return None if value is None else round(int(value.split()[0]) / 1024, 1)


def process_tree() -> dict[int, list[int]]:
    """Each running process's children, by parent pid, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command may hold spaces and parentheses: the parent pid follows the last ")".
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pid: int, tree: dict[int, list[int]] | None = None) -> list[int]:
    """`pid` and every process under it (a prefork worker's pool children)."""
    tree = process_tree() if tree is None else tree
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(tree.get(current, []))
    return found


class RssSampler(threading.Thread):
    """Samples VmRSS of the watched processes every `interval_s`, keeping the highest seen per
    process and audit stage (`stage` is set by the poller)."""

    def __init__(self, roots: dict[str, int], interval_s: float = 0.5) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.roots = roots
        self.interval_s = interval_s
        self.stage = "started"
        self.highest: dict[str, dict[int, dict[str, float]]] = {name: {} for name in roots}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            tree = process_tree()
            for name, root in self.roots.items():
                for pid in descendants(root, tree):
                    rss = kib_as_mib(proc_status(pid).get("VmRSS"))
                    if rss is None:
                        continue
                    by_stage = self.highest[name].setdefault(pid, {})
                    by_stage[self.stage] = max(by_stage.get(self.stage, 0.0), rss)
            self.stopped.wait(self.interval_s)


def memory_of(root: int, tree: dict[int, list[int]] | None = None) -> list[dict[str, Any]]:
    """Each process of a worker (or the gateway): pid, VmRSS and VmHWM in MiB."""
    processes = []
    for pid in descendants(root, tree):
        status = proc_status(pid)
        if status:
            processes.append(
                {
                    "pid": pid,
                    "rss_mib": kib_as_mib(status.get("VmRSS")),
                    "hwm_mib": kib_as_mib(status.get("VmHWM")),
                }
            )
    return processes


def wait_for_workers(service: Service, names: list[str], logs: Path, timeout_s: float) -> None:
    """Until every worker's log says it is ready (Celery's `celery@... ready.`)."""
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending:
        for name in list(pending):
            if service.processes[name].poll() is not None:
                raise RuntimeError(f"{name} exited; see {logs / (name + '.log')}")
            if re.search(r" ready\.\s*$", (logs / f"{name}.log").read_text(), re.MULTILINE):
                pending.discard(name)
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers {sorted(pending)} not ready after {timeout_s}s")
        time.sleep(0.5)


# --- the audit's timeline, from the database ------------------------------------------------


def audit_rows(database_url: str, audit_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The audit's timestamps and its shard rows."""
    import psycopg
    from psycopg.rows import dict_row

    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, connect_timeout=5, row_factory=dict_row) as connection:
        audit = connection.execute(
            "SELECT created_at, started_at, finished_at, attempts FROM audits WHERE id = %s",
            (audit_id,),
        ).fetchone()
        shards = connection.execute(
            "SELECT kind, index, status, attempts, worker, total, queued_at, started_at,"
            " finished_at FROM audit_shards WHERE audit_id = %s ORDER BY kind, index",
            (audit_id,),
        ).fetchall()
    if audit is None:
        raise RuntimeError(f"audit {audit_id} is not in the database")
    return audit, shards


def seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else round((end - start).total_seconds(), 3)


def stage_times(
    audit: dict[str, Any], shards: list[dict[str, Any]]
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """(wall seconds per stage, one after another; seconds the stage's shards ran, summed)."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for shard in shards:
        by_kind.setdefault(shard["kind"], []).append(shard)

    def last_finished(kind: str) -> datetime | None:
        times = [shard["finished_at"] for shard in by_kind.get(kind, [])]
        return max(times) if times and None not in times else None

    predict_queued = min(
        (shard["queued_at"] for shard in by_kind.get("predict", []) if shard["queued_at"]),
        default=None,
    )
    predicted, explained = last_finished("predict"), last_finished("explain")
    finalised = last_finished("finalise")
    wall = {
        "queued": seconds(audit["created_at"], audit["started_at"]),
        "plan": seconds(audit["started_at"], predict_queued),
        "predict": seconds(predict_queued, predicted),
        "explain": seconds(predicted, explained) if "explain" in by_kind else None,
        "finalise": seconds(explained or predicted, finalised),
        "total": seconds(audit["created_at"], audit["finished_at"]),
    }
    busy: dict[str, float | None] = {}
    for kind, kind_shards in by_kind.items():
        spans = [seconds(shard["started_at"], shard["finished_at"]) for shard in kind_shards]
        busy[kind] = None if None in spans else round(sum(s or 0.0 for s in spans), 3)
    return wall, busy


# --- HTTP -----------------------------------------------------------------------------------


def timed_get(http: httpx.Client, url: str, **params: Any) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = http.get(url, params=params)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed * 1000, response


def rows_pages(http: httpx.Client, audit_id: str, repeats: int) -> dict[str, Any]:
    """`GET /rows` timings in ms: the gateway's first, then medians of warm pages."""
    url = f"/v1/audits/{audit_id}/rows"
    first_ms, first = timed_get(http, url, limit=100)
    warm = [timed_get(http, url, limit=100)[0] for _ in range(repeats)]
    flipped = [timed_get(http, url, limit=100, flipped="true")[0] for _ in range(repeats)]
    return {
        "first_page_ms_first_request": round(first_ms, 1),
        "first_page_ms_warm_median": round(statistics.median(warm), 1),
        "first_page_ms_warm_max": round(max(warm), 1),
        "flipped_first_page_ms_warm_median": round(statistics.median(flipped), 1),
        "first_page_items": len(first.json()["items"]),
        "total_rows": first.json()["total_rows"],
    }


def document_sizes(body: bytes) -> dict[str, int]:
    """The served document's bytes, and as the gateway would serve it without `instances`."""
    document = json.loads(body)
    without = {name: value for name, value in document.items() if name != "instances"}
    # Starlette's JSONResponse rendering: compact separators, UTF-8.
    compact = json.dumps(without, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return {
        "result_document_bytes": len(body),
        "result_document_bytes_without_instances": len(compact.encode("utf-8")),
        "explained_instances": len(document.get("instances") or []),
    }


# --- one run --------------------------------------------------------------------------------


def audit_body(arguments: argparse.Namespace, dataset: str) -> dict[str, Any]:
    return {
        "reference": {"path": "reference"},
        "candidate": {"path": "candidate"},
        "dataset": {"path": dataset, "text_field": "text", "label_field": "label"},
        "explain": {
            "instances": arguments.explain_instances,
            "lime_samples": arguments.lime_samples,
            "shap_max_evals": arguments.shap_evals,
        },
        "calibration": {"n_bootstrap": arguments.bootstrap},
        "batch_size": arguments.batch_size,
        "seed": 0,
    }


def settings_for(arguments: argparse.Namespace, dataset_bytes: int) -> dict[str, str]:
    limit = arguments.time_limit_s
    return {
        "max_dataset_rows": str(arguments.rows),
        "max_upload_bytes": str(max(64 * 1024 * 1024, dataset_bytes + 1)),
        "max_explain_instances": str(arguments.explain_instances),
        "max_lime_samples": str(max(1000, arguments.lime_samples)),
        "max_shap_evals": str(max(1000, arguments.shap_evals)),
        "shard_rows": str(arguments.shard_rows),
        "task_soft_time_limit_s": str(limit),
        "task_time_limit_s": str(limit + 300),
        "broker_visibility_timeout_s": str(limit + 600),
        "requeue_queued_after_s": str(limit * 10),
    }


def worker_threads(arguments: argparse.Namespace, workers: int) -> int:
    if arguments.worker_threads:
        return int(arguments.worker_threads)
    return max(1, (os.cpu_count() or 1) // workers)


@contextmanager
def running_service(
    arguments: argparse.Namespace, work: Path, workers: int, dataset_bytes: int
) -> Iterator[tuple[Service, str, str, list[str]]]:
    """A fresh database, state folder and queue; the gateway and `workers` workers, ready."""
    run = work / "runs" / f"{workers}-workers"
    if run.exists():
        import shutil

        shutil.rmtree(run)
    run.mkdir(parents=True)
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    with postgres_database() as database_url:
        env = service_env(
            run / "home",
            work / "models",
            work / "data",
            database_url=database_url,
            broker_url=f"redis://{LOOPBACK}:6379/13",
            queue=f"trustdiff-bench-{secrets.token_hex(4)}",
            **settings_for(arguments, dataset_bytes),
        )
        service = Service(env, run)
        names = [f"worker-{index + 1}" for index in range(workers)]
        try:
            service.trustdiff("migrate")
            service.start("gateway", gateway_command(port))
            threads = str(worker_threads(arguments, workers))
            for name in names:
                service.start(
                    name, worker_command(arguments.pool), env={"OMP_NUM_THREADS": threads}
                )
            wait_until_ready(base)
            wait_for_workers(service, names, run, timeout_s=180)
            yield service, base, database_url, names
        finally:
            service.stop_all()


@dataclass
class Audited:
    """One audit submitted and polled to its end, with its rows from the database."""

    audit_id: str
    status: str
    error: Any
    post_s: float
    client_wall_s: float
    stages_seen: list[tuple[float, str]]
    row: dict[str, Any]
    shards: list[dict[str, Any]]


def audit_to_the_end(
    http: httpx.Client,
    body: dict[str, Any],
    *,
    database_url: str,
    timeout_s: float,
    sampler: RssSampler | None = None,
) -> Audited:
    """POST the audit, poll it every second until it ends (telling `sampler` its stage)."""
    if sampler is not None:
        sampler.stage = "post"  # the gateway validates every row before it answers
    started = time.perf_counter()
    response = http.post("/v1/audits", json=body)
    post_s = time.perf_counter() - started
    if response.status_code != 202:
        raise RuntimeError(f"POST /v1/audits: {response.status_code} {response.text}")
    audit = response.json()
    stages_seen: list[tuple[float, str]] = []
    while audit["status"] not in FINAL_STATUSES:
        time.sleep(1)
        if time.perf_counter() - started > timeout_s:
            raise RuntimeError(f"audit {audit['id']} still {audit['status']} after {timeout_s}s")
        audit = http.get(f"/v1/audits/{audit['id']}").json()
        stage = str((audit.get("progress") or {}).get("stage") or audit["status"])
        if not stages_seen or stages_seen[-1][1] != stage:
            stages_seen.append((round(time.perf_counter() - started, 1), stage))
        if sampler is not None:
            sampler.stage = stage
    client_wall_s = time.perf_counter() - started
    row, shards = audit_rows(database_url, audit["id"])
    return Audited(
        audit["id"],
        audit["status"],
        audit.get("error"),
        post_s,
        client_wall_s,
        stages_seen,
        row,
        shards,
    )


def warm_up(
    http: httpx.Client,
    arguments: argparse.Namespace,
    dataset: Path,
    *,
    database_url: str,
    pids: dict[str, set[int]],
) -> list[dict[str, Any]]:
    """Small audits until every worker has run an explanation block (at most 3).

    A fresh worker pays once for what a long-lived one has done already: importing the
    explainers, compiling shap's numba kernels, loading the models (seconds per worker,
    which would land on whichever blocks come first). The measured audit then runs on warm
    workers, as it would in a deployment; this records what warming up took.
    """
    workers = [name for name in pids if name.startswith("worker-")]
    body = audit_body(arguments, dataset.name)
    body["explain"] |= {"instances": 32 * len(workers), "lime_samples": 50, "shap_max_evals": 50}
    body["calibration"] = {"n_bootstrap": 100}
    warmed: set[str] = set()
    runs = []
    for _ in range(3):
        audited = audit_to_the_end(http, body, database_url=database_url, timeout_s=900)
        if audited.status != "succeeded":
            raise RuntimeError(f"warm-up audit {audited.status}: {audited.error}")
        explained_by = {
            worker_of(shard["worker"], pids)
            for shard in audited.shards
            if shard["kind"] == "explain"
        }
        warmed |= {name for name in explained_by if name}
        runs.append(
            {
                "client_wall_s": round(audited.client_wall_s, 1),
                "stages_wall_s": stage_times(audited.row, audited.shards)[0],
                "explained_by": sorted(name for name in explained_by if name),
            }
        )
        if warmed >= set(workers):
            return runs
    raise RuntimeError(f"after 3 warm-up audits, only {sorted(warmed)} ran an explanation block")


def run_once(
    arguments: argparse.Namespace, work: Path, workers: int, datasets: tuple[Path, Path]
) -> dict[str, Any]:
    dataset, warm_dataset = datasets
    with running_service(arguments, work, workers, dataset.stat().st_size) as (
        service,
        base,
        database_url,
        names,
    ):
        roots = {name: service.processes[name].pid for name in [*names, "gateway"]}
        pids = {name: set(descendants(pid)) for name, pid in roots.items()}
        started_memory = {name: memory_of(pid) for name, pid in roots.items()}
        token = service.trustdiff("keys", "create", "--tenant", TENANT)
        headers = {"Authorization": f"Bearer {token}"}
        report: dict[str, Any] = {"worker_threads": worker_threads(arguments, workers)}
        with httpx.Client(base_url=base, headers=headers, timeout=arguments.http_timeout_s) as http:
            if arguments.warm_up:
                report["warm_up"] = warm_up(
                    http, arguments, warm_dataset, database_url=database_url, pids=pids
                )
            warm_memory = {name: memory_of(pid) for name, pid in roots.items()}
            report["load_average_before"] = load_average()
            sampler = RssSampler(roots)
            sampler.start()
            try:
                audited = audit_to_the_end(
                    http,
                    audit_body(arguments, dataset.name),
                    database_url=database_url,
                    timeout_s=arguments.time_limit_s + 900,
                    sampler=sampler,
                )
            finally:
                sampler.stopped.set()
                sampler.join()
            report["load_average_after"] = load_average()
            end_memory = {name: memory_of(pid) for name, pid in roots.items()}
            report |= {
                "status": audited.status,
                "error": audited.error,
                "client_wall_s": round(audited.client_wall_s, 1),
                "post_s": round(audited.post_s, 2),
                "progress_stages_seen_at_s": audited.stages_seen,
            }
            if audited.status == "succeeded":
                report |= served(http, audited.audit_id, arguments.page_repeats)
    wall, busy = stage_times(audited.row, audited.shards)
    report |= {"stages_wall_s": wall, "stages_busy_s": busy, "attempts": audited.row["attempts"]}
    report["shards"] = [
        {
            **{key: shard[key] for key in ("kind", "index", "status", "attempts", "total")},
            "worker": worker_of(shard["worker"], pids),
            "queued_at": iso(shard["queued_at"]),
            "started_at": iso(shard["started_at"]),
            "finished_at": iso(shard["finished_at"]),
            "ran_s": seconds(shard["started_at"], shard["finished_at"]),
        }
        for shard in audited.shards
    ]
    report["processes"] = {
        name: process_memory(
            started_memory[name], warm_memory[name], end_memory[name], sampler.highest[name]
        )
        for name in roots
    }
    return report


def served(http: httpx.Client, audit_id: str, page_repeats: int) -> dict[str, Any]:
    """What the gateway serves of a succeeded audit: result document sizes, `/rows` timings."""
    result_ms, result = timed_get(http, f"/v1/audits/{audit_id}/result")
    document = result.json()
    return {
        **document_sizes(result.content),
        "result_get_ms": round(result_ms, 1),
        "rows_file_bytes": document["rows"].get("size_bytes"),
        "rows_in_file": document["rows"]["count"],
        "rows_page": rows_pages(http, audit_id, page_repeats),
        "engine_timings_s": {
            name: round(value, 3) for name, value in document["manifest"]["timings"].items()
        },
        "gate_passed": document["gate"]["passed"],
    }


def process_memory(
    started: list[dict[str, Any]],
    warm: list[dict[str, Any]],
    end: list[dict[str, Any]],
    highest: dict[int, dict[str, float]],
) -> dict[str, Any]:
    """A worker's (or the gateway's) processes: RSS when started, after the warm-up (models
    loaded) and at the end, VmHWM at the end, the highest RSS sampled per stage. Its peak is
    the highest VmHWM; `peak_beyond_warm_mib` is that process's peak minus its warm RSS."""
    by_pid: dict[int, dict[str, Any]] = {}
    for moment, processes in (("started", started), ("warm", warm), ("end", end)):
        for process in processes:
            entry = by_pid.setdefault(process["pid"], {"pid": process["pid"]})
            entry[f"rss_{moment}_mib"] = process["rss_mib"]
            if moment == "end":
                entry["hwm_mib"] = process["hwm_mib"]
    for pid, stages in highest.items():
        by_pid.setdefault(pid, {"pid": pid})["highest_rss_mib_by_stage"] = stages
    processes = list(by_pid.values())
    peak = max(processes, key=lambda process: process.get("hwm_mib") or 0.0, default=None)
    report: dict[str, Any] = {"processes": processes}
    if peak is not None and peak.get("hwm_mib") is not None:
        report["peak_rss_mib"] = peak["hwm_mib"]
        if peak.get("rss_warm_mib") is not None:
            report["peak_beyond_warm_mib"] = round(peak["hwm_mib"] - peak["rss_warm_mib"], 1)
    return report


def worker_of(name: str | None, pids: dict[str, set[int]]) -> str | None:
    """`host:pid` as the benchmark's name of the worker that process belongs to."""
    if not name:
        return None
    pid = int(name.rsplit(":", 1)[1])
    return next((worker for worker, seen in pids.items() if pid in seen), name)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


# --- the whole benchmark --------------------------------------------------------------------


def models_loaded_rss(work: Path) -> dict[str, Any]:
    """RSS (MiB) of a process once the engine is imported, both models loaded, one batch run."""
    tenant = work / "models" / TENANT
    probe = subprocess.run(
        [sys.executable, "-c", MODELS_PROBE, str(tenant / "reference"), str(tenant / "candidate")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(probe.stdout.strip().splitlines()[-1])


def table(report: dict[str, Any]) -> str:
    runs = report["runs"]
    counts = list(runs)

    def row(label: str, value: Any) -> str:
        return f"| {label} | " + " | ".join(str(value(runs[n])) for n in counts) + " |"

    def get(*keys: str) -> Any:
        def read(run: dict[str, Any]) -> Any:
            value: Any = run
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            return "—" if value is None else value

        return read

    def per_worker(key: str) -> Any:
        def read(run: dict[str, Any]) -> str:
            workers = [name for name in run["processes"] if name.startswith("worker-")]
            return " / ".join(str(run["processes"][name].get(key, "—")) for name in workers)

        return read

    lines = [
        "| | " + " | ".join(f"{n} worker(s)" for n in counts) + " |",
        "|---|" + "---|" * len(counts),
        row("status", get("status")),
        row("client wall time (s)", get("client_wall_s")),
        row("POST /v1/audits (s)", get("post_s")),
        *(row(f"{stage} (s, wall)", get("stages_wall_s", stage)) for stage in STAGES),
        row("total (s, created → finished)", get("stages_wall_s", "total")),
        row("explain ÷ 1 worker", lambda run: run.get("explain_ratio", "—")),
        row("peak RSS per worker (MiB, VmHWM)", per_worker("peak_rss_mib")),
        row("… beyond its RSS when warm, models loaded (MiB)", per_worker("peak_beyond_warm_mib")),
        row("gateway peak RSS (MiB)", get("processes", "gateway", "peak_rss_mib")),
        row("result document (bytes)", get("result_document_bytes")),
        row("… without explained instances", get("result_document_bytes_without_instances")),
        row("rows file (bytes)", get("rows_file_bytes")),
        row("first /rows page, first request (ms)",
            get("rows_page", "first_page_ms_first_request")),
        row("first /rows page, warm median (ms)", get("rows_page", "first_page_ms_warm_median")),
        row("flipped /rows page, warm median (ms)",
            get("rows_page", "flipped_first_page_ms_warm_median")),
    ]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--pool", choices=("prefork", "solo"), default="prefork")
    parser.add_argument("--worker-threads", type=int, default=0, help="0: cores ÷ workers")
    parser.add_argument("--explain-instances", type=int, default=128)
    parser.add_argument("--lime-samples", type=int, default=200)
    parser.add_argument("--shap-evals", type=int, default=200)
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples (the default)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--shard-rows", type=int, default=100_000)
    parser.add_argument("--time-limit-s", type=int, default=3 * 3600)
    parser.add_argument("--http-timeout-s", type=float, default=600.0)
    parser.add_argument("--page-repeats", type=int, default=20)
    parser.add_argument(
        "--warm-up",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="small audits first, until every worker has explained a block",
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "out" / "bench-scale")
    arguments = parser.parse_args()
    counts = [int(count) for count in arguments.workers.split(",")]
    work = arguments.out_dir / "service"
    (work / "data" / TENANT).mkdir(parents=True, exist_ok=True)
    build_checkpoint(work / "models" / TENANT / "reference", seed=0)
    build_checkpoint(work / "models" / TENANT / "candidate", seed=0, weight_noise=0.02)
    dataset = write_dataset(work / "data" / TENANT / f"dataset-{arguments.rows}.jsonl",
                            arguments.rows, seed=1)  # fmt: skip
    warm_dataset = write_dataset(work / "data" / TENANT / "warm-up.jsonl", 2000, seed=2)
    probe = models_loaded_rss(work)
    report: dict[str, Any] = {
        "rows": arguments.rows,
        "dataset_bytes": dataset.stat().st_size,
        "settings": {
            name: value
            for name, value in vars(arguments).items()
            if name not in {"out_dir", "workers"}
        },
        "models_loaded_rss_mib": round(probe["loaded"]["VmRSS"], 1),
        "models_probe_mib": probe,
        "runs": {},
    }
    for count in counts:
        print(f"{count} worker(s): {arguments.rows} rows ...", file=sys.stderr, flush=True)
        run = run_once(arguments, work, count, (dataset, warm_dataset))
        report["runs"][str(count)] = run
        print(f"  {run['status']} in {run['client_wall_s']} s", file=sys.stderr, flush=True)
    single = report["runs"].get("1", {}).get("stages_wall_s", {}).get("explain")
    for run in report["runs"].values():
        explain = run["stages_wall_s"].get("explain")
        if single and explain is not None:
            run["explain_ratio"] = round(explain / single, 3)
    report["conditions"] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "conditions_set_before_torch": CONDITIONS_BEFORE_TORCH,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_at_end": load_average(),
        "recorded_at": datetime.now(UTC).isoformat(),
    }
    out = arguments.out_dir / f"bench_scale_service-{arguments.rows}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(table(report))
    print(f"\n{out}", file=sys.stderr)
    failed = [count for count, run in report["runs"].items() if run["status"] != "succeeded"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
