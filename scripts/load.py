"""Load test: N concurrent clients read one running audit and the audit list for a while.

    python scripts/load.py --mode embedded --clients 100 --duration 60
    python scripts/load.py --mode postgres --clients 200 --duration 60 --gateway-workers 2

Starts its own service on 127.0.0.1 (embedded: `trustdiff serve`, SQLite and its own worker;
postgres: a fresh database, Redis on 127.0.0.1:6379, `uvicorn --workers N` and one
`trustdiff worker`), submits an audit large enough to keep running, and keeps one running
for the whole window. Each client alternates `GET /v1/audits/{id}` and `GET /v1/audits`
with no pause (or `--think-s`). Reports errors (any non-200 or transport failure),
latency percentiles, throughput, the longest gap between the running audit's successive
heartbeats (written every second here), the load average, and the CPU the load generator
itself used per request (it runs on the same cores as the service). Bounded by --duration (at
most 600 s) and --max-requests; it only ever talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Collection
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    FINAL_STATUSES,
    LOOPBACK,
    Service,
    audit_body,
    build_assets,
    free_port,
    gateway_command,
    load_average,
    percentile,
    postgres_database,
    service_env,
    wait_until_ready,
    worker_command,
)

from service.db import Database
from service.models import Audit, AuditStatus

TENANT = "load"
DATASET_ROWS = 400


def process_cpu_s() -> float:
    """CPU seconds this process (the load generator) has used: it shares the cores."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_by_process() -> dict[int, tuple[int, float]]:
    """Each live process's group and the CPU seconds it has used (Linux `/proc`)."""
    usage: dict[int, tuple[int, float]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it left meanwhile
        cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S  # utime + stime
        usage[int(stat_file.parent.name)] = (int(fields[2]), cpu_s)
    return usage


def cpu_used_s(
    before: dict[int, tuple[int, float]],
    after: dict[int, tuple[int, float]],
    *,
    group: int | None = None,
    pids: Collection[int] = (),
) -> float:
    """CPU seconds used between two `cpu_by_process` snapshots by process group `group` and
    by `pids` (a process started meanwhile counts from zero; one that left is not counted)."""
    return sum(
        cpu_s - before.get(pid, (0, 0.0))[1]
        for pid, (process_group, cpu_s) in after.items()
        if process_group == group or pid in pids
    )


def database_backends(database_url: str) -> set[int]:
    """The Postgres backends serving the load's database now (its pool keeps them)."""
    if not database_url.startswith("postgresql"):
        return set()
    database = Database(database_url)
    try:
        with database.read_transaction() as session:
            rows = session.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            )
            return {int(pid) for (pid,) in rows}
    finally:
        database.dispose()


class Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.heartbeats: dict[str, list[datetime]] = {}

    @property
    def errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status != "200")


async def client_loop(
    http: aiohttp.ClientSession,
    current: dict[str, str],
    recorder: Recorder,
    *,
    stop_at: float,
    think_s: float,
    budget: list[int],
) -> None:
    index = 0
    while time.monotonic() < stop_at and budget[0] > 0:
        budget[0] -= 1
        path = f"/v1/audits/{current['id']}" if index % 2 == 0 else "/v1/audits?limit=20"
        index += 1
        started = time.monotonic()
        try:
            async with http.get(path) as response:
                await response.read()
                status = str(response.status)
        except (aiohttp.ClientError, TimeoutError) as error:
            status = type(error).__name__
        recorder.latencies.append(time.monotonic() - started)
        recorder.statuses[status] += 1
        if think_s:
            await asyncio.sleep(think_s)


def watch_heartbeats(database_url: str, recorder: Recorder, stop: threading.Event) -> None:
    """Read every running audit's heartbeat straight from the database, 4 times a second.

    Not through the API: a poll slowed by the load under test would miss beats and report a
    stall that did not happen. A read takes no lock (see `Database.read_transaction`).
    """
    database = Database(database_url)
    try:
        while not stop.wait(0.25):
            with database.read_transaction() as session:
                rows = session.execute(
                    select(Audit.id, Audit.heartbeat_at).where(Audit.status == AuditStatus.RUNNING)
                ).all()
            for audit_id, beat in rows:
                beats = recorder.heartbeats.setdefault(str(audit_id), [])
                if beat is not None and (not beats or beats[-1] != beat):
                    beats.append(beat)
    finally:
        database.dispose()


async def keep_an_audit_running(
    http: aiohttp.ClientSession, current: dict[str, str], *, stop_at: float
) -> None:
    """Submit the next audit when the running one finishes."""
    seed = 1
    while time.monotonic() < stop_at:
        try:
            async with http.get(f"/v1/audits/{current['id']}") as response:
                audit = await response.json()
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError):
            await asyncio.sleep(0.25)
            continue
        if audit.get("status") in FINAL_STATUSES:
            seed += 1
            current["id"] = await submit(http, seed)
        await asyncio.sleep(0.25)


async def submit(http: aiohttp.ClientSession, seed: int) -> str:
    body = audit_body(seed=seed, instances=40, lime_samples=400, rows=DATASET_ROWS)
    async with http.post("/v1/audits", json=body) as response:
        if response.status != 202:
            raise RuntimeError(
                f"POST /v1/audits answered {response.status}: {await response.text()}"
            )
        audit_id: str = (await response.json())["id"]
    return audit_id


async def audit_status(http: aiohttp.ClientSession, audit_id: str) -> str:
    async with http.get(f"/v1/audits/{audit_id}") as response:
        status: str = (await response.json())["status"]
    return status


async def run_load(
    base: str, token: str, database_url: str, gateway_group: int, args: argparse.Namespace
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    # aiohttp, not httpx: the clients share the machine's cores with the service under test,
    # and on this 2-core machine httpx spent ≈ 2 ms of CPU per request, aiohttp ≈ 0.2 ms.
    connector = aiohttp.TCPConnector(limit=args.clients + 4)
    timeout = aiohttp.ClientTimeout(total=30.0)
    async with aiohttp.ClientSession(
        base_url=base, headers=headers, connector=connector, timeout=timeout
    ) as http:
        current = {"id": await submit(http, 1)}
        # Wait until it runs: the heartbeat is what is being watched.
        while await audit_status(http, current["id"]) == "queued":
            await asyncio.sleep(0.5)
        recorder = Recorder()
        stop_watching = threading.Event()
        watcher = threading.Thread(
            target=watch_heartbeats, args=(database_url, recorder, stop_watching), daemon=True
        )
        watcher.start()
        stop_at = time.monotonic() + args.duration
        budget = [args.max_requests]
        load_before = load_average()
        cpu_before = process_cpu_s()
        processes_before = cpu_by_process()
        started = time.monotonic()
        await asyncio.gather(
            keep_an_audit_running(http, current, stop_at=stop_at),
            *(
                client_loop(
                    http, current, recorder, stop_at=stop_at, think_s=args.think_s, budget=budget
                )
                for _ in range(args.clients)
            ),
        )
        elapsed = time.monotonic() - started
        client_cpu_s = process_cpu_s() - cpu_before
        processes_after = cpu_by_process()
        gateway_cpu_s = cpu_used_s(processes_before, processes_after, group=gateway_group)
        # The backends open at the end: the pools keep theirs for the whole run.
        backend_cpu_s = cpu_used_s(
            processes_before, processes_after, pids=database_backends(database_url)
        )
        stop_watching.set()
        watcher.join()
    gaps = [
        (later - earlier).total_seconds()
        for beats in recorder.heartbeats.values()
        for earlier, later in itertools.pairwise(beats)
    ]

    def per_request_ms(cpu_s: float) -> float:
        return round(cpu_s * 1000 / max(len(recorder.latencies), 1), 2)

    return {
        "mode": args.mode,
        "clients": args.clients,
        "think_s": args.think_s,
        "duration_s": round(elapsed, 1),
        "requests": len(recorder.latencies),
        "throughput_rps": round(len(recorder.latencies) / elapsed, 1),
        "errors": recorder.errors,
        "statuses": dict(recorder.statuses),
        "latency_s": {
            "p50": round(percentile(recorder.latencies, 0.50), 3),
            "p95": round(percentile(recorder.latencies, 0.95), 3),
            "p99": round(percentile(recorder.latencies, 0.99), 3),
            "max": round(max(recorder.latencies, default=float("nan")), 3),
        },
        "audits_watched": len(recorder.heartbeats),
        "heartbeats_seen": sum(len(beats) for beats in recorder.heartbeats.values()),
        "heartbeat_max_gap_s": round(max(gaps, default=float("nan")), 2),
        "client_cpu_ms_per_request": per_request_ms(client_cpu_s),
        # The gateway's processes (with the embedded worker under `serve`), and the Postgres
        # backends of the load's database (its pools', the worker's and the watcher's).
        "gateway_cpu_ms_per_request": per_request_ms(gateway_cpu_s),
        "postgres_cpu_ms_per_request": per_request_ms(backend_cpu_s),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("embedded", "postgres"), default="embedded")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--think-s", type=float, default=0.0, help="pause between requests")
    parser.add_argument("--max-requests", type=int, default=500_000)
    parser.add_argument(
        "--gateway-workers",
        type=int,
        default=None,
        help="gateway processes: `serve --processes` (embedded, default its own) or uvicorn "
        "workers (postgres, default 2)",
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="keep state and logs here")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600 or not 0 < args.clients <= 1000:
        parser.error("--duration must be in (0, 600] and --clients in (0, 1000]")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="trustdiff-load-"))
    work.mkdir(parents=True, exist_ok=True)
    models, data = build_assets(work / "assets", rows=DATASET_ROWS, tenant=TENANT)
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    settings = {"heartbeat_interval_s": "1"}
    with postgres_database() if args.mode == "postgres" else nullcontext() as postgres_url:
        database_url = postgres_url or f"sqlite:///{work / 'home' / 'trustdiff.sqlite'}"
        if postgres_url:
            settings |= {
                "database_url": database_url,
                "broker_url": f"redis://{LOOPBACK}:6379/14",
                "queue": f"trustdiff-load-{secrets.token_hex(4)}",
            }
        service = Service(service_env(work / "home", models, data, **settings), work)
        try:
            if args.mode == "embedded":
                command = [sys.executable, "-m", "trustdiff", "serve", "--port", str(port)]
                if args.gateway_workers is not None:
                    command += ["--processes", str(args.gateway_workers)]
                service.start("serve", [*command, "--log-level", "warning"])
            else:
                service.trustdiff("migrate")
                workers = 2 if args.gateway_workers is None else args.gateway_workers
                service.start("gateway", gateway_command(port, workers=workers))
                service.start("worker", worker_command())
            wait_until_ready(base)
            token = service.trustdiff("keys", "create", "--tenant", TENANT)
            gateway = service.processes["serve" if args.mode == "embedded" else "gateway"]
            report = asyncio.run(run_load(base, token, database_url, gateway.pid, args))
        finally:
            service.stop_all()
    print(json.dumps(report, indent=2))
    print(f"logs: {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
