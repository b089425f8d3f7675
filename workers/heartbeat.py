"""Heartbeats: a thread per running job that writes its liveness and progress in short
transactions and reads back whether the job must stop."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import uuid

from sqlalchemy.orm import Session

from service import shards, transitions
from service.db import Database
from service.shards import ClaimedShard
from service.transitions import Progress

logger = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Writes the heartbeat and the latest progress in short transactions while a job runs.

    The engine calls `report` from its own thread as often as it likes; only this thread
    touches the database, at most once per interval. Each beat also reads whether a cancel
    was requested, which `should_cancel` answers from memory at every batch boundary.
    """

    def __init__(
        self,
        database: Database,
        audit_id: uuid.UUID,
        interval_s: float,
        *,
        time_limit_s: float | None = None,
    ) -> None:
        super().__init__(name=f"heartbeat-{audit_id}", daemon=True)
        self.database = database
        self.audit_id = audit_id
        self.interval_s = interval_s
        # The soft time limit, checked where the engine checks for a cancel: it works under
        # every pool (Celery's own limits need prefork) and stops at a batch boundary.
        self.deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
        self.timed_out = threading.Event()
        self.cancel_requested = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        # A thread starts with empty context variables: carry the job's (its audit id, for
        # the log lines) into this one.
        self._context = contextvars.copy_context()

    def report(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            self._progress = Progress(stage=stage, done=done, total=total)

    def should_cancel(self) -> bool:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.timed_out.set()
        return self.cancel_requested.is_set() or self.timed_out.is_set()

    def write(self, session: Session, progress: Progress | None) -> bool:
        """Record one beat; answers whether the job must stop."""
        return transitions.record_heartbeat(session, self.audit_id, progress)

    def beat(self) -> None:
        with self._lock:
            progress, self._progress = self._progress, None
        try:
            with self.database.transaction() as session:
                if self.write(session, progress):
                    self.cancel_requested.set()
        except Exception:
            # A missed beat is harmless as long as the next one lands before the timeout.
            logger.warning("audit %s: heartbeat failed", self.audit_id, exc_info=True)
            with self._lock:
                self._progress = self._progress or progress

    def run(self) -> None:
        self._context.run(self._beat_until_stopped)

    def _beat_until_stopped(self) -> None:
        while not self._stopped.wait(self.interval_s):
            self.beat()

    def stop(self) -> None:
        self._stopped.set()
        self.join()


class ShardHeartbeat(Heartbeat):
    """The heartbeat of one shard's run: its progress is the shard's; it must stop when its
    audit ended or is being cancelled, or when the sweep gave the shard to another worker."""

    def __init__(
        self,
        database: Database,
        claimed: ClaimedShard,
        interval_s: float,
        *,
        time_limit_s: float | None = None,
    ) -> None:
        super().__init__(database, claimed.audit_id, interval_s, time_limit_s=time_limit_s)
        self.claimed = claimed

    def write(self, session: Session, progress: Progress | None) -> bool:
        return shards.record_shard_heartbeat(session, self.claimed, progress)
