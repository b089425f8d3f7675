"""Views of the sections beyond dataset-wide means: flips, slices, output-distance tails,
smooth calibration, faithfulness and the disagreement exemplars. Values and plain text only;
the templates escape everything they print."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

from trustdiff.report import plots
from trustdiff.result import (
    AuditResult,
    DistanceSummary,
    Interval,
    MethodAlignment,
    SliceResult,
)

SLICE_CHECK_NAMES = {
    "worst_slice_accuracy_drop": "accuracy drop",
    "worst_slice_agreement": "agreement",
}


@dataclass(frozen=True)
class SliceView:
    item: SliceResult
    state: str  # "fail", "pass" or "small" (listed, not judged); also the row's CSS class
    note: str


def slice_views(result: AuditResult) -> list[SliceView]:
    """The slices as the document orders them (lowest agreement first)."""
    if result.slices is None:
        return []
    views = []
    for item in result.slices.slices:
        if not item.judged:
            state, note = "small", "too small to judge"
        elif item.failing:
            names = ", ".join(SLICE_CHECK_NAMES.get(name, name) for name in item.failing)
            state, note = "fail", f"misses the {names} threshold"
        else:
            state, note = "pass", ""
        views.append(SliceView(item, state, note))
    return views


def gating_slice_checks(result: AuditResult) -> list[str]:
    """The slice checks that are part of this audit's gate."""
    return [check.name for check in result.gate.checks if check.name in SLICE_CHECK_NAMES]


def probabilities(values: Sequence[float], labels: Sequence[str]) -> str:
    """ "negative 0.93 · positive 0.07": a probability vector with its label names."""
    names = labels if len(labels) == len(values) else [str(i) for i in range(len(values))]
    return " · ".join(f"{name} {value:.3f}" for name, value in zip(names, values, strict=True))


@dataclass(frozen=True)
class DistanceView:
    name: str
    summary: DistanceSummary
    histogram: Markup


def distance_views(result: AuditResult) -> list[DistanceView]:
    if result.divergence is None:
        return []
    return [
        DistanceView(
            "KL(reference ‖ candidate)",
            result.divergence.kl,
            plots.distance_histogram(
                result.divergence.kl,
                label="Per-row KL divergence histogram",
                x_label="KL(reference ‖ candidate) per row, nats",
            ),
        ),
        DistanceView(
            "Jensen–Shannon distance",
            result.divergence.js_distance,
            plots.distance_histogram(
                result.divergence.js_distance,
                label="Per-row Jensen–Shannon distance histogram",
                x_label="Jensen–Shannon distance per row (base 2)",
            ),
        ),
    ]


def smooth_figure(result: AuditResult) -> Markup | None:
    smooth = result.calibration.smooth
    return None if smooth is None else plots.smooth_reliability_plot(smooth)


@dataclass(frozen=True)
class FaithfulnessRow:
    name: str
    reference: float | None
    candidate: float | None
    delta: Interval
    better: str  # which direction is more faithful


def faithfulness_rows(aligned: MethodAlignment) -> list[FaithfulnessRow]:
    faithfulness = aligned.faithfulness
    if faithfulness is None:
        return []
    return [
        FaithfulnessRow(
            "Comprehensiveness",
            faithfulness.reference.comprehensiveness.mean,
            faithfulness.candidate.comprehensiveness.mean,
            faithfulness.comprehensiveness_delta,
            "higher is more faithful",
        ),
        FaithfulnessRow(
            "Sufficiency",
            faithfulness.reference.sufficiency.mean,
            faithfulness.candidate.sufficiency.mean,
            faithfulness.sufficiency_delta,
            "lower is more faithful",
        ),
    ]
