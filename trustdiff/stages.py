"""An audit's named stages: progress reports, cancellation polling and seconds per stage."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from trustdiff.errors import AuditCancelledError

ProgressCallback = Callable[[str, int, int], None]
CancelCheck = Callable[[], bool]
STAGES = ("validate", "load", "predict", "metrics", "explain", "rows", "gate")


class Stages:
    """Progress reporting, cancellation polling and timing of one audit step's stages.

    A stage entered more than once (each prediction shard loads and predicts) adds up its
    seconds in `timings`.
    """

    def __init__(
        self, progress: ProgressCallback | None, should_cancel: CancelCheck | None
    ) -> None:
        self.progress = progress
        self.should_cancel = should_cancel
        self.timings: dict[str, float] = {}

    def report(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise AuditCancelledError("audit cancelled")

    def add_time(self, name: str, seconds: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + seconds

    @contextmanager
    def stage(self, name: str, total: int = 1) -> Iterator[None]:
        self.check_cancel()
        self.report(name, 0, total)
        started = time.perf_counter()
        yield
        self.add_time(name, time.perf_counter() - started)
        self.report(name, total, total)


def add_timings(into: dict[str, float], timings: dict[str, float]) -> None:
    """Add `timings` (seconds by name) into `into`, summing names both have."""
    for name, seconds in timings.items():
        into[name] = into.get(name, 0.0) + seconds


def offset_progress(
    progress: ProgressCallback | None, stage: str, *, offset: int, total: int
) -> ProgressCallback | None:
    """`progress` for one part of a stage: that stage's reports shifted by `offset` and out of
    `total`, so parts run one after another report as one stage; other stages pass through."""
    if progress is None:
        return None

    def report(name: str, done: int, part_total: int) -> None:
        if name == stage:
            progress(name, offset + done, total)
        else:
            progress(name, done, part_total)

    return report
