"""An audit cut into steps that any process can run: the plan fixes the prediction shards
(row ranges) and the explanation blocks (groups of instances) before any model loads.

`plan_audit` runs every cheap check, fingerprints the checkpoints and looks the twin's figures
and the reference's predictions up in their caches; the plan it returns is plain JSON, so a
Celery worker can hand it to others. `run_audit` executes a plan's steps one after another;
the service runs the same steps as tasks spread over its workers (`trustdiff.shards`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from trustdiff.cache import PREDICTIONS, AuditCache
from trustdiff.checkpoints import checkpoint_content_sha256, fingerprint_checkpoint
from trustdiff.config import AuditConfig
from trustdiff.explain.runner import DEFAULT_WORKERS, explained_methods, select_instances
from trustdiff.manifest import versions
from trustdiff.stages import CancelCheck, ProgressCallback, Stages
from trustdiff.twin import twin_key
from trustdiff.twin_cache import TwinCache
from trustdiff.validation import ValidatedAudit, validate_audit

if TYPE_CHECKING:
    from trustdiff.dataset_cache import DatasetCache

# Rows per prediction shard: 1M rows make 10 shards. Rounded up to whole prediction chunks.
DEFAULT_SHARD_ROWS = 100_000
# Explained instances per block; a 30-instance audit is one block. Rounded up to whole waves.
DEFAULT_BLOCK_INSTANCES = 32


def prediction_chunk_rows(batch_size: int) -> int:
    """Rows predicted per evaluator call. Chunks exist to report progress; each is length
    sorted and batched on its own, so a row's probabilities depend on its chunk only."""
    return max(8 * batch_size, 512)


class RowRange(BaseModel):
    """Dataset rows `[start, stop)`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: int = Field(ge=0)
    stop: int = Field(ge=0)

    def __len__(self) -> int:
        return self.stop - self.start


class AuditPlan(BaseModel):
    """Everything the steps of one audit share, fixed before any model loads; plain JSON.

    Checkpoints load on `device` in `dtype` (what "auto" stood for where the plan was made),
    so every shard computes like every other. Prediction shard i predicts rows
    `shards[i]`; explanation block j explains the rows `blocks[j]` (a seeded sample of the
    dataset, `select_instances`). `twin_cached`: the twin's figures come from the twin cache
    under `twin_key` and the twin is never loaded. `reference_cached`: the reference's
    probabilities come from the audit cache under `reference_predictions_key`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: AuditConfig
    model_root: str | None = None
    data_root: str | None = None
    shared_model_root: str | None = None
    device: str
    dtype: str
    reference_fingerprint: str
    candidate_fingerprint: str
    twin_fingerprint: str | None = None
    dataset_fingerprint: str
    rows: int
    twin_key: str | None = None
    twin_cached: bool = False
    reference_predictions_key: dict[str, Any] | None = None
    reference_cached: bool = False
    shards: list[RowRange]
    blocks: list[list[int]]
    eligible_instances: int
    requested_instances: int
    planned_at: float = Field(description="Seconds since the epoch.")
    timings: dict[str, float]

    @property
    def load_twin(self) -> bool:
        """True when the twin is loaded and measured in this audit (not read from a cache)."""
        return self.twin_key is not None and not self.twin_cached

    @property
    def explained(self) -> list[int]:
        return [index for block in self.blocks for index in block]

    def validate_inputs(self, datasets: DatasetCache | None = None) -> ValidatedAudit:
        """`validate_audit` of the plan's config and roots, in the process that runs a step
        (the dataset from `datasets` when this process read it unchanged before);
        `ConfigError` when the dataset file no longer has the bytes it was planned on."""
        from trustdiff.errors import ConfigError

        validated = validate_audit(
            self.config,
            model_root=self.model_root,
            data_root=self.data_root,
            shared_model_root=self.shared_model_root,
            datasets=datasets,
        )
        if validated.dataset.fingerprint != self.dataset_fingerprint:
            raise ConfigError(
                f"dataset {self.config.dataset.path!r} changed while the audit ran: re-submit it"
            )
        return validated


def _text(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)


def plan_audit(
    config: AuditConfig,
    *,
    model_root: str | os.PathLike[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    shared_model_root: str | os.PathLike[str] | None = None,
    cache: AuditCache | None = None,
    twin_cache: TwinCache | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    block_instances: int = DEFAULT_BLOCK_INSTANCES,
    datasets: DatasetCache | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> AuditPlan:
    """Validate `config` (`validate_audit`), fingerprint its checkpoints, look its cached
    parts up, and cut it into prediction shards and explanation blocks.

    `shard_rows` is rounded up to whole prediction chunks (`prediction_chunk_rows`), so every
    row is predicted in the same chunk whatever the shard size; `block_instances` to whole
    explanation waves (`DEFAULT_WORKERS` instances explained in lock-step). The dataset read
    is kept in `datasets` when given, for the steps this process runs next. Loads no model;
    resolving `config.device` imports torch.
    """
    if shard_rows < 1 or block_instances < 1:
        raise ValueError(
            f"shard_rows and block_instances must be >= 1, got {shard_rows}, {block_instances}"
        )
    from trustdiff.inference import resolve_placement

    stages = Stages(progress, should_cancel)
    with stages.stage("validate"):
        validated = validate_audit(
            config,
            model_root=model_root,
            data_root=data_root,
            shared_model_root=shared_model_root,
            datasets=datasets,
        )
        fingerprints = _fingerprints(validated, cache)
        twin = twin_key(validated, fingerprints[0], fingerprints[2])
        device, dtype = resolve_placement(config.device, config.dtype)
        predictions_key = None
        if cache is not None:
            predictions_key = reference_predictions_key(
                validated, fingerprints[0], device=device, dtype=dtype
            )
        selection = select_instances(
            validated.dataset.inputs,
            count=config.explain.instances if explained_methods(config.explain) else 0,
            seed=config.seed,
            top_k=config.explain.top_k,
        )
    return AuditPlan(
        config=config,
        model_root=_text(model_root),
        data_root=_text(data_root),
        shared_model_root=_text(shared_model_root),
        device=device,
        dtype=dtype,
        reference_fingerprint=fingerprints[0],
        candidate_fingerprint=fingerprints[1],
        twin_fingerprint=fingerprints[2],
        dataset_fingerprint=validated.dataset.fingerprint,
        rows=len(validated.dataset),
        twin_key=twin,
        twin_cached=_has_twin_figures(twin_cache, twin),
        reference_predictions_key=predictions_key,
        reference_cached=_has_predictions(cache, predictions_key, rows=len(validated.dataset)),
        shards=_row_ranges(len(validated.dataset), shard_rows, config.batch_size),
        blocks=_blocks(selection.indices, block_instances),
        eligible_instances=selection.eligible,
        requested_instances=selection.requested,
        planned_at=time.time(),
        timings=stages.timings,
    )


def _row_ranges(rows: int, shard_rows: int, batch_size: int) -> list[RowRange]:
    chunk = prediction_chunk_rows(batch_size)
    size = -(-shard_rows // chunk) * chunk
    return [RowRange(start=start, stop=min(start + size, rows)) for start in range(0, rows, size)]


def _blocks(indices: Sequence[int], block_instances: int) -> list[list[int]]:
    size = -(-block_instances // DEFAULT_WORKERS) * DEFAULT_WORKERS
    return [list(indices[start : start + size]) for start in range(0, len(indices), size)]


def _fingerprints(
    validated: ValidatedAudit, cache: AuditCache | None
) -> tuple[str, str, str | None]:
    """Reference, candidate and twin (None without one) fingerprints."""
    config = validated.config
    specs = [
        (validated.reference_path, config.reference.transform),
        (validated.candidate_path, config.candidate.transform),
    ]
    if config.twin is not None and validated.twin_path is not None:
        specs.append((validated.twin_path, config.twin.transform))
    computed = checkpoint_fingerprints(specs, cache)
    return computed[0], computed[1], computed[2] if len(computed) == 3 else None


def checkpoint_fingerprints(
    specs: Sequence[tuple[Path, str | None]], cache: AuditCache | None
) -> list[str]:
    """Each (folder, transform)'s fingerprint; each folder's files are read at most once.

    With a cache, a folder whose files kept their sizes and modification times is not read
    at all; without one, a folder audited against a transform of itself is read once.
    """
    if cache is not None:
        return [cache.checkpoint_fingerprint(path, transform) for path, transform in specs]
    contents: dict[Path, str] = {}
    for path, _ in specs:
        if path not in contents:
            contents[path] = checkpoint_content_sha256(path)
    return [
        fingerprint_checkpoint(path, transform, content_sha256=contents[path])
        for path, transform in specs
    ]


def reference_predictions_key(
    validated: ValidatedAudit, reference_fingerprint: str, *, device: str, dtype: str
) -> dict[str, Any]:
    """Everything the reference's probabilities on the dataset depend on, and nothing else.

    The model (fingerprint, which includes the transform; the dtype and device it computes
    in, and whether it is compiled; max length and batch size, which decide truncation,
    padding and the prediction chunks) and the rows (the file's sha256, its field mapping,
    limit, sampling and the seed a random sample used). The engine version is in the key
    too: a release may change how inputs are batched.
    """
    from trustdiff.inference import compiles, runner_placement

    config, spec = validated.config, validated.config.dataset
    runner_device, runner_dtype = runner_placement(
        config.reference.transform, device=device, dtype=dtype
    )
    return {
        "model": {
            "fingerprint": reference_fingerprint,
            "dtype": runner_dtype,
            "device": runner_device,
            "compiled": compiles(config.reference.transform, config.compile),
            "max_length": config.max_length,
            "batch_size": config.batch_size,
        },
        "dataset": {
            "sha256": validated.dataset.fingerprint,
            "format": validated.dataset.format,
            "text_field": spec.text_field,
            "text_pair_field": spec.text_pair_field,
            "limit": spec.limit,
            "sampling": spec.sampling,
            "seed": config.seed if spec.limit is not None and spec.sampling == "random" else None,
        },
        "trustdiff": versions()["trustdiff"],
    }


def _has_twin_figures(twin_cache: TwinCache | None, key: str | None) -> bool:
    return twin_cache is not None and key is not None and twin_cache.load(key) is not None


def _has_predictions(cache: AuditCache | None, key: dict[str, Any] | None, *, rows: int) -> bool:
    if cache is None or key is None:
        return False
    cached = cache.load_arrays(PREDICTIONS, key)
    return cached is not None and cached["proba"].shape[0] == rows
