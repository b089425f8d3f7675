"""The result document's manifest: what was audited, with which settings, code and device."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING

from trustdiff.checkpoints import CheckpointInfo
from trustdiff.config import CheckpointSpec
from trustdiff.result import CheckpointManifest, DatasetManifest, Manifest, TwinCacheManifest
from trustdiff.validation import ValidatedAudit

if TYPE_CHECKING:
    from trustdiff.inference import ModelRunner

VERSIONED_PACKAGES = (
    "trustdiff",
    "torch",
    "transformers",
    "tokenizers",
    "shap",
    "lime",
    "numpy",
    "scipy",
    "scikit-learn",
)


def versions() -> dict[str, str]:
    """The installed version of each package in `VERSIONED_PACKAGES` ("not installed")."""
    found = {}
    for package in VERSIONED_PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


@dataclass(frozen=True)
class LoadedModel:
    """What the manifest says of a loaded model: its size, compute dtype and device, and
    whether its forwards were compiled."""

    num_parameters: int
    dtype: str
    device: str
    compiled: bool = False

    @classmethod
    def of(cls, runner: ModelRunner) -> LoadedModel:
        return cls(
            num_parameters=runner.num_parameters,
            dtype=str(runner.dtype).removeprefix("torch."),
            device=str(runner.device),
            compiled=runner.compiled,
        )


def describe_device(reference: LoadedModel, candidate: LoadedModel) -> str:
    if reference.device == candidate.device:
        return reference.device
    return f"reference: {reference.device}, candidate: {candidate.device}"


def checkpoint_manifest(
    spec: CheckpointSpec, info: CheckpointInfo, fingerprint: str, model: LoadedModel
) -> CheckpointManifest:
    return CheckpointManifest(
        path=spec.path,
        fingerprint=fingerprint,
        transform=spec.transform,
        model_type=info.model_type,
        num_parameters=model.num_parameters,
        dtype=model.dtype,
        compiled=model.compiled,
        labels=info.labels,
    )


def build_manifest(
    validated: ValidatedAudit,
    fingerprints: tuple[str, str],
    models: tuple[LoadedModel, LoadedModel],
    timings: dict[str, float],
    *,
    twin: CheckpointManifest | None = None,
    twin_cache: TwinCacheManifest | None = None,
) -> Manifest:
    """The manifest of an audit of `validated`; `models` are reference and candidate, `twin`
    the twin's own manifest and `twin_cache` where its figures came from."""
    config, dataset = validated.config, validated.dataset
    return Manifest(
        twin=twin,
        twin_cache=twin_cache,
        reference=checkpoint_manifest(
            config.reference, validated.reference, fingerprints[0], models[0]
        ),
        candidate=checkpoint_manifest(
            config.candidate, validated.candidate, fingerprints[1], models[1]
        ),
        dataset=DatasetManifest(
            path=config.dataset.path,
            fingerprint=dataset.fingerprint,
            format=dataset.format,
            rows=len(dataset),
            rows_in_file=dataset.rows_in_file,
            text_field=config.dataset.text_field,
            text_pair_field=config.dataset.text_pair_field,
            label_field=config.dataset.label_field,
        ),
        labels=validated.labels,
        label_mapping=config.label_mapping,
        config=config.model_dump(mode="json"),
        seed=config.seed,
        versions=versions(),
        device=describe_device(*models),
        timings=timings,
        created_at=datetime.now(UTC).isoformat(),
    )
