"""Validated datasets kept for the next step of an audit, so its shards read each file once."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from trustdiff.config import DatasetSpec
from trustdiff.datasets import Dataset, read_dataset

# (resolved path, device, inode, size, mtime ns, ctime ns, spec as JSON, labels, seed)
DatasetKey = tuple[str, int, int, int, int, int, str, tuple[str, ...], int]


def _file_identity(path: Path) -> tuple[str, int, int, int, int, int] | None:
    """What says a file is unchanged without reading it; None when it cannot be read."""
    try:
        resolved = path.resolve()
        stat = resolved.stat()
    except OSError:
        return None
    # ctime changes on every write and cannot be set back by a user (mtime can, with utime).
    return (
        str(resolved),
        stat.st_dev,
        stat.st_ino,
        stat.st_size,
        stat.st_mtime_ns,
        stat.st_ctime_ns,
    )


class DatasetCache:
    """Up to `capacity` datasets as `read_dataset` returned them, least recently used out first.

    Reading and validating a large file is seconds per step (1M rows: every row parsed and
    checked, the file hashed). A worker that runs several shards of one audit, each of which
    starts from the plan alone, keeps the dataset here: only its first step reads the file.
    An entry is found again under the file's resolved path, device, inode, size,
    modification and change times, and what the read depends on (the dataset spec, the
    label names, the seed): a file written since is read again, and its sha256 checked
    against the plan's by the caller. A file that changed while it was read is not kept.

    The default capacity of one keeps memory at one dataset: a miss drops the old entry
    before the new file is read. Thread-safe; `reads` counts the files actually read.
    """

    def __init__(self, capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.reads = 0
        self._datasets: OrderedDict[DatasetKey, Dataset] = OrderedDict()
        self._lock = threading.Lock()

    def read(
        self, path: Path, spec: DatasetSpec, *, labels: Sequence[str] | None, seed: int
    ) -> Dataset:
        """`read_dataset(path, spec, labels=labels, seed=seed)`, from memory when unchanged."""
        identity = _file_identity(path)
        if identity is None:
            # Missing or unreadable: `read_dataset` raises the error the caller expects.
            return read_dataset(path, spec, labels=labels, seed=seed)
        names = tuple(labels) if labels is not None else ()
        key: DatasetKey = (*identity, spec.model_dump_json(), names, seed)
        with self._lock:
            dataset = self._datasets.get(key)
            if dataset is not None:
                self._datasets.move_to_end(key)
                return dataset
            while len(self._datasets) >= self.capacity:
                self._datasets.popitem(last=False)
            dataset = read_dataset(path, spec, labels=labels, seed=seed)
            self.reads += 1
            if _file_identity(path) == identity:
                self._datasets[key] = dataset
            return dataset

    def clear(self) -> None:
        with self._lock:
            self._datasets.clear()
