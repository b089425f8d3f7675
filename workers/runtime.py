"""The worker process's state in one owner: settings, Celery app, database, background threads."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from service.db import Database
from service.jobs import build_celery_app
from service.serve import PARENT_PID_ENV
from service.settings import Settings
from trustdiff.dataset_cache import DatasetCache
from trustdiff.runner_cache import RunnerCache
from workers.runner import sweep_stale_audits

logger = logging.getLogger(__name__)


class Sweeper(threading.Thread):
    """Runs `sweep` every `interval_s` in the worker's main process.

    A thread rather than Celery beat: no extra process or schedule file, and several workers
    sweeping at once is harmless because the sweep skips rows another one has locked.
    """

    def __init__(self, sweep: Callable[[], object], interval_s: float) -> None:
        super().__init__(name="trustdiff-sweeper", daemon=True)
        self.sweep = sweep
        self.interval_s = interval_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self.sweep()
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


class WorkerRuntime:
    """Everything a worker process holds for its lifetime, created once per process.

    The Celery app includes `task_modules`; the database sends the jobs the runner queues
    (re-runs, shards, callbacks) through that app. Tasks pass `database`, `settings`,
    `runners` and `datasets` (the models loaded and the dataset validated in this process,
    kept for the next shard of the same audit) on to the plain functions they wrap.
    """

    def __init__(self, settings: Settings, *, task_modules: list[str]) -> None:
        self.settings = settings
        self.celery_app = build_celery_app(settings, include=task_modules)
        # Creating an engine opens no connection: the parent may build it before forking.
        self.database = Database(settings.database_url, self.celery_app)
        # Reference, candidate and twin of the audit whose shards this process runs.
        self.runners = RunnerCache(capacity=3)
        # Its dataset: one at a time, so a worker holds at most one dataset's rows.
        self.datasets = DatasetCache(capacity=1)
        self._sweeper: Sweeper | None = None

    def after_fork(self) -> None:
        """In a forked pool child: never reuse the parent's pooled database connections."""
        self.database.engine.dispose(close=False)

    def start_background(self) -> None:
        """Start the stale-audit sweep, and the parent watch under `trustdiff serve`.

        The first sweep runs right away: audits left running by a worker that died before
        this one started are recovered at startup, not one interval later.
        """
        self._sweeper = Sweeper(self.sweep, self.settings.sweep_interval_s)
        self._sweeper.start()
        parent_pid = os.environ.get(PARENT_PID_ENV)
        if parent_pid:
            ParentWatch(int(parent_pid)).start()

    def stop_background(self) -> None:
        if self._sweeper is not None:
            self._sweeper.stopped.set()

    def sweep(self) -> None:
        sweep_stale_audits(database=self.database, settings=self.settings)
