"""The audit request the engine runs: checkpoints, dataset, settings, gate thresholds (no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Transform = Literal["int8-dynamic"]
Binning = Literal["equal_width", "equal_mass"]
ExplainMethod = Literal["lime", "shap"]
ShapAlgorithm = Literal["partition", "permutation", "kernel"]
Masking = Literal["remove", "mask_token"]
ExplainTarget = Literal["reference_prediction", "gold", "own_prediction"]
JudgedOn = Literal["value", "interval"]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckpointSpec(_Settings):
    """A Hugging Face sequence-classification folder, optionally transformed at load time."""

    path: str = Field(min_length=1, description="Checkpoint folder (relative to the model root).")
    transform: Transform | None = Field(
        default=None, description="Applied at load time, e.g. dynamic int8 quantization."
    )


class DatasetSpec(_Settings):
    """A JSONL, CSV or TSV file and how its columns map to text, text pair and label."""

    path: str = Field(min_length=1, description="Dataset file (relative to the data root).")
    format: Literal["jsonl", "csv", "tsv"] | None = Field(
        default=None, description="Inferred from the file suffix when omitted."
    )
    text_field: str = "text"
    text_pair_field: str | None = None
    label_field: str = "label"
    limit: int | None = Field(default=None, ge=1, description="Use at most this many rows.")
    sampling: Literal["head", "random"] = Field(
        default="head",
        description="With `limit`: the first rows, or a seeded random sample kept in file order.",
    )


class CalibrationSettings(_Settings):
    n_bins: int = Field(default=15, ge=1, le=1000)
    binning: Binning = "equal_width"
    n_bootstrap: int = Field(default=1000, ge=0, le=100_000)
    confidence_level: float = Field(default=0.95, gt=0, lt=1)


class ExplainSettings(_Settings):
    instances: int = Field(default=20, ge=0, description="Explained instances (seeded sample).")
    methods: tuple[ExplainMethod, ...] = ("lime", "shap")
    lime_samples: int = Field(default=500, ge=10, le=100_000)
    shap_algorithm: ShapAlgorithm = "partition"
    shap_max_evals: int = Field(default=500, ge=10, le=100_000)
    top_k: int = Field(default=10, ge=1, le=1000)
    masking: Masking = "remove"
    target: ExplainTarget = "reference_prediction"
    noise_floor: bool = Field(
        default=True, description="Explain the reference a second time with another seed."
    )


class CheckSetting(_Settings):
    threshold: float
    judged_on: JudgedOn = Field(
        default="value", description="Judge the point value, or the unfavourable interval bound."
    )
    enabled: bool = True


class GateSettings(_Settings):
    """Default "no worse than" margins; a request overrides any of them.

    `*_drop` and `*_increase` checks pass when the value is at most the threshold;
    `agreement` passes when at least the threshold; the alignment checks pass when the
    between-model mean is no more than `threshold` below the reference's own noise floor.
    """

    accuracy_drop: CheckSetting = CheckSetting(threshold=0.01)
    macro_f1_drop: CheckSetting = CheckSetting(threshold=0.02)
    agreement: CheckSetting = CheckSetting(threshold=0.95)
    ece_increase: CheckSetting = CheckSetting(threshold=0.02)
    brier_increase: CheckSetting = CheckSetting(threshold=0.02)
    lime_jaccard_margin: CheckSetting = CheckSetting(threshold=0.15)
    shap_jaccard_margin: CheckSetting = CheckSetting(threshold=0.15)


class AuditConfig(_Settings):
    """Everything one audit needs; the CLI and the service both build one of these."""

    reference: CheckpointSpec
    candidate: CheckpointSpec
    dataset: DatasetSpec
    label_mapping: dict[str, str] | None = Field(
        default=None,
        description="Candidate label name -> reference label name, when the label sets differ.",
    )
    calibration: CalibrationSettings = CalibrationSettings()
    explain: ExplainSettings = ExplainSettings()
    gate: GateSettings = GateSettings()
    seed: int = Field(default=0, ge=0)
    device: str = Field(default="auto", description='"auto", "cpu", "cuda", "cuda:1", ...')
    batch_size: int = Field(default=64, ge=1, le=8192)
    max_length: int = Field(default=256, ge=8, le=4096)
