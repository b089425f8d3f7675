"""The versioned result document: the one JSON shape the CLI writes and the service returns."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# "2": `instances` holds the explained instances only; every row's outcome is in the rows
# file (`trustdiff.rows`) that `rows` describes. "1" documents (every row in `instances`)
# still load and render.
SCHEMA_VERSION: Literal["2"] = "2"

Pillar = Literal["parity", "calibration", "alignment"]
JudgedRelativeTo = Literal["twin", "noise_floor", "absolute"]


class _Doc(BaseModel):
    # Documents are read back by other tools: unknown keys are an error, not silently dropped.
    model_config = ConfigDict(extra="forbid")


# --- manifest -------------------------------------------------------------------------------


class CheckpointManifest(_Doc):
    path: str
    fingerprint: str = Field(
        description="sha256 over config, tokenizer and weight files + transform"
    )
    transform: str | None = None
    model_type: str | None = None
    num_parameters: int | None = None
    dtype: str | None = Field(
        default=None, description="Dtype the model computed in (float32, bfloat16, ...)."
    )
    compiled: bool = Field(
        default=False, description="Its forwards ran through torch.compile (the compile option)."
    )
    labels: list[str] = Field(description="Label names in id order (config.id2label).")


class DatasetManifest(_Doc):
    path: str
    fingerprint: str = Field(description="sha256 of the file bytes")
    format: str
    rows: int = Field(description="Rows audited (after limit and sampling).")
    rows_in_file: int
    text_field: str
    text_pair_field: str | None = None
    label_field: str


class TwinCacheManifest(_Doc):
    """Where the twin's figures came from: computed in this audit, or read from the cache."""

    key: str = Field(
        description="sha256 over the fingerprints of reference, twin and dataset and the "
        "settings the twin's figures depend on."
    )
    hit: bool = Field(description="True when read from the cache: no model call for the twin.")
    location: str | None = Field(default=None, description="The cache folder, when one is used.")


class Manifest(_Doc):
    reference: CheckpointManifest
    candidate: CheckpointManifest
    twin: CheckpointManifest | None = Field(
        default=None,
        description="The reference's recipe retrained with another seed: the model-level floor.",
    )
    twin_cache: TwinCacheManifest | None = None
    dataset: DatasetManifest
    labels: list[str] = Field(description="The audit's label space (the reference's), id order.")
    label_mapping: dict[str, str] | None = None
    config: dict[str, object] = Field(description="The AuditConfig as run, defaults filled in.")
    seed: int
    versions: dict[str, str]
    device: str
    timings: dict[str, float] = Field(description="Seconds per stage.")
    created_at: str = Field(description="ISO 8601, UTC.")


# --- parity ---------------------------------------------------------------------------------


class Interval(_Doc):
    """A point value with its (bootstrap) confidence interval."""

    value: float
    ci_low: float | None = None
    ci_high: float | None = None


class ModelParity(_Doc):
    accuracy: float
    macro_f1: float
    per_class_recall: dict[str, float]


class Parity(_Doc):
    """Reference against candidate; `twin`, when audited, is reference against twin by the
    same code (its `candidate` is the twin)."""

    reference: ModelParity
    candidate: ModelParity
    accuracy_delta: Interval = Field(description="candidate − reference, paired bootstrap CI")
    macro_f1_delta: Interval
    agreement: float
    agreement_interval: Interval | None = Field(
        default=None, description="agreement with its bootstrap CI (same resamples as deltas)"
    )
    fixed: int = Field(description="Reference wrong, candidate right.")
    broken: int = Field(description="Reference right, candidate wrong.")
    negative_flip_rate: Interval | None = Field(
        default=None,
        description="broken / n: reference right → candidate wrong, over all rows; bootstrap CI",
    )
    positive_flip_rate: Interval | None = Field(
        default=None,
        description="fixed / n: reference wrong → candidate right, over all rows; bootstrap CI",
    )
    mcnemar_p: float
    kappa: float
    probability_loyalty: float
    disagreement_matrix: list[list[int]] = Field(
        description="K×K counts; row = reference prediction, column = candidate prediction."
    )
    twin: Parity | None = Field(default=None, description="Reference against the twin.")


# --- calibration ----------------------------------------------------------------------------


class ReliabilityBin(_Doc):
    lower: float
    upper: float
    count: int
    mean_confidence: float | None = Field(description="None when the bin is empty.")
    accuracy: float | None = Field(description="None when the bin is empty.")


class BinnedCalibration(_Doc):
    binning: Literal["equal_width", "equal_mass"]
    n_bins: int
    ece: float
    mce: float
    bins: list[ReliabilityBin]


class ModelCalibration(_Doc):
    ece: float = Field(description="Under the configured binning.")
    mce: float
    classwise_ece: float
    brier: float
    nll: float
    bins: list[ReliabilityBin] = Field(description="Reliability diagram, configured binning.")
    reliability: list[BinnedCalibration] = Field(description="Both binnings, for the report.")


class SmoothReliabilityCurve(_Doc):
    confidence: list[float] = Field(description="Equally spaced points in [0, 1].")
    accuracy: list[float] = Field(
        description="Kernel-smoothed accuracy at each confidence; where the density is under "
        "1e-9 of its peak, the confidence plus the nearest resolved point's residual."
    )
    density: list[float] = Field(description="Kernel density of the confidences there.")


class ModelSmoothCalibration(_Doc):
    smooth_ece: float = Field(description="SmoothECE (Błasiok & Nakkiran 2023), top label.")
    bandwidth: float = Field(description="The kernel width σ* with smECE_σ* = σ*.")
    curve: SmoothReliabilityCurve


class SmoothCalibration(_Doc):
    reference: ModelSmoothCalibration
    candidate: ModelSmoothCalibration
    delta: Interval = Field(description="candidate − reference SmoothECE, paired bootstrap CI")


class Calibration(_Doc):
    binning: Literal["equal_width", "equal_mass"]
    n_bins: int
    reference: ModelCalibration
    candidate: ModelCalibration
    delta: dict[str, Interval] = Field(
        description="candidate − reference for ece, mce, classwise_ece, brier, nll; paired CI."
    )
    smooth: SmoothCalibration | None = Field(
        default=None, description="Binning-free calibration error and reliability curves."
    )
    twin: Calibration | None = Field(
        default=None, description="Reference against the twin (`candidate` is the twin)."
    )


# --- alignment ------------------------------------------------------------------------------


class Histogram(_Doc):
    edges: list[float]
    counts: list[int]


class MetricSummary(_Doc):
    mean: float | None
    median: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    histogram: Histogram


class AlignmentMetrics(_Doc):
    jaccard_at_k: MetricSummary
    feature_agreement: MetricSummary
    rank_agreement: MetricSummary
    sign_agreement: MetricSummary
    signed_rank_agreement: MetricSummary
    rank_correlation: MetricSummary
    pairwise_rank_agreement: MetricSummary
    cosine_similarity: MetricSummary


class ModelFaithfulness(_Doc):
    """One model's explanations judged against that model (ERASER AOPC, k = 1…top_k)."""

    comprehensiveness: MetricSummary = Field(
        description="Mean over instances of p(x) − p(x without its top-j words), averaged over j."
    )
    sufficiency: MetricSummary = Field(
        description="Mean over instances of p(x) − p(only its top-j words), averaged over j."
    )


class Faithfulness(_Doc):
    top_k: int
    n_instances: int
    reference: ModelFaithfulness
    candidate: ModelFaithfulness
    comprehensiveness_delta: Interval = Field(
        description="candidate − reference mean comprehensiveness, paired bootstrap CI"
    )
    sufficiency_delta: Interval = Field(
        description="candidate − reference mean sufficiency, paired bootstrap CI"
    )


class NoiseFloor(_Doc):
    """The reference against its own re-run with another seed: metric(re-run, first run).

    A deterministic explainer (the re-run equals the first run) has no floor to measure:
    `deterministic` is true and the metrics are absent, never 1.0 as if measured.
    """

    deterministic: bool = False
    jaccard_at_k: MetricSummary | None = None
    feature_agreement: MetricSummary | None = None
    rank_agreement: MetricSummary | None = None
    sign_agreement: MetricSummary | None = None
    signed_rank_agreement: MetricSummary | None = None
    rank_correlation: MetricSummary | None = None
    pairwise_rank_agreement: MetricSummary | None = None
    cosine_similarity: MetricSummary | None = None


# What the judged alignment figures compare: the reference's re-run (seed B) with the
# candidate (seed A), like for like with the floor; both models' first runs on shared
# perturbations; or, for a method whose perturbations follow the explained outputs (Partition
# SHAP), each model's first run of its own.
Judged = Literal["rerun_vs_first_run", "shared_perturbations", "separate_runs"]


class TwinAlignment(AlignmentMetrics):
    """Reference against the twin, built exactly as the candidate's figures are."""

    judged: Judged = "shared_perturbations"
    shared_perturbations: AlignmentMetrics | None = None


class MethodAlignment(AlignmentMetrics):
    """Between reference and candidate, like for like with `noise_floor`.

    With a measured floor the metrics are metric(reference re-run, candidate): the re-run
    (seed B) carries the same sampling noise as the floor metric(re-run, reference), while
    candidate and reference share the first run's perturbations (seed A); `judged` says so.
    `shared_perturbations` is metric(reference, candidate) of their first runs, a diagnostic
    (on shared perturbations, except for a method whose perturbations follow the explained
    outputs: each model then has a run of its own). `twin` is the same construction for the
    twin.
    """

    top_k: int
    n_instances: int
    settings: dict[str, object]
    faithfulness: Faithfulness | None = None
    noise_floor: NoiseFloor | None = None
    judged: Judged = "shared_perturbations"
    shared_perturbations: AlignmentMetrics | None = None
    twin: TwinAlignment | None = None
    eligible_instances: int | None = Field(
        default=None, description="Rows with more than top_k words, which could be explained."
    )
    requested_instances: int | None = None


# --- gate -----------------------------------------------------------------------------------


class GateCheck(_Doc):
    name: str
    pillar: Pillar
    value: float | None
    threshold: float
    comparison: Literal["<=", ">="] = Field(description="value must be <= / >= threshold")
    ci_low: float | None = None
    ci_high: float | None = None
    judged_on: Literal["value", "interval"]
    passed: bool
    description: str = ""
    judged_relative_to: JudgedRelativeTo = Field(
        default="absolute",
        description="twin: threshold = the twin's figure ± margin; noise_floor: the reference's "
        "noise floor − margin; absolute: the configured threshold as given.",
    )
    twin_value: float | None = Field(default=None, description="The twin's figure, when judged.")
    margin: float | None = Field(
        default=None, description="Allowed beyond the twin or the floor (relative rules)."
    )


class Gate(_Doc):
    passed: bool
    checks: list[GateCheck]
    twin_identical: bool | None = Field(
        default=None,
        description="None without a twin; true when the twin shows no difference from the "
        "reference on any pillar, so the relative rules allow nothing beyond the margins.",
    )


# --- instances ------------------------------------------------------------------------------


class Attributions(_Doc):
    reference: list[float]
    candidate: list[float]
    reference_rerun: list[float] | None = Field(
        default=None, description="The reference explained again with another seed."
    )
    twin: list[float] | None = Field(default=None, description="The twin, first run's seed.")


class Explanation(_Doc):
    words: list[str]
    segments: list[int] = Field(description="Segment of each word: 0 text, 1 text pair.")
    target: str = Field(description="The explained class's label name.")
    lime: Attributions | None = None
    shap: Attributions | None = None
    alignment: dict[str, dict[str, float | None]] = Field(
        default_factory=dict, description="method -> metric -> between-model value."
    )
    faithfulness: dict[str, dict[str, dict[str, float]]] = Field(
        default_factory=dict,
        description="method -> model (reference, candidate) -> comprehensiveness, sufficiency.",
    )


class Instance(_Doc):
    index: int = Field(description="0-based row index in the audited dataset.")
    text: str
    text_pair: str | None = None
    label: str
    reference_proba: list[float]
    candidate_proba: list[float]
    reference_prediction: str
    candidate_prediction: str
    twin_proba: list[float] | None = None
    twin_prediction: str | None = None
    explanations: Explanation | None = None


# --- beyond the averages ---------------------------------------------------------------------


class SliceResult(_Doc):
    """Both models on the rows of one slice; deltas are candidate − reference, paired CI."""

    column: str = Field(description='A dataset column, "gold label" or "length".')
    value: str
    n: int
    judged: bool = Field(description="At least min_slice_size rows: held against the candidate.")
    reference_accuracy: float
    candidate_accuracy: float
    accuracy_delta: Interval
    agreement: Interval
    negative_flip_rate: Interval
    reference_ece: float
    candidate_ece: float
    ece_delta: Interval
    failing: list[str] = Field(
        default_factory=list,
        description="Slice checks whose threshold this judged slice misses (enabled or not).",
    )


class Slices(_Doc):
    columns: list[str] = Field(description="Sliced dataset columns, then the built-in slices.")
    min_slice_size: int
    slices: list[SliceResult] = Field(description="Sorted by agreement, lowest first.")


class DistanceSummary(_Doc):
    mean: float
    median: float
    p90: float
    p99: float
    max: float
    histogram: Histogram


class DivergentRow(_Doc):
    index: int = Field(description="0-based row index in the audited dataset.")
    text: str
    text_pair: str | None = None
    label: str
    reference_proba: list[float]
    candidate_proba: list[float]
    kl: float
    js_distance: float


class Divergence(_Doc):
    """Per-row distances between the two models' probability vectors: the tail a mean hides."""

    kl: DistanceSummary = Field(description="KL(reference ‖ candidate) per row, nats.")
    js_distance: DistanceSummary = Field(
        description="Jensen–Shannon distance per row (base 2, in [0, 1])."
    )
    most_divergent: list[DivergentRow] = Field(description="The rows with the largest KL.")


class ExemplarRow(_Doc):
    index: int = Field(description="0-based row index in the audited dataset.")
    text: str
    text_pair: str | None = None
    label: str
    reference_proba: list[float]
    candidate_proba: list[float]
    shift: float = Field(description="Total variation distance between the two vectors.")


class ExemplarGroup(_Doc):
    reference_prediction: str
    candidate_prediction: str
    count: int = Field(description="Rows with this pair of predictions.")
    rows: list[ExemplarRow] = Field(description="The largest probability shifts first.")


class Exemplars(_Doc):
    per_group: int
    groups: list[ExemplarGroup] = Field(description="Largest group first.")


class RowsSummary(_Doc):
    """The per-row outcomes of the audit, kept out of the document in a Parquet rows file."""

    count: int = Field(description="Rows audited: one outcome each in the rows file.")
    flipped: int = Field(description="Rows whose predicted class differs between the models.")
    text: bool = Field(default=False, description="Whether the rows file holds the texts.")
    sha256: str | None = Field(
        default=None, description="sha256 of the rows file written with this document."
    )
    size_bytes: int | None = None


# --- the document ---------------------------------------------------------------------------


class AuditResult(_Doc):
    schema_version: Literal["1", "2"] = SCHEMA_VERSION
    manifest: Manifest
    parity: Parity
    calibration: Calibration
    alignment: dict[str, MethodAlignment] = Field(
        default_factory=dict, description='Keyed by method: "lime", "shap".'
    )
    gate: Gate
    slices: Slices | None = None
    divergence: Divergence | None = None
    exemplars: Exemplars | None = Field(
        default=None, description="Rows the models disagree on, for a person to read."
    )
    rows: RowsSummary | None = Field(
        default=None, description="Where every row's outcome went (absent in version 1)."
    )
    instances: list[Instance] = Field(
        description="The explained instances (version 1 documents: every audited row)."
    )

    def _repr_html_(self) -> str | None:
        """The HTML report, so Jupyter shows a result inline (None: plain repr instead).

        The renderer is found through the `trustdiff.renderers` entry point named
        `text/html` rather than imported: the report reads this document's types, so the
        arrow points from the report to the result and never back.
        """
        renderer = html_renderer()
        return None if renderer is None else renderer(self)


RENDERERS_ENTRY_POINT_GROUP = "trustdiff.renderers"


def html_renderer() -> Callable[[AuditResult], str] | None:
    """The installed `text/html` renderer of result documents, or None when there is none."""
    for entry_point in entry_points(group=RENDERERS_ENTRY_POINT_GROUP, name="text/html"):
        renderer: Callable[[AuditResult], str] = entry_point.load()
        return renderer
    return None


def result_json_schema() -> dict[str, object]:
    """The JSON Schema of the result document, for consumers that validate it."""
    return AuditResult.model_json_schema()


def dump_result(result: AuditResult) -> str:
    return json.dumps(result.model_dump(mode="json"), indent=2, allow_nan=False)
