"""A folder of results that do not depend on the audit asking: checkpoint content digests and
a model's predictions on a dataset, each stored once under a key naming all it depends on.

Auditing three candidates against one reference predicts the reference on the dataset once;
an unchanged checkpoint folder is hashed once. Entries are written to a temporary name and
renamed into place, so concurrent audits (several service workers sharing the folder) never
read half a file; two audits racing to fill the same entry write the same bytes.

Other figures that depend only on their inputs can use the same store: `load_json`/
`store_json` and `load_arrays`/`store_arrays` under a kind of their own and a key of
everything they depend on. The twin's figures have a store of their own in the same folder
(`trustdiff.twin_cache.TwinCache`, under `twin/`), written the same way (`write_atomically`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from trustdiff.checkpoints import (
    checkpoint_content_sha256,
    fingerprint_checkpoint,
    fingerprinted_files,
)

CACHE_FORMAT_VERSION = 1
PREDICTIONS = "predictions"
_DIGESTS = "checkpoint-digests"


def write_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Create `path` (and its folder) with what `write` puts in a binary stream: written to
    a temporary file beside it, then renamed into place, so a concurrent reader finds the
    old file or the whole new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def cache_key(key: Mapping[str, Any]) -> str:
    """sha256 of `key` as canonical JSON (sorted keys), with the cache format version."""
    text = json.dumps(
        {"cache_format": CACHE_FORMAT_VERSION, **key}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class AuditCache:
    """A cache folder; `None` in place of one everywhere means no caching.

    `hits` and `misses` count lookups by kind, for callers and tests that want to know.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.hits: dict[str, int] = {}
        self.misses: dict[str, int] = {}

    def _path(self, kind: str, digest: str, suffix: str) -> Path:
        return self.folder / kind / digest[:2] / f"{digest}{suffix}"

    def _count(self, kind: str, *, hit: bool) -> None:
        counts = self.hits if hit else self.misses
        counts[kind] = counts.get(kind, 0) + 1

    # --- JSON documents ---------------------------------------------------------------------

    def load_json(self, kind: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """The document stored under `key`, or None (also for an unreadable entry)."""
        path = self._path(kind, cache_key(key), ".json")
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self._count(kind, hit=False)
            return None
        # The key is stored beside the value: a hash collision or a foreign file is a miss.
        if not isinstance(entry, dict) or entry.get("key") != json.loads(json.dumps(key)):
            self._count(kind, hit=False)
            return None
        self._count(kind, hit=True)
        value: dict[str, Any] = entry["value"]
        return value

    def store_json(self, kind: str, key: Mapping[str, Any], value: Mapping[str, Any]) -> None:
        text = json.dumps({"key": key, "value": value}, sort_keys=True, allow_nan=False)
        path = self._path(kind, cache_key(key), ".json")
        write_atomically(path, lambda stream: stream.write(text.encode("utf-8")))

    # --- arrays -----------------------------------------------------------------------------

    def load_arrays(self, kind: str, key: Mapping[str, Any]) -> dict[str, NDArray[Any]] | None:
        """The arrays stored under `key` (loaded into memory), or None."""
        digest = cache_key(key)
        path = self._path(kind, digest, ".npz")
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except (OSError, ValueError):
            self._count(kind, hit=False)
            return None
        stored_digest = arrays.pop("__key__", None)
        if stored_digest is None or str(stored_digest) != digest:
            self._count(kind, hit=False)
            return None
        self._count(kind, hit=True)
        return arrays

    def store_arrays(
        self, kind: str, key: Mapping[str, Any], arrays: Mapping[str, NDArray[Any]]
    ) -> None:
        digest = cache_key(key)
        path = self._path(kind, digest, ".npz")
        contents: dict[str, Any] = {"__key__": np.array(digest), **arrays}
        write_atomically(path, lambda stream: np.savez(stream, **contents))

    # --- checkpoint fingerprints ------------------------------------------------------------

    def checkpoint_fingerprint(self, path: Path, transform: str | None) -> str:
        """`fingerprint_checkpoint(path, transform)`, reading the weights only when needed.

        The folder's content digest is cached under its resolved path and the name, size
        and modification time (ns) of every fingerprinted file: any change to any of them
        re-hashes the folder; a folder left as it was is never read again.
        """
        key = {
            "path": str(path.resolve()),
            "files": [
                [file.name, stat.st_size, stat.st_mtime_ns]
                for file in fingerprinted_files(path)
                for stat in (file.stat(),)
            ],
        }
        entry = self.load_json(_DIGESTS, key)
        if entry is None:
            entry = {"content_sha256": checkpoint_content_sha256(path)}
            self.store_json(_DIGESTS, key, entry)
        return fingerprint_checkpoint(path, transform, content_sha256=str(entry["content_sha256"]))
