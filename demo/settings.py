"""The demo's typed settings, read from `settings.yaml`, and where its assets live."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from demo.assets import DataSettings
from trustdiff.errors import ConfigError

SETTINGS_PATH = Path(__file__).with_name("settings.yaml")


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FineTuneSettings(_Settings):
    """One supervised training run: which examples, how long, how fast."""

    train_examples: int = Field(default=3000, ge=1)
    epochs: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0)
    batch_size: int = Field(default=32, ge=1)
    max_length: int = Field(default=128, ge=8)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)


class DistilledSettings(FineTuneSettings):
    layers: tuple[int, ...] = (0, 2, 4)
    temperature: float = Field(default=2.0, gt=0)
    distillation_weight: float = Field(default=0.7, ge=0, le=1)

    @field_validator("layers")
    @classmethod
    def _distinct_layers(cls, layers: tuple[int, ...]) -> tuple[int, ...]:
        if not layers or len(set(layers)) != len(layers) or min(layers) < 0:
            raise ValueError(f"layers must be distinct non-negative indices, got {layers}")
        return layers


class PrunedSettings(FineTuneSettings):
    amount: float = Field(default=0.5, gt=0, lt=1)
    train_examples: int = Field(default=500, ge=1)


class EvaluationSettings(_Settings):
    batch_size: int = Field(default=64, ge=1)
    max_length: int = Field(default=128, ge=8)
    include_int8_dynamic: bool = True


class CandidateSettings(_Settings):
    """One demo candidate: a folder under the model root, maybe transformed at load time."""

    name: str = Field(min_length=1)
    path: str = Field(min_length=1)
    transform: str | None = None


class RunSettings(_Settings):
    """What `python -m demo.run` audits, and the POST /v1/audits body it shares."""

    reference: str = "reference"
    # The reference's recipe retrained with another seed (`twin_seed`), passed to every
    # audit: each check is judged relative to what a retrain alone changes. None: no twin.
    twin: str | None = "twin"
    candidates: tuple[CandidateSettings, ...] = (
        CandidateSettings(name="distilled", path="distilled"),
        CandidateSettings(name="pruned", path="pruned"),
        CandidateSettings(name="int8", path="reference", transform="int8-dynamic"),
    )
    # Validated by the service itself (unknown fields are a 422 there), not duplicated here.
    audit: dict[str, Any] = Field(default_factory=dict)


class DemoSettings(_Settings):
    """Everything `settings.yaml` holds; see that file for what each value means."""

    seed: int = 0
    # The twin is the reference's recipe (data, settings) trained again with this seed.
    twin_seed: int = 1
    torch_threads: int | None = Field(default=2, ge=1)
    data: DataSettings = DataSettings()
    reference: FineTuneSettings = FineTuneSettings()
    distilled: DistilledSettings = DistilledSettings()
    pruned: PrunedSettings = PrunedSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    run: RunSettings = RunSettings()


def load_settings(path: Path | None = None) -> DemoSettings:
    """Read demo settings from YAML (the demo's own `settings.yaml` by default)."""
    path = path or SETTINGS_PATH
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return DemoSettings.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise ConfigError(f"cannot read demo settings {path}: {error}") from error


def default_root() -> Path:
    """`demo-assets/` in the repository root when run from a checkout, else in the cwd."""
    checkout = Path(__file__).resolve().parents[1]
    base = checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()
    return base / "demo-assets"
