"""The audit request the engine runs: checkpoints, dataset, settings, gate thresholds (no torch).

Every option is defined here once. The command line derives its flags' types and choices
from these models, and the HTTP API's request body (`service.schemas.AuditCreate`) is the
same `AuditOptions` with the dataset named differently.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from trustdiff.metrics.calibration import Binning

Transform = Literal["int8-dynamic", "int8-weight", "float16", "bfloat16"]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
DatasetFormat = Literal["jsonl", "csv", "tsv"]
ExplainMethod = Literal["lime", "shap"]
ShapAlgorithm = Literal["partition", "permutation", "kernel"]
Masking = Literal["remove", "mask_token"]
ExplainTarget = Literal["reference_prediction", "gold", "own_prediction"]
JudgedOn = Literal["value", "interval"]
Sampling = Literal["head", "random"]

__all__ = [
    "AuditConfig",
    "AuditOptions",
    "Binning",
    "CalibrationSettings",
    "CheckSetting",
    "CheckpointSpec",
    "DatasetFormat",
    "DatasetSpec",
    "ExplainMethod",
    "ExplainSettings",
    "ExplainTarget",
    "GateSettings",
    "JudgedOn",
    "Masking",
    "RowLimit",
    "Sampling",
    "ShapAlgorithm",
    "SliceSettings",
    "Transform",
]


def _path_text(value: Any) -> Any:
    """`os.PathLike` paths (a `pathlib.Path`) become their string; anything else is validated
    as given, so a number or None still fails as "not a string"."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _named_path(value: str) -> str:
    # "   " would resolve to the root folder itself; a NUL byte cannot name any file.
    if not value.strip():
        raise ValueError("the path is blank")
    if "\x00" in value:
        raise ValueError("the path contains a NUL character")
    return value


def _field_name(value: str) -> str:
    if "\x00" in value:
        raise ValueError("the field name contains a NUL character")
    return value


# A column or JSON key of a dataset; datasets with NUL in their names are refused on read.
FieldName = Annotated[str, AfterValidator(_field_name)]
# A file or folder path as the user names it: `str` or any `os.PathLike`, stored as `str`.
PathText = Annotated[
    str, Field(min_length=1), BeforeValidator(_path_text), AfterValidator(_named_path)
]
RowLimit = Annotated[int | None, Field(ge=1, description="Use at most this many rows.")]
RowSampling = Annotated[
    Sampling,
    Field(
        description="With `limit`: the first rows, or a seeded random sample kept in file order."
    ),
]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckpointSpec(_Settings):
    """A Hugging Face sequence-classification folder, optionally transformed at load time."""

    path: PathText = Field(description="Checkpoint folder (relative to the model root).")
    transform: Transform | None = Field(
        default=None,
        description="Applied at load time: int8-dynamic (CPU only), int8-weight, float16 or "
        "bfloat16.",
    )


class DatasetSpec(_Settings):
    """A JSONL, CSV or TSV file and how its columns map to text, text pair and label."""

    path: PathText = Field(description="Dataset file (relative to the data root).")
    format: DatasetFormat | None = Field(
        default=None, description="Inferred from the file suffix when omitted."
    )
    text_field: FieldName = "text"
    text_pair_field: FieldName | None = None
    label_field: FieldName = "label"
    limit: RowLimit = None
    sampling: RowSampling = "head"


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
    faithfulness: bool = Field(
        default=True,
        description="Measure comprehensiveness and sufficiency of each model's explanations "
        "(2·top_k extra inputs per model, instance and method).",
    )


class SliceSettings(_Settings):
    """Where to look beyond dataset-wide means: per-slice metrics on dataset columns.

    The gold label and text-length quartiles are always sliced; `columns` adds categorical
    dataset columns (e.g. `source`, `language`). Slices under `min_slice_size` rows are
    listed but never judged.
    """

    columns: tuple[str, ...] = Field(
        default=(), description="Dataset columns to slice by, besides gold label and length."
    )
    min_slice_size: int = Field(
        default=50, ge=1, description="Smaller slices are reported but not judged."
    )


class CheckSetting(_Settings):
    threshold: float
    judged_on: JudgedOn = Field(
        default="value", description="Judge the point value, or the unfavourable interval bound."
    )
    enabled: bool = True


class GateSettings(_Settings):
    """Default "no worse than" margins; a request overrides any of them.

    `*_drop`, `*_increase`, `negative_flip_rate` and `kl_p99` checks pass when the value is at
    most the threshold; `agreement` and `worst_slice_agreement` when it is at least the
    threshold; the jaccard margins when the between-model mean is no more than `threshold`
    below the reference's own noise floor.
    With a twin and `relative_to_twin`, each threshold becomes a margin beyond the twin's
    own figure (agreement's margin is `1 − threshold`); see `trustdiff.gate.CheckSpec`.
    """

    # One field per check of `trustdiff.gate.CHECKS`, which says how each is measured.

    accuracy_drop: CheckSetting = CheckSetting(threshold=0.01)
    macro_f1_drop: CheckSetting = CheckSetting(threshold=0.02)
    agreement: CheckSetting = CheckSetting(threshold=0.95)
    ece_increase: CheckSetting = CheckSetting(threshold=0.02)
    brier_increase: CheckSetting = CheckSetting(threshold=0.02)
    negative_flip_rate: CheckSetting = CheckSetting(threshold=0.05)
    # Available, off by default: the slices, the KL tail, and explanation faithfulness below.
    worst_slice_accuracy_drop: CheckSetting = CheckSetting(threshold=0.05, enabled=False)
    worst_slice_agreement: CheckSetting = CheckSetting(threshold=0.90, enabled=False)
    kl_p99: CheckSetting = CheckSetting(threshold=0.25, enabled=False)
    lime_jaccard_margin: CheckSetting = CheckSetting(threshold=0.15)
    shap_jaccard_margin: CheckSetting = CheckSetting(threshold=0.15)
    lime_comprehensiveness_drop: CheckSetting = CheckSetting(threshold=0.05, enabled=False)
    shap_comprehensiveness_drop: CheckSetting = CheckSetting(threshold=0.05, enabled=False)
    alignment_minimum: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="The mean jaccard@k an alignment check must reach, absolutely, when its "
        "method has no noise floor (deterministic, or the floor switched off) and no twin.",
    )
    relative_to_twin: bool = Field(
        default=True,
        description="With a twin, judge every check relative to it: the candidate may differ "
        "from the reference by what the twin differs, plus the check's margin.",
    )


DatasetT = TypeVar("DatasetT")


class AuditOptions(_Settings, Generic[DatasetT]):
    """What an audit compares and how: the fields the engine's `AuditConfig` and the HTTP
    API's request share. `DatasetT` is how the dataset is named (a file here; the API also
    accepts an upload's id).
    """

    reference: CheckpointSpec
    candidate: CheckpointSpec
    dataset: DatasetT
    twin: CheckpointSpec | None = Field(
        default=None,
        description="The reference's recipe retrained with another seed: audited against the "
        "reference by the same code, it is what a retrain alone changes, and the gate judges "
        "the candidate relative to it.",
    )
    label_mapping: dict[str, str] | None = Field(
        default=None,
        description="Candidate label name -> reference label name, when the label sets differ.",
    )
    calibration: CalibrationSettings = CalibrationSettings()
    explain: ExplainSettings = ExplainSettings()
    slices: SliceSettings = SliceSettings()
    gate: GateSettings = GateSettings()
    seed: int = Field(default=0, ge=0)
    dtype: Dtype = Field(
        default="auto",
        description="Compute dtype of the models: auto is bfloat16 on CUDA, float32 on CPU.",
    )
    compile: bool = Field(
        default=False,
        description="torch.compile (TorchInductor) the models before their first forward: "
        "fused kernels, meant for GPUs, after a compile of tens of seconds per model; results "
        "move at float rounding. int8-dynamic runners are never compiled.",
    )
    batch_size: int = Field(default=64, ge=1, le=8192)
    max_length: int = Field(default=256, ge=8, le=4096)


class AuditConfig(AuditOptions[DatasetSpec]):
    """Everything one audit needs; the CLI, the Python API and the service all build one.

    >>> AuditConfig(reference=CheckpointSpec(path="models/bert"),
    ...             candidate=CheckpointSpec(path="models/bert", transform="int8-dynamic"),
    ...             dataset=DatasetSpec(path="data/dev.jsonl")).device
    'auto'
    """

    device: str = Field(default="auto", description='"auto", "cpu", "cuda", "cuda:1", ...')
