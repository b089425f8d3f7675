"""An audit's cheap checks: paths under their roots, checkpoints, label spaces, dataset rows."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trustdiff.checkpoints import CheckpointInfo, align_label_spaces, inspect_checkpoint
from trustdiff.config import AuditConfig
from trustdiff.datasets import Dataset, read_dataset
from trustdiff.errors import ConfigError
from trustdiff.paths import resolve_under_root

if TYPE_CHECKING:
    from trustdiff.dataset_cache import DatasetCache

# Device strings accepted without importing torch; availability is checked at load time.
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")
# Checkpoint paths starting with this name the shared model root, when one is given.
SHARED_MODELS_PREFIX = "shared/"


@dataclass(frozen=True)
class ValidatedAudit:
    """An audit whose cheap checks all passed: resolved paths, both checkpoints inspected,
    the label spaces aligned, every dataset row read. No model is loaded, no torch imported.

    `candidate_column_order` puts candidate probability columns in reference label order;
    `twin_column_order` does the same for the twin, when there is one.
    """

    config: AuditConfig
    reference_path: Path
    candidate_path: Path
    dataset_path: Path
    reference: CheckpointInfo
    candidate: CheckpointInfo
    labels: list[str]
    candidate_column_order: list[int]
    dataset: Dataset
    twin_path: Path | None = None
    twin: CheckpointInfo | None = None
    twin_column_order: list[int] | None = None


def _optional_path(path: str | os.PathLike[str] | None) -> Path | None:
    return None if path is None else Path(path)


def checkpoint_path(
    path: str, models: Path | None, shared: Path | None, *, what: str
) -> tuple[Path, Path | None]:
    """The resolved checkpoint folder and the root it must stay under."""
    if shared is not None and path.startswith(SHARED_MODELS_PREFIX):
        relative = path.removeprefix(SHARED_MODELS_PREFIX)
        return resolve_under_root(relative or ".", shared, what=what), shared.resolve()
    root = models.resolve() if models is not None else None
    return resolve_under_root(path, models, what=what), root


def validate_audit(
    config: AuditConfig,
    *,
    model_root: str | os.PathLike[str] | None = None,
    data_root: str | os.PathLike[str] | None = None,
    shared_model_root: str | os.PathLike[str] | None = None,
    datasets: DatasetCache | None = None,
) -> ValidatedAudit:
    """Every check that needs no model, in the order a user fixes them; fast and torch-free.

    Checkpoint paths resolve under `model_root`, or under `shared_model_root` when given and
    the path starts with `shared/`; every file of a checkpoint must stay under its root too
    (a weight file symlinked out of it is refused like a folder would be). With `datasets`,
    an unchanged dataset file validated before in this process is not read again.

    Raises `PathOutsideRootError`, `CheckpointError` subclasses, `LabelMismatchError`,
    `DatasetError` (with the bad row) or `ConfigError` (an unrecognisable device string, a
    slice column the dataset lacks).
    """
    if not _DEVICE_PATTERN.match(config.device):
        raise ConfigError(
            f"invalid device {config.device!r}: use auto, cpu, cuda, cuda:N, mps or xpu"
        )
    models, data = _optional_path(model_root), _optional_path(data_root)
    shared = _optional_path(shared_model_root)
    reference_path, reference_root = checkpoint_path(
        config.reference.path, models, shared, what="reference checkpoint"
    )
    candidate_path, candidate_root = checkpoint_path(
        config.candidate.path, models, shared, what="candidate checkpoint"
    )
    dataset_path = resolve_under_root(config.dataset.path, data, what="dataset")
    reference = inspect_checkpoint(reference_path, root=reference_root)
    candidate = inspect_checkpoint(candidate_path, root=candidate_root)
    column_order = align_label_spaces(reference.labels, candidate.labels, config.label_mapping)
    twin_path = twin = twin_column_order = None
    if config.twin is not None:
        twin_path, twin_root = checkpoint_path(
            config.twin.path, models, shared, what="twin checkpoint"
        )
        twin = inspect_checkpoint(twin_path, root=twin_root)
        # The twin is the reference's recipe: its labels are the reference's, no mapping.
        twin_column_order = align_label_spaces(reference.labels, twin.labels, None)
    if datasets is None:
        dataset = read_dataset(
            dataset_path, config.dataset, labels=reference.labels, seed=config.seed
        )
    else:
        dataset = datasets.read(
            dataset_path, config.dataset, labels=reference.labels, seed=config.seed
        )
    missing = [column for column in config.slices.columns if column not in dataset.columns]
    if missing:
        raise ConfigError(
            f"slice column {missing[0]!r} is not in the dataset; its other columns are "
            f"{sorted(dataset.columns)}"
        )
    return ValidatedAudit(
        config=config,
        reference_path=reference_path,
        candidate_path=candidate_path,
        dataset_path=dataset_path,
        reference=reference,
        candidate=candidate,
        labels=list(reference.labels),
        candidate_column_order=column_order,
        dataset=dataset,
        twin_path=twin_path,
        twin=twin,
        twin_column_order=twin_column_order,
    )
