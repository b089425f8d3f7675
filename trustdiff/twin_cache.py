"""The twin's figures, cached on disk: computed once per reference, twin, dataset and settings.

The twin (the reference's recipe retrained with another seed) is audited against the
reference with the same code as the candidate. Its figures do not depend on the candidate,
so auditing three candidates against one reference and twin should pay for the twin once.
Each entry is one JSON file named by `twin_cache_key`, written atomically; a file that no
longer parses is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from trustdiff.cache import write_atomically
from trustdiff.config import AuditConfig
from trustdiff.result import Calibration, CheckpointManifest, Parity, TwinAlignment

# Bumped whenever what is cached, or how it is computed, changes.
CACHE_FORMAT = "1"
CACHE_DIR_ENVIRONMENT_VARIABLE = "TRUSTDIFF_CACHE_DIR"


class TwinFigures(BaseModel):
    """Everything an audit needs of the twin: the twin sections of parity, calibration and
    alignment, its probabilities (n, K) in reference label order, and its attributions by
    method and explained dataset row."""

    model_config = ConfigDict(extra="forbid")

    manifest: CheckpointManifest
    parity: Parity
    calibration: Calibration
    alignment: dict[str, TwinAlignment]
    probabilities: list[list[float]]
    attributions: dict[str, dict[int, list[float]]]


def twin_cache_key(
    config: AuditConfig,
    *,
    reference_fingerprint: str,
    twin_fingerprint: str,
    dataset_fingerprint: str,
    device: str,
    version: str,
) -> str:
    """sha256 over what the twin's figures depend on: the fingerprints of reference, twin
    (both include their transforms) and dataset, the rows and fields read, the calibration
    and explanation settings, seed, dtype, compilation, batching, truncation, the device and
    the version of trustdiff. The candidate and the gate are not part of it."""
    dataset = config.dataset.model_dump(mode="json", exclude={"path"})
    material = {
        "format": CACHE_FORMAT,
        "version": version,
        "reference": reference_fingerprint,
        "twin": twin_fingerprint,
        "dataset": dataset_fingerprint,
        "dataset_spec": dataset,
        "calibration": config.calibration.model_dump(mode="json"),
        "explain": config.explain.model_dump(mode="json"),
        "seed": config.seed,
        "dtype": config.dtype,
        "compile": config.compile,
        "batch_size": config.batch_size,
        "max_length": config.max_length,
        "device": device,
    }
    encoded = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()


def default_cache_dir() -> Path:
    """`$TRUSTDIFF_CACHE_DIR`, else `$XDG_CACHE_HOME/trustdiff`, else `~/.cache/trustdiff`."""
    configured = os.environ.get(CACHE_DIR_ENVIRONMENT_VARIABLE)
    if configured:
        return Path(configured)
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "trustdiff"


class TwinCache:
    """A folder of cached twin figures, `<folder>/twin/<key>.json`."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / "twin" / f"{key}.json"

    def load(self, key: str) -> TwinFigures | None:
        """The cached figures, or None when there are none (or they no longer parse)."""
        try:
            return TwinFigures.model_validate_json(self.path(key).read_bytes())
        except (OSError, ValidationError, ValueError):
            return None

    def store(self, key: str, figures: TwinFigures) -> None:
        """Write atomically: a concurrent reader sees the old file or the new, never half."""
        text = figures.model_dump_json()
        write_atomically(self.path(key), lambda stream: stream.write(text.encode("utf-8")))
