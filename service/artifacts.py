"""Audit artifacts (rows files, and a running audit's plan and shard outputs) in a local
folder or under any fsspec URL (S3, GCS, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from service.settings import Settings


class ArtifactStore:
    """Files stored by key under one root URL; each stored file is named by its full URL.

    The URL is what the database keeps, so an audit's artifact stays readable when the
    configured root later changes (as long as the old storage is still reachable with the
    same storage options).
    """

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None) -> None:
        self.storage_options = dict(storage_options or {})
        self.filesystem, self.root = fsspec.core.url_to_fs(root, **self.storage_options)

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        return cls(settings.artifact_root, settings.artifact_storage_options)

    def put(self, local_path: Path, key: str) -> str:
        """Copy `local_path` to `key` under the root; returns the stored file's URL."""
        target = self._target(key)
        self.filesystem.put_file(str(local_path), target)
        return str(self.filesystem.unstrip_protocol(target))

    def put_bytes(self, data: bytes, key: str) -> str:
        """Store `data` as `key` under the root (replacing what was there); returns its URL."""
        target = self._target(key)
        self.filesystem.pipe_file(target, data)
        return str(self.filesystem.unstrip_protocol(target))

    def read_bytes(self, url: str) -> bytes:
        filesystem, path = self._resolve(url)
        data: bytes = filesystem.cat_file(path)
        return data

    def delete(self, url: str) -> None:
        """Remove the stored file; nothing happens when it is not there."""
        filesystem, path = self._resolve(url)
        if filesystem.exists(path):
            filesystem.rm_file(path)

    def _target(self, key: str) -> str:
        target = f"{self.root.rstrip('/')}/{key}"
        self.filesystem.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        return target

    def _resolve(self, url: str) -> tuple[Any, str]:
        return fsspec.core.url_to_fs(url, **self.storage_options)

    def local_path(self, url: str) -> Path | None:
        """The file's path when it is on the local disk (served directly), else None."""
        filesystem, path = self._resolve(url)
        return Path(path) if isinstance(filesystem, LocalFileSystem) else None

    def open(self, url: str) -> IO[bytes]:
        """The stored file, opened for (random-access) binary reading."""
        filesystem, path = self._resolve(url)
        handle: IO[bytes] = filesystem.open(path, "rb")
        return handle

    def size(self, url: str) -> int:
        filesystem, path = self._resolve(url)
        return int(filesystem.size(path))

    def exists(self, url: str) -> bool:
        filesystem, path = self._resolve(url)
        return bool(filesystem.exists(path))
