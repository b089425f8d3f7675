"""The worker's Celery app (broker from settings) and its startup, fork and shutdown hooks."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from functools import lru_cache
from typing import Any

from celery.signals import celeryd_init, worker_process_init, worker_ready, worker_shutdown

from service.db import Database
from service.jobs import build_celery_app
from service.serve import PARENT_PID_ENV
from service.settings import Settings, get_settings
from trustdiff.threads import available_cores, configure_cpu_threads

logger = logging.getLogger(__name__)

settings = get_settings()
app = build_celery_app(settings, include=["workers.tasks"])


@lru_cache(maxsize=1)
def worker_database() -> Database:
    """The worker process's engine; jobs it queues (re-runs, callbacks) go through `app`."""
    return Database(settings.database_url, app)


def worker_context(
    database: Database | None = None, settings_override: Settings | None = None
) -> tuple[Database, Settings]:
    """The given database and settings, or this worker process's own."""
    return database or worker_database(), settings_override or settings


class Sweeper(threading.Thread):
    """Runs the stale-audit sweep every `sweep_interval_s` in the worker's main process.

    A thread rather than Celery beat: no extra process or schedule file, and several workers
    sweeping at once is harmless because the sweep skips rows another one has locked.
    """

    def __init__(self, interval_s: float) -> None:
        super().__init__(name="trustdiff-sweeper", daemon=True)
        self.interval_s = interval_s
        self.stopped = threading.Event()

    def run(self) -> None:
        from workers.runner import sweep_stale_audits

        while True:
            try:
                sweep_stale_audits()
            except Exception:
                logger.exception("stale-audit sweep failed; retrying in %ss", self.interval_s)
            if self.stopped.wait(self.interval_s):
                return


class ParentWatch(threading.Thread):
    """Warm-shuts the worker down once the `trustdiff serve` that started it is gone.

    Without this, killing `serve` with SIGKILL would leave an orphaned worker running.
    """

    def __init__(self, parent_pid: int) -> None:
        super().__init__(name="trustdiff-parent-watch", daemon=True)
        self.parent_pid = parent_pid

    def run(self) -> None:
        while os.getppid() == self.parent_pid:
            time.sleep(1.0)
        logger.warning("parent process %s is gone; shutting down", self.parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)


_sweeper: Sweeper | None = None


@celeryd_init.connect
def _configure_cpu_threads(conf: Any, options: dict[str, Any], **_kwargs: Any) -> None:
    # Before any audit imports torch (pool children fork later and inherit the environment):
    # the worker's cores are shared among the audits it runs at once.
    pool = str(options.get("pool_cls") or conf.worker_pool or "")
    concurrency = 1 if "solo" in pool else options.get("concurrency") or conf.worker_concurrency
    configure_cpu_threads(int(concurrency or available_cores()))


@worker_process_init.connect
def _dispose_inherited_connections(**_kwargs: Any) -> None:
    # A forked pool child must not reuse the parent's pooled database connections.
    if worker_database.cache_info().currsize:
        worker_database().engine.dispose(close=False)


@worker_ready.connect
def _start_sweeper(**_kwargs: Any) -> None:
    # The first sweep runs right away: audits left running by a worker that died before
    # this one started are recovered at startup, not one interval later.
    global _sweeper
    _sweeper = Sweeper(settings.sweep_interval_s)
    _sweeper.start()
    parent_pid = os.environ.get(PARENT_PID_ENV)
    if parent_pid:
        ParentWatch(int(parent_pid)).start()


@worker_shutdown.connect
def _stop_sweeper(**_kwargs: Any) -> None:
    if _sweeper is not None:
        _sweeper.stopped.set()
