"""Errors the engine raises on bad input: each carries a stable code the API and CLI report."""

from __future__ import annotations

from typing import Any


class TrustdiffError(Exception):
    """Base of every user-facing engine error.

    `code` is a stable machine-readable identifier (the service puts it in problem+json and
    maps it to an HTTP status); the message is one readable sentence naming the bad value.
    """

    code = "trustdiff_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}


class PathOutsideRootError(TrustdiffError):
    code = "path_outside_root"


class CheckpointError(TrustdiffError):
    code = "checkpoint_invalid"


class CheckpointNotFoundError(CheckpointError):
    code = "checkpoint_not_found"


class PickledCheckpointError(CheckpointError):
    code = "checkpoint_pickled"


class RemoteCodeError(CheckpointError):
    code = "checkpoint_remote_code"


class LabelMismatchError(TrustdiffError):
    code = "label_mismatch"


class DatasetError(TrustdiffError):
    """A dataset that cannot be read; `row` is the 1-based data row number when one is at fault."""

    code = "dataset_invalid"

    def __init__(
        self, message: str, *, row: int | None = None, details: dict[str, Any] | None = None
    ) -> None:
        merged = dict(details or {})
        if row is not None:
            merged["row"] = row
        super().__init__(message, details=merged)
        self.row = row


class DatasetNotFoundError(DatasetError):
    code = "dataset_not_found"


class ConfigError(TrustdiffError):
    code = "config_invalid"


class AuditCancelledError(TrustdiffError):
    """Raised at a batch boundary once the caller's cancellation check answers true."""

    code = "audit_cancelled"
