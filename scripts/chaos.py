"""Chaos test: audits survive worker SIGKILLs, a Redis restart without persistence and a
gateway SIGKILL, ending `succeeded` with one result and one callback each.

    python scripts/chaos.py --audits 12 --worker-kills 4

Everything runs on 127.0.0.1 and is started here: a fresh Postgres database, a redis-server
of its own on --redis-port (default 6380, started with no RDB and no AOF, so a restart loses
every message; the shared Redis on 6379 is never touched), one uvicorn gateway, two
`trustdiff worker --pool=solo` processes and a callback receiver. The script submits the
audits, SIGKILLs the gateway right after one POST returns 202 (and restarts it), SIGKILLs a
worker that is running an audit --worker-kills times (restarting it), restarts Redis once
mid-run, then waits for every audit to finish (bounded by --timeout) and checks: every audit
`succeeded` with a result, none left queued or running, exactly one callback per audit.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

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
    postgres_database,
    service_env,
    wait_until_ready,
    worker_command,
)

TENANT = "chaos"
# Per audit (the service's default quotas are 50 and 1,000): a few seconds each on the idle
# 2-core machine; with the re-runs the kills cause, 12 audits on 2 workers take over a minute,
# enough for 4 kills KILL_SPACING_S apart (each only while a worker is mid-audit).
AUDIT_INSTANCES = 50
AUDIT_LIME_SAMPLES = 800
KILL_SPACING_S = 5
DATASET_ROWS = 120
CALLBACK_SECRET = "chaos-secret"


class CallbackReceiver:
    """Counts the callbacks received per audit id."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received[json.loads(body)["audit_id"]] += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server.server_address[1]}/hooks"


class Chaos:
    def __init__(self, service: Service, base: str, redis_port: int, events: list[str]) -> None:
        self.service = service
        self.base = base
        self.redis_port = redis_port
        self.events = events
        self.started = time.monotonic()

    def log(self, event: str) -> None:
        line = f"t={time.monotonic() - self.started:6.1f}s  {event}"
        self.events.append(line)
        print(line, file=sys.stderr, flush=True)

    def start_redis(self) -> None:
        command = ["redis-server", "--port", str(self.redis_port), "--bind", LOOPBACK]
        command += ["--save", "", "--appendonly", "no"]
        self.service.start("redis", command)
        time.sleep(0.5)

    def start_gateway(self) -> None:
        self.service.start("gateway", gateway_command(self.base.rsplit(":", 1)[1]))
        wait_until_ready(self.base)

    def start_worker(self, name: str) -> None:
        self.service.start(name, worker_command())


def running_workers(database_url: str) -> set[str]:
    """The `host:pid` of each worker holding a running audit, read from the database."""
    import psycopg

    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, connect_timeout=5) as connection:
        rows = connection.execute("SELECT worker FROM audits WHERE status = 'running'")
        return {row[0] for row in rows if row[0]}


def wait_for(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.5)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    models, data = build_assets(work / "assets", rows=DATASET_ROWS, tenant=TENANT)
    receiver = CallbackReceiver()
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"
    events: list[str] = []
    with postgres_database() as database_url:
        env = service_env(
            work / "home",
            models,
            data,
            database_url=database_url,
            broker_url=f"redis://{LOOPBACK}:{args.redis_port}/0",
            queue=f"trustdiff-chaos-{secrets.token_hex(4)}",
            callback_secret=CALLBACK_SECRET,
            # The receiver listens on loopback, which callbacks may not reach by default.
            callback_allowed_networks=json.dumps([f"{LOOPBACK}/32"]),
            # All audits are submitted at once, past the per-tenant default of 4 in flight.
            max_concurrent_audits=str(args.audits),
            callback_backoff_s="0.5",
            heartbeat_interval_s="1",
            heartbeat_timeout_s=str(args.heartbeat_timeout),
            sweep_interval_s="3",
            requeue_queued_after_s=str(args.requeue_after),
            max_attempts=str(args.worker_kills + 2),
        )
        service = Service(env, work)
        chaos = Chaos(service, base, args.redis_port, events)
        try:
            chaos.start_redis()
            service.trustdiff("migrate")
            chaos.start_gateway()
            workers = ["worker-1", "worker-2"]
            for name in workers:
                chaos.start_worker(name)
            token = service.trustdiff("keys", "create", "--tenant", TENANT)
            http = httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
            chaos.log(f"started; load average {load_average()}")

            ids: list[str] = []
            for index in range(args.audits):
                body = audit_body(
                    seed=index,
                    instances=AUDIT_INSTANCES,
                    lime_samples=AUDIT_LIME_SAMPLES,
                    rows=DATASET_ROWS,
                )
                body["callback_url"] = receiver.url
                response = http.post(
                    "/v1/audits", json=body, headers={"Idempotency-Key": f"chaos-{index}"}
                )
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
                if index == 2:
                    service.kill("gateway")
                    chaos.log(f"SIGKILL gateway right after the 202 for audit {index}")
                    chaos.start_gateway()
                    chaos.log("gateway restarted")

            def audits() -> list[dict[str, Any]]:
                try:
                    page = http.get("/v1/audits", params={"limit": 100})
                except httpx.HTTPError:
                    return []
                return list(page.json()["items"]) if page.status_code == 200 else []

            kills = 0
            redis_restarted = False
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                current = audits()
                done = [a for a in current if a["status"] in FINAL_STATUSES]
                if len(done) == len(ids):
                    # Every audit ended; kills still missing make the run fail (see the report).
                    break
                busy = running_workers(database_url)
                victims = [
                    name
                    for name in workers
                    if name in service.processes
                    and f":{service.processes[name].pid}" in {w[w.rfind(":") :] for w in busy}
                ]
                spaced = time.monotonic() - chaos.started > KILL_SPACING_S * (kills + 1)
                if kills < args.worker_kills and victims and spaced:
                    # A worker in the middle of an audit: the run is lost with it.
                    victim = victims[kills % len(victims)]
                    service.kill(victim)
                    kills += 1
                    chaos.log(f"SIGKILL {victim} ({kills}/{args.worker_kills})")
                    time.sleep(2)
                    chaos.start_worker(victim)
                    chaos.log(f"{victim} restarted")
                elif not redis_restarted and kills >= 2:
                    service.kill("redis")
                    chaos.log("SIGKILL redis-server (no persistence: every message is lost)")
                    time.sleep(1)
                    chaos.start_redis()
                    redis_restarted = True
                    chaos.log("redis-server restarted, empty")
                time.sleep(1)
            final = {a["id"]: a for a in audits()}
            if all(final.get(i, {}).get("status") == "succeeded" for i in ids):
                wait_for(
                    lambda: all(receiver.received[i] >= 1 for i in ids),
                    timeout_s=60,
                    what="callbacks",
                )
            time.sleep(3)  # a duplicate callback, if any, would arrive now
            results = {
                audit_id: http.get(f"/v1/audits/{audit_id}/result").status_code for audit_id in ids
            }
            http.close()
        finally:
            service.stop_all()
            receiver.server.shutdown()
    statuses = Counter(final.get(i, {}).get("status", "missing") for i in ids)
    logs = "".join(path.read_text(errors="replace") for path in work.glob("worker-*.log"))
    report = {
        "audits": len(ids),
        "statuses": dict(statuses),
        "results_200": sum(code == 200 for code in results.values()),
        "stuck": sum(final.get(i, {}).get("status") in {"queued", "running"} for i in ids),
        "attempts": dict(Counter(final[i]["attempts"] for i in ids if i in final)),
        "callbacks_per_audit": dict(Counter(receiver.received[i] for i in ids)),
        "outcomes_dropped_in_logs": logs.count("outcome dropped"),
        "requeued_unclaimed_in_logs": logs.count("unclaimed; sent again"),
        "worker_kills": kills,
        "redis_restarted": redis_restarted,
        "wall_s": round(time.monotonic() - chaos.started, 1),
        "load_average_end": load_average(),
        "events": events,
    }
    report["passed"] = (
        statuses == Counter({"succeeded": len(ids)})
        and report["results_200"] == len(ids)
        and report["callbacks_per_audit"] == {1: len(ids)}
        # The faults happened: audits that end before them prove nothing.
        and kills == args.worker_kills
        and redis_restarted
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audits", type=int, default=12)
    parser.add_argument("--worker-kills", type=int, default=4)
    parser.add_argument("--redis-port", type=int, default=6380)
    parser.add_argument("--heartbeat-timeout", type=float, default=20.0)
    parser.add_argument("--requeue-after", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=900.0, help="at most 1800")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep state and logs here")
    args = parser.parse_args(argv)
    if args.redis_port == 6379:
        parser.error("--redis-port 6379 is the shared Redis: this script restarts its own")
    if not 0 < args.timeout <= 1800 or not 0 < args.audits <= 100:
        parser.error("--timeout must be in (0, 1800] and --audits in (0, 100]")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="trustdiff-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    report = run(args, work)
    print(json.dumps(report, indent=2))
    print(f"logs: {work}", file=sys.stderr)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
