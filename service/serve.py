"""`trustdiff serve`: uvicorn on the app, plus a supervised worker process, stopped together."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger(__name__)

PARENT_PID_ENV = "TRUSTDIFF_EXIT_WITH_PARENT"
# The log level `serve` hands to the gateway processes it spawns.
LOG_LEVEL_ENV = "TRUSTDIFF_SERVE_LOG_LEVEL"
# How much lower than the gateway's the supervised worker's CPU priority is.
WORKER_NICE = 10
# Idle keep-alive connections are closed after this long: longer than clients keep theirs
# (httpx and requests' pools 5 s, load balancers 60 s), so a client never sends a request on a
# connection the server is closing at that instant (uvicorn's default, 5 s, races httpx's).
KEEP_ALIVE_S = 65


class WorkerSupervisor(threading.Thread):
    """Keeps one worker subprocess running: restarted with backoff if it dies, stopped on exit.

    The worker gets its own session so a Ctrl-C in the terminal reaches only `serve`, which
    then stops the worker deliberately (a warm shutdown first, then a cold one) instead of
    racing it. It also exits on its own if `serve` is killed outright (see PARENT_PID_ENV).
    """

    def __init__(self, command: list[str], *, stop_timeout_s: float = 15.0) -> None:
        super().__init__(name="worker-supervisor", daemon=True)
        self.command = command
        self.stop_timeout_s = stop_timeout_s
        self.stopping = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, PARENT_PID_ENV: str(os.getpid())}
        return subprocess.Popen(self.command, env=env, start_new_session=True)

    def run(self) -> None:
        delay_s = 1.0
        while not self.stopping.is_set():
            with self._lock:
                if self.stopping.is_set():
                    return
                self.process = self._spawn()
            logger.info("worker started (pid %s)", self.process.pid)
            started = time.monotonic()
            code = self.process.wait()
            if self.stopping.is_set():
                return
            if time.monotonic() - started > 60:
                delay_s = 1.0  # it had been healthy: not a crash loop
            logger.error("worker exited with code %s; restarting in %.0fs", code, delay_s)
            if self.stopping.wait(delay_s):
                return
            delay_s = min(delay_s * 2, 60.0)

    def stop(self) -> None:
        with self._lock:
            self.stopping.set()
            process = self.process
        if process is None or process.poll() is not None:
            return
        # SIGTERM: Celery's warm shutdown lets a running audit reach its end; a long one is
        # cut short with SIGQUIT and picked up again by the stale-audit sweep.
        for sig, timeout_s in ((signal.SIGTERM, self.stop_timeout_s), (signal.SIGQUIT, 5.0)):
            process.send_signal(sig)
            try:
                process.wait(timeout_s)
                return
            except subprocess.TimeoutExpired:
                logger.warning("worker still running after %s", signal.Signals(sig).name)
        process.kill()
        process.wait()


def _exit_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def create_served_app() -> FastAPI:
    """The app of each gateway process when `serve` runs several (uvicorn's factory): they
    are spawned, so each configures its own logging, as `trustdiff serve` did for itself."""
    from service.app import create_app
    from service.logs import configure_logging
    from service.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_format, os.environ.get(LOG_LEVEL_ENV, "info"))
    return create_app(settings)


def serve(
    *,
    host: str,
    port: int,
    start_worker: bool,
    migrate: bool,
    log_level: str,
    processes: int = 1,
) -> int:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from service.app import create_app
    from service.migrations import upgrade_to_head
    from service.settings import get_settings

    settings = get_settings()
    settings.ensure_state_folders()
    if migrate:
        upgrade_to_head(settings.database_url)
    supervisor = None
    if start_worker:
        # The public `trustdiff worker` command: the gateway starts a worker, never imports one.
        # solo: one process is enough on a laptop, and there is nothing to fork per audit.
        # Niced: on one machine the API must keep answering while an audit takes every core.
        command = [
            sys.executable,
            "-m",
            "trustdiff",
            "worker",
            "--pool=solo",
            f"--nice={WORKER_NICE}",
        ]
        supervisor = WorkerSupervisor([*command, f"--log-level={log_level}"])
    # uvicorn stops gracefully on SIGTERM, then re-raises it; with the default handler that
    # would kill this process before the `finally` below stops the worker.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if supervisor is not None:
            supervisor.start()
        logger.info(
            "serving on http://%s:%s with %d gateway process(es) (database %s, broker %s)",
            host,
            port,
            processes,
            settings.database_url.split("@")[-1],
            settings.broker_url.split("@")[-1],
        )
        # Logging is configured already (`service.logs`); in JSON mode the app writes the
        # access lines itself, with the audit id that uvicorn's own could not carry.
        options: dict[str, Any] = {
            "host": host,
            "port": port,
            "log_level": log_level,
            "log_config": None,
            "access_log": settings.log_format != "json",
            "timeout_keep_alive": KEEP_ALIVE_S,
        }
        if processes == 1:
            uvicorn.Server(uvicorn.Config(create_app(settings), **options)).run()
        else:
            # One listening socket, `processes` spawned servers accepting on it; uvicorn's
            # supervisor restarts one that dies and stops them all on SIGINT/SIGTERM.
            os.environ[LOG_LEVEL_ENV] = log_level
            config = uvicorn.Config(
                f"{__name__}:create_served_app", factory=True, workers=processes, **options
            )
            Multiprocess(config, sockets=[config.bind_socket()]).run()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if supervisor is not None:
            supervisor.stop()
    return 0
