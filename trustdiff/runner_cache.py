"""Loaded model runners kept for the next step of an audit, so its shards load each model once."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trustdiff.inference import ModelRunner

# (folder, fingerprint, transform, device, dtype, max length, compiled)
RunnerKey = tuple[str, str, str | None, str, str, int, bool]


class RunnerCache:
    """Up to `capacity` loaded runners, least recently used out first.

    A runner is found again under its folder, fingerprint (which covers the folder's bytes
    and the transform), transform, device, dtype, max length and compilation, so a changed
    checkpoint is never served from memory. A worker process keeps one for its lifetime:
    consecutive shards of one audit (reference, candidate, twin: three runners) load
    nothing. Thread-safe.
    """

    def __init__(self, capacity: int = 3) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.loads = 0
        self._runners: OrderedDict[RunnerKey, ModelRunner] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self,
        path: Path,
        *,
        fingerprint: str,
        transform: str | None,
        device: str,
        dtype: str,
        max_length: int,
        compile: bool = False,
    ) -> ModelRunner:
        """The runner of this checkpoint and placement, loaded (`load_model_runner`) if absent."""
        from trustdiff.inference import load_model_runner

        key: RunnerKey = (str(path), fingerprint, transform, device, dtype, max_length, compile)
        with self._lock:
            runner = self._runners.get(key)
            if runner is not None:
                self._runners.move_to_end(key)
                return runner
            runner = load_model_runner(
                path,
                transform=transform,
                device=device,
                dtype=dtype,
                max_length=max_length,
                compile=compile,
            )
            self.loads += 1
            self._runners[key] = runner
            while len(self._runners) > self.capacity:
                self._runners.popitem(last=False)
            return runner

    def clear(self) -> None:
        with self._lock:
            self._runners.clear()
