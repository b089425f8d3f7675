"""What each section of the page shows, computed from a result; the templates lay it out.

Views hold values and plain text, never HTML: the templates escape everything they print,
and the only markup a view carries is SVG from `trustdiff.report.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup

from trustdiff.formatting import PAGE
from trustdiff.report import plots
from trustdiff.result import (
    Attributions,
    AuditResult,
    Calibration,
    Explanation,
    GateCheck,
    Instance,
    Interval,
    MethodAlignment,
    MetricSummary,
    Parity,
)

MISSING = PAGE.missing
INSTANCES_SHOWN = 5
PILLARS = ("parity", "calibration", "alignment")
METHOD_NAMES = {"lime": "LIME", "shap": "SHAP"}
CALIBRATION_METRICS = (
    ("ece", "ECE"),
    ("mce", "MCE"),
    ("classwise_ece", "Classwise ECE"),
    ("brier", "Brier score"),
    ("nll", "NLL"),
)
# In the order the alignment table lists them; "{k}" is the method's top-k.
ALIGNMENT_METRICS = {
    "jaccard_at_k": "Jaccard@{k}",
    "feature_agreement": "Feature agreement",
    "rank_agreement": "Rank agreement",
    "sign_agreement": "Sign agreement",
    "signed_rank_agreement": "Signed rank agreement",
    "rank_correlation": "Rank correlation",
    "pairwise_rank_agreement": "Pairwise rank agreement",
    "cosine_similarity": "Cosine similarity",
}
BINNING_NAMES = {"equal_width": "equal-width bins", "equal_mass": "equal-mass bins"}
# Word shading uses a purple/orange diverging scale: it cannot be read as model, pass or fail.
SUPPORTS_RGB = (94, 60, 153)
OPPOSES_RGB = (230, 97, 1)


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def binning_name(binning: str) -> str:
    return BINNING_NAMES.get(binning, binning)


def ci_label(result: AuditResult) -> str:
    """ "95% CI" from the configured confidence level, plain "CI" when it is not known."""
    calibration = result.manifest.config.get("calibration")
    level = calibration.get("confidence_level") if isinstance(calibration, Mapping) else None
    if isinstance(level, int | float) and 0 < level < 1:
        return f"{level * 100:g}% CI"
    return "CI"


# --- verdict --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckView:
    check: GateCheck
    state: str  # "pass" or "fail", also the row's CSS class
    symbol: str  # "≤" or "≥"
    judged: str  # "value", "upper bound" or "lower bound"
    judged_bound: float | None  # the number the check was decided on
    strip: Markup | None


@dataclass(frozen=True)
class PillarView:
    name: str
    state: str  # "pass", "fail" or "none"
    text: str
    checks: int


def rule_text(check: GateCheck) -> str:
    """What the threshold is relative to, in words: the twin's figure and the margin, the
    reference's noise floor, or an absolute number."""
    if check.judged_relative_to == "twin":
        if check.twin_value is None:
            return "relative to the twin (its figure is missing)"
        sign = "+" if check.comparison == "<=" else "−"
        twin = abs(check.twin_value) if check.comparison == "<=" else check.twin_value
        return f"relative to the twin: {twin:.4f} {sign} margin {check.margin:g}"
    if check.judged_relative_to == "noise_floor":
        return f"relative to the noise floor, margin {check.margin:g}"
    return "absolute threshold"


def check_view(check: GateCheck) -> CheckView:
    upper = check.comparison == "<="
    if check.judged_on == "value":
        judged, bound = "value", check.value
    else:
        judged, bound = ("upper bound", check.ci_high) if upper else ("lower bound", check.ci_low)
    return CheckView(
        check=check,
        state="pass" if check.passed else "fail",
        symbol="≤" if upper else "≥",
        judged=judged,
        judged_bound=bound,
        strip=plots.check_strip(check),
    )


def check_views(checks: Sequence[GateCheck]) -> list[CheckView]:
    return [check_view(check) for check in checks]


def pillar_views(checks: Sequence[GateCheck]) -> list[PillarView]:
    views = []
    for pillar in PILLARS:
        in_pillar = [check for check in checks if check.pillar == pillar]
        failed = sum(not check.passed for check in in_pillar)
        if not in_pillar:
            state, text = "none", "no checks"
        else:
            state, text = ("fail", f"{failed} failed") if failed else ("pass", "passed")
        views.append(PillarView(pillar.title(), state, text, len(in_pillar)))
    return views


# --- parity ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricRow:
    """One metric for both models and the candidate's difference, with its interval."""

    name: str
    reference: float | None
    candidate: float | None
    delta: float | None
    ci_low: float | None = None
    ci_high: float | None = None


def _delta_row(
    name: str, reference: float | None, candidate: float | None, delta: Interval | None
) -> MetricRow:
    if delta is None:
        return MetricRow(name, reference, candidate, None)
    return MetricRow(name, reference, candidate, delta.value, delta.ci_low, delta.ci_high)


def parity_rows(result: AuditResult) -> list[MetricRow]:
    return parity_rows_of(result.parity)


def parity_rows_of(parity: Parity) -> list[MetricRow]:
    """Accuracy and macro-F1 of a parity section (the candidate's, or the twin's)."""
    return [
        _delta_row(
            "Accuracy", parity.reference.accuracy, parity.candidate.accuracy, parity.accuracy_delta
        ),
        _delta_row(
            "Macro-F1", parity.reference.macro_f1, parity.candidate.macro_f1, parity.macro_f1_delta
        ),
    ]


def recall_rows(result: AuditResult) -> list[MetricRow]:
    rows = []
    for label in result.manifest.labels:
        reference = result.parity.reference.per_class_recall.get(label)
        candidate = result.parity.candidate.per_class_recall.get(label)
        delta = candidate - reference if reference is not None and candidate is not None else None
        rows.append(MetricRow(label, reference, candidate, delta))
    return rows


def flip_share(count: int, fixed: int, broken: int) -> float:
    """A flip count as a percentage of all flips, for the bar under it."""
    return 100 * count / max(fixed + broken, 1)


@dataclass(frozen=True)
class MatrixView:
    names: list[str]
    # Per row: the row's name and its cells as (count, tint); tint None marks the diagonal.
    rows: list[tuple[str, list[tuple[int, float | None]]]]


def disagreement_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> MatrixView:
    size = len(matrix)
    names = list(labels) if len(labels) == size else [str(i) for i in range(size)]
    off_diagonal = [count for i, row in enumerate(matrix) for j, count in enumerate(row) if i != j]
    largest = max(off_diagonal, default=0) or 1
    rows = []
    for i, row in enumerate(matrix):
        # Flip cells are tinted by their share of the largest flip count.
        cells = [
            (count, None if i == j else (0.08 + 0.5 * count / largest if count else 0.0))
            for j, count in enumerate(row)
        ]
        rows.append((names[i], cells))
    return MatrixView(names, rows)


# --- calibration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReliabilityFigure:
    plot: Markup
    n_bins: int
    binning: str
    zoom: str  # where the axes start, when they do not start at 0


def calibration_rows(result: AuditResult) -> list[MetricRow]:
    return calibration_rows_of(result.calibration)


def calibration_rows_of(calibration: Calibration) -> list[MetricRow]:
    """Every calibration metric of a section (the candidate's, or the twin's) and its Δ."""
    rows = [
        _delta_row(
            name,
            getattr(calibration.reference, key, None),
            getattr(calibration.candidate, key, None),
            calibration.delta.get(key),
        )
        for key, name in CALIBRATION_METRICS
    ]
    if calibration.smooth is not None:
        smooth = calibration.smooth
        rows.append(
            _delta_row(
                "SmoothECE",
                smooth.reference.smooth_ece,
                smooth.candidate.smooth_ece,
                smooth.delta,
            )
        )
    return rows


def reliability_figures(result: AuditResult) -> list[ReliabilityFigure]:
    """One diagram per binning both models were binned by, reference's order."""
    reference = result.calibration.reference.reliability
    candidate_by_binning = {b.binning: b for b in result.calibration.candidate.reliability}
    figures = []
    for reference_binned in reference:
        candidate_binned = candidate_by_binning.get(reference_binned.binning)
        if candidate_binned is None:
            continue
        x_domain, y_domain = plots.reliability_domains(
            [*reference_binned.bins, *candidate_binned.bins]
        )
        zoom = (
            f" Axes start at confidence {x_domain[0]:g} and accuracy {y_domain[0]:g}, where "
            "the populated bins are."
            if x_domain[0] > 0 or y_domain[0] > 0
            else ""
        )
        plot = plots.reliability_plot(reference_binned, candidate_binned, x_domain, y_domain)
        figures.append(
            ReliabilityFigure(
                plot, reference_binned.n_bins, binning_name(reference_binned.binning), zoom
            )
        )
    return figures


# --- alignment ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlignmentRow:
    name: str
    between: MetricSummary
    floor_mean: float | None
    gap: float | None  # between-model mean minus the floor's
    twin_mean: float | None = None
    shared_mean: float | None = None  # the shared-perturbation diagnostic


@dataclass(frozen=True)
class MethodView:
    name: str
    aligned: MethodAlignment
    settings: str
    rows: list[AlignmentRow]
    histogram: Markup
    notes: list[str]
    has_twin: bool
    has_shared: bool


def _summary(metrics: object | None, field: str) -> MetricSummary | None:
    value = getattr(metrics, field, None) if metrics is not None else None
    return value if isinstance(value, MetricSummary) else None


def _mean(metrics: object | None, field: str) -> float | None:
    summary = _summary(metrics, field)
    return None if summary is None else summary.mean


def method_notes(method: str, aligned: MethodAlignment) -> list[str]:
    """Plain sentences on how the figures were built: which rows were explained, what is
    judged, and whether the method has a noise floor at all."""
    name = method_name(method)
    notes = []
    k = aligned.top_k
    if aligned.eligible_instances is not None:
        sentence = (
            f"{aligned.n_instances} instances explained, drawn by the seed among the "
            f"{aligned.eligible_instances} rows with more than {k} words (shorter rows would "
            f"agree on their top-{k} words for any two models, so they are never explained)."
        )
        requested = aligned.requested_instances
        if requested is not None and aligned.eligible_instances < requested:
            sentence += f" Fewer rows were eligible than the {requested} requested."
        notes.append(sentence)
    floor = aligned.noise_floor
    if floor is not None and floor.deterministic:
        notes.append(
            f"{name} is deterministic under these settings: its re-run with another seed "
            "equals its first run, so it has no noise floor to measure. Without a twin its "
            "check uses an explicit absolute minimum (see the verdict)."
        )
    elif floor is None:
        notes.append("No noise floor was computed.")
    if aligned.judged == "rerun_vs_first_run":
        notes.append(
            "Like for like with the floor: the figures compare the reference's re-run (seed B) "
            "with the candidate (seed A), as the floor compares that re-run with the "
            "reference (seed A). On the shared perturbations of seed A the models agree as in "
            "the last column, a diagnostic only."
        )
    if aligned.judged == "separate_runs":
        notes.append(
            f"{name} chooses which coalitions to evaluate by how the explained output changes, "
            "so each model is explained in a run of its own, as it would be alone; the "
            "figures compare those explanations."
        )
    if aligned.twin is not None:
        notes.append(
            "The twin (the reference retrained with another seed) is explained and compared "
            "with the reference exactly as the candidate is: its column is what a retrain "
            "alone changes."
        )
    return notes


def method_view(method: str, aligned: MethodAlignment) -> MethodView:
    floor = aligned.noise_floor
    rows = []
    for field, title in ALIGNMENT_METRICS.items():
        between = _summary(aligned, field)
        if between is None:
            continue
        floor_mean = _mean(floor, field)
        gap = (
            between.mean - floor_mean
            if between.mean is not None and floor_mean is not None
            else None
        )
        rows.append(
            AlignmentRow(
                title.format(k=aligned.top_k),
                between,
                floor_mean,
                gap,
                twin_mean=_mean(aligned.twin, field),
                shared_mean=_mean(aligned.shared_perturbations, field),
            )
        )
    settings = ", ".join(
        f"{key} {setting_text(value)}"
        for key, value in aligned.settings.items()
        if key not in ("method", "top_k")  # already in the heading and the note
    )
    name = method_name(method)
    histogram = plots.alignment_histogram(
        name, aligned.top_k, aligned.jaccard_at_k, _summary(floor, "jaccard_at_k")
    )
    return MethodView(
        name,
        aligned,
        settings,
        rows,
        histogram,
        notes=method_notes(method, aligned),
        has_twin=aligned.twin is not None,
        has_shared=aligned.shared_perturbations is not None,
    )


def setting_text(value: object) -> str:
    """A setting as the JSON document spells it: true/false, lists comma-separated."""
    if isinstance(value, list | tuple):
        return ", ".join(setting_text(item) for item in value)
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- instances ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WordView:
    text: str
    value: float | None
    style: str | None  # inline background and text colour; None: shown unshaded
    top: bool = False  # in the model's top-k


# A line of words: its label ("text", "pair"; None for a single text) and its words.
WordLine = tuple[str | None, list[WordView]]


@dataclass(frozen=True)
class AttributionView:
    method: str
    # Per model: its name ("Reference"/"Candidate"), CSS class and lines of shaded words.
    rows: list[tuple[str, str, list[WordLine]]]


def instance_jaccard(instance: Instance) -> float | None:
    """Mean between-model jaccard@k over the methods that explained this instance."""
    if instance.explanations is None:
        return None
    values = [
        value
        for per_method in instance.explanations.alignment.values()
        if (value := per_method.get("jaccard_at_k")) is not None and math.isfinite(value)
    ]
    return sum(values) / len(values) if values else None


def instances_shown(result: AuditResult) -> tuple[list[Instance], int]:
    """The explained instances with the lowest between-model Jaccard, and how many there are."""
    explained = [i for i in result.instances if i.explanations is not None]
    ranked = sorted(
        explained,
        key=lambda i: (j if (j := instance_jaccard(i)) is not None else math.inf, i.index),
    )
    return ranked[:INSTANCES_SHOWN], len(explained)


def top_k_by_method(result: AuditResult) -> dict[str, int]:
    return {method: aligned.top_k for method, aligned in result.alignment.items()}


def probability(proba: Sequence[float], labels: Sequence[str], predicted: str) -> str:
    """ "(0.93)": the probability of the predicted label, empty when it cannot be found."""
    if predicted in labels and labels.index(predicted) < len(proba):
        return f"({proba[labels.index(predicted)]:.2f})"
    return ""


def attribution_views(explanation: Explanation, top_k: Mapping[str, int]) -> list[AttributionView]:
    """Per method that explained the instance: both models' words, shaded by attribution."""
    views = []
    for method in ("lime", "shap"):
        attributions: Attributions | None = getattr(explanation, method, None)
        if attributions is None:
            continue
        k = top_k.get(method, 10)
        rows = []
        models = [
            ("Reference", attributions.reference, "ref"),
            ("Candidate", attributions.candidate, "cand"),
        ]
        if attributions.twin is not None:
            models.append(("Twin", attributions.twin, "twin"))
        for model, values, css in models:
            words = _word_views(explanation.words, values, k)
            rows.append((model, css, _segments(explanation, words)))
        views.append(AttributionView(method_name(method), rows))
    return views


def _word_views(words: Sequence[str], values: Sequence[float], top_k: int) -> list[WordView]:
    """Words shaded by their attribution, normalised by the row's largest |value|."""
    if len(values) != len(words):
        # A malformed vector must not shift colours onto the wrong words: show text only.
        return [WordView(word, None, None) for word in words]
    largest = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    k = min(top_k, len(values))
    top = set(sorted(range(len(values)), key=lambda i: (-abs(values[i]), i))[:k])
    views = []
    for position, (word, value) in enumerate(zip(words, values, strict=True)):
        weight = value / largest if largest > 0 and math.isfinite(value) else 0.0
        # When every word is in the top-k, underlining all of them would say nothing.
        is_top = position in top and largest > 0 and k < len(values)
        views.append(WordView(word, value, shade_style(weight), is_top))
    return views


def _segments(explanation: Explanation, words: list[WordView]) -> list[WordLine]:
    """Words of a sentence pair on two labelled lines; a single text on one line."""
    segments = explanation.segments
    if len(segments) != len(words) or not any(segment == 1 for segment in segments):
        return [(None, words)]
    return [
        (label, [word for word, s in zip(words, segments, strict=True) if s == segment])
        for segment, label in ((0, "text"), (1, "pair"))
    ]


def shade_style(weight: float) -> str:
    """Background for a word: purple supports, orange opposes, opacity ∝ |weight| in [0, 1]."""
    red, green, blue = SUPPORTS_RGB if weight >= 0 else OPPOSES_RGB
    alpha = 0.85 * min(abs(weight), 1.0)
    # Dark shading gets white text so strongly attributed words stay legible.
    colour = "#ffffff" if alpha > 0.5 else "#1f2328"
    return f"background:rgba({red},{green},{blue},{alpha:.2f});color:{colour}"


# --- manifest -------------------------------------------------------------------------------


def short_hash(fingerprint: str, head: int = 12, tail: int = 6) -> str:
    """A fingerprint's first and last characters; the page shows the whole in a hover title.

    The tail is kept too: two fingerprints that share a prefix must not look identical.
    """
    prefix, _, digest = fingerprint.rpartition(":")
    if len(digest) > head + tail + 1:
        digest = f"{digest[:head]}…{digest[-tail:]}"
    return f"{prefix}:{digest}" if prefix else digest


def thousands(value: int | None) -> str | None:
    """ "22,713,602"; None stays None, for the template to show as missing."""
    return f"{value:,}" if value is not None else None


def timestamp(text: str) -> str:
    """An ISO 8601 time as "2025-11-22 09:14 UTC"; anything unparsable is shown as it is."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return MISSING
    if seconds >= 60:
        return f"{int(seconds // 60)} min {seconds % 60:.0f} s"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def timing_rows(timings: Mapping[str, float]) -> list[tuple[str, str, float]]:
    """(stage, duration text, bar width in percent of the longest stage)."""
    longest = max((t for t in timings.values() if math.isfinite(t)), default=0.0) or 1.0
    return [
        (stage, duration(seconds), 100 * min(max(seconds / longest, 0.0), 1.0))
        if math.isfinite(seconds)
        else (stage, duration(seconds), 0.0)
        for stage, seconds in timings.items()
    ]


def settings_groups(config: Mapping[str, object]) -> list[tuple[str, list[tuple[str, str]]]]:
    """The audit config as one small table per top-level group, scalars gathered first."""
    scalars = {key: value for key, value in config.items() if not isinstance(value, Mapping)}
    groups: list[tuple[str, Mapping[str, object]]] = [("run", scalars)] if scalars else []
    groups += [(key, value) for key, value in config.items() if isinstance(value, Mapping)]
    return [(name, _flatten(values)) for name, values in groups]


def _flatten(value: object, prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings as dotted keys and display strings, in document order."""
    if isinstance(value, Mapping):
        if not value and prefix:
            return [(prefix, "{}")]
        items: list[tuple[str, str]] = []
        for key, inner in value.items():
            items.extend(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return items
    return [(prefix, setting_text(value))]
