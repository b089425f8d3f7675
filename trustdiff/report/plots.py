"""The report's plots: small functions from result values to SVG markup."""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup

from trustdiff.formatting import format_number, is_finite
from trustdiff.report.svg import AXIS_COLOUR, GRID_COLOUR, INK_COLOUR, Label, SvgCanvas, ticks
from trustdiff.result import (
    BinnedCalibration,
    DistanceSummary,
    GateCheck,
    Histogram,
    MetricSummary,
    ModelSmoothCalibration,
    ReliabilityBin,
    SmoothCalibration,
    SmoothReliabilityCurve,
)

__all__ = [
    "CANDIDATE_COLOUR",
    "FAIL_COLOUR",
    "NOISE_FLOOR_COLOUR",
    "PASS_COLOUR",
    "REFERENCE_COLOUR",
    "alignment_histogram",
    "check_strip",
    "distance_histogram",
    "reliability_domains",
    "reliability_plot",
    "smooth_reliability_plot",
]

# Grey is the reference (the baseline), blue is the candidate (the model being judged), so
# "blue" always means "involves the candidate". Green and red are kept for pass and fail only.
REFERENCE_COLOUR = "#4a4f57"
CANDIDATE_COLOUR = "#2f6fb3"
NOISE_FLOOR_COLOUR = "#b4bcc6"
PASS_COLOUR = "#1a7f37"
FAIL_COLOUR = "#cf222e"
# Mean lines are darker than their bars, so a line drawn over its own bar stays visible.
CANDIDATE_MEAN_COLOUR = "#173f6b"
NOISE_FLOOR_MEAN_COLOUR = INK_COLOUR


# --- the gate's check strip -----------------------------------------------------------------


def check_strip(check: GateCheck) -> Markup | None:
    """A one-line number line: passing side tinted, threshold tick, interval, value dot.

    None when the check has no finite number to place.
    """
    values = [
        v for v in (check.value, check.ci_low, check.ci_high, check.threshold) if is_finite(v)
    ]
    if not values:
        return None
    low, high = min(values), max(values)
    span = high - low or max(abs(high) * 0.2, 0.01)
    svg = SvgCanvas(
        180,
        24,
        label=f"{check.name}: value against threshold",
        plot=(4, 4, 176, 20),
        x_domain=(low - 0.2 * span, high + 0.2 * span),
    )
    threshold_x = svg.x(check.threshold)
    below = (svg.left, threshold_x - svg.left)
    above = (threshold_x, svg.right - threshold_x)
    passing, failing = (below, above) if check.comparison == "<=" else (above, below)
    svg.rect(passing[0], 4, passing[1], 16, fill=PASS_COLOUR, opacity=0.10)
    svg.rect(failing[0], 4, failing[1], 16, fill=FAIL_COLOUR, opacity=0.06)
    svg.line(threshold_x, 1, threshold_x, 23, stroke=INK_COLOUR, width=1.5)
    colour = PASS_COLOUR if check.passed else FAIL_COLOUR
    ci_low, ci_high, value = check.ci_low, check.ci_high, check.value
    if is_finite(ci_low) and is_finite(ci_high):
        svg.line(svg.x(ci_low), 12, svg.x(ci_high), 12, stroke=colour, width=2)
        for bound in (ci_low, ci_high):
            svg.line(svg.x(bound), 8, svg.x(bound), 16, stroke=colour, width=1.5)
    if is_finite(value):
        svg.circle(svg.x(value), 12, 4.5, fill=colour, tooltip=f"value {value:.4f}")
    return svg.render()


# --- reliability diagram --------------------------------------------------------------------


def _clamp(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _filled(b: ReliabilityBin) -> bool:
    return b.count > 0 and is_finite(b.mean_confidence) and is_finite(b.accuracy)


def _confidence(b: ReliabilityBin) -> float:
    return _clamp(b.mean_confidence or 0.0)


def _accuracy(b: ReliabilityBin) -> float:
    return _clamp(b.accuracy or 0.0)


def _bin_tooltip(model: str, b: ReliabilityBin) -> str:
    return (
        f"{model}: bin ({b.lower:.3f}, {b.upper:.3f}], {b.count} instances, "
        f"confidence {format_number(b.mean_confidence)}, accuracy {format_number(b.accuracy)}"
    )


def _tick_format(values: Sequence[float]) -> str:
    return "{:.1f}" if all(abs(t * 10 - round(t * 10)) < 1e-9 for t in values) else "{:.2f}"


def _calibration_axes(svg: SvgCanvas, *, y_label: str) -> None:
    """Confidence against accuracy on the canvas's domains, with the dashed diagonal of
    perfect calibration from where both axes have begun."""
    x_domain, y_domain = svg.x_domain, svg.y_domain
    x_ticks, y_ticks = ticks(*x_domain, count=6), ticks(*y_domain, count=6)
    svg.axes(
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        x_label="confidence (max probability)",
        y_label=y_label,
        x_format=_tick_format(x_ticks),
        y_format=_tick_format(y_ticks),
    )
    start = max(x_domain[0], y_domain[0])
    svg.line(svg.x(start), svg.y(start), svg.x(1), svg.y(1), stroke=AXIS_COLOUR, dash="5 4")


def reliability_domains(
    bins: Sequence[ReliabilityBin],
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Confidence and accuracy axis ranges, zoomed in to the populated bins.

    A fine-tuned transformer puts nearly every prediction above 0.9: on a 0–1 axis all its
    points would share a few pixels. Ranges start on a round value and always end at 1; a
    range that would start low anyway starts at 0, like the textbook diagram.
    """
    populated = [b for b in bins if b.count > 0]
    confidences = [_clamp(b.lower) for b in populated]
    confidences += [_confidence(b) for b in populated if _filled(b)]
    return _zoomed_domains(confidences, [_accuracy(b) for b in populated if _filled(b)])


def _zoomed_domains(
    confidences: Sequence[float], accuracies: Sequence[float]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """The zoom rules of `reliability_domains` over the points a diagram shows: the
    confidence axis starts at a multiple of 0.05 (at most 0.9), the accuracy axis at a
    multiple of 0.1, either at 0 when it would start at 0.25 or lower; both end at 1."""
    if not confidences:
        return (0.0, 1.0), (0.0, 1.0)
    x_low = min(math.floor(min(confidences) * 20) / 20, 0.9)
    x_low = 0.0 if x_low <= 0.25 else x_low
    # The accuracy axis also covers the diagonal's start, so perfect calibration stays drawn.
    y_low = math.floor(min([*accuracies, x_low]) * 10) / 10
    y_low = 0.0 if y_low <= 0.25 else y_low
    return (x_low, 1.0), (y_low, 1.0)


def reliability_plot(
    reference: BinnedCalibration,
    candidate: BinnedCalibration,
    x_domain: tuple[float, float],
    y_domain: tuple[float, float],
) -> Markup:
    """Accuracy against confidence per bin for both models, with a bin-count strip below."""
    svg = SvgCanvas(
        440,
        436,
        label=f"Reliability diagram, {reference.n_bins} {reference.binning} bins",
        plot=(52, 44, 424, 328),
        x_domain=x_domain,
        y_domain=y_domain,
    )
    _calibration_axes(svg, y_label="accuracy in bin")
    models = (
        (reference, REFERENCE_COLOUR, "reference"),
        (candidate, CANDIDATE_COLOUR, "candidate"),
    )
    largest = max((b.count for b in (*reference.bins, *candidate.bins)), default=0) or 1
    for binned, colour, name in models:
        filled = [b for b in binned.bins if _filled(b)]
        svg.polyline([(svg.x(_confidence(b)), svg.y(_accuracy(b))) for b in filled], stroke=colour)
        for b in filled:
            radius = 2.5 + 5.5 * math.sqrt(b.count / largest)
            tooltip = _bin_tooltip(name, b)
            svg.circle(
                svg.x(_confidence(b)), svg.y(_accuracy(b)), radius, fill=colour, tooltip=tooltip
            )
    # The legend sits above the plot: inside it, it would hide points wherever it went.
    svg.legend(
        [
            (f"Reference · ECE {format_number(reference.ece)}", REFERENCE_COLOUR, "line"),
            (f"Candidate · ECE {format_number(candidate.ece)}", CANDIDATE_COLOUR, "line"),
            ("Perfect calibration", AXIS_COLOUR, "dash"),
        ],
        x=svg.left,
        y=12,
        columns=2,
        column_width=186,
    )
    _count_strip(svg, models, largest, x_domain[0])
    return svg.render()


def _count_strip(
    svg: SvgCanvas,
    models: Sequence[tuple[BinnedCalibration, str, str]],
    largest: int,
    x_low: float,
) -> None:
    """Below the diagram, one row per model: bars span each bin, height ∝ count."""
    strip_top, row_height = 384.0, 22.0
    for row, (binned, colour, name) in enumerate(models):
        base = strip_top + (row + 1) * row_height
        svg.line(svg.left, base, svg.right, base, stroke="#d0d7de")
        svg.text(svg.left - 6, base - 6, "ref" if row == 0 else "cand", anchor="end", size=10)
        for b in binned.bins:
            if b.count <= 0:
                continue
            height = (row_height - 4) * b.count / largest
            x0 = svg.x(max(_clamp(b.lower), x_low))
            x1 = svg.x(max(_clamp(b.upper), x_low))
            # Equal-mass bins can be a sliver wide; 2px keeps each one visible.
            svg.rect(
                x0 + 0.5,
                base - height,
                max(x1 - x0 - 1, 2.0),
                height,
                fill=colour,
                opacity=0.8,
                tooltip=_bin_tooltip(name, b),
            )
    svg.text(svg.left, strip_top - 2, "instances per bin, same confidence axis", size=10)


# --- alignment histogram --------------------------------------------------------------------


def alignment_histogram(
    name: str, top_k: int, between: MetricSummary, floor: MetricSummary | None
) -> Markup:
    """Per-instance Jaccard@k between the models beside the noise floor's, with both means."""
    series: list[tuple[str, str, MetricSummary]] = [
        ("reference vs candidate", CANDIDATE_COLOUR, between)
    ]
    if floor is not None:
        series.append(("noise floor: reference vs re-run", NOISE_FLOOR_COLOUR, floor))
    edges = [e for _, _, s in series for e in s.histogram.edges if math.isfinite(e)]
    x_low, x_high = (min(edges), max(edges)) if edges else (0.0, 1.0)
    if x_high <= x_low:
        x_low, x_high = x_low - 0.5, x_low + 0.5
    largest = max((c for _, _, s in series for c in s.histogram.counts), default=0)
    y_ticks = ticks(0, max(largest, 1), 4)
    svg = SvgCanvas(
        440,
        270,
        label=f"{name} Jaccard@{top_k} distribution against the noise floor",
        plot=(52, 50, 424, 222),
        x_domain=(x_low, x_high),
        y_domain=(0, max(y_ticks[-1], 1)),
    )
    svg.axes(
        x_ticks=ticks(x_low, x_high),
        y_ticks=y_ticks,
        x_label=f"Jaccard@{top_k} per instance",
        y_label="instances",
        y_format="{:g}",
    )
    for position, (label, colour, summary) in enumerate(series):
        _histogram_bars(svg, summary.histogram, colour, position, len(series), label)
    _mean_lines(svg, between, floor)
    svg.legend(
        [
            (f"{label} · mean {format_number(summary.mean)} (n={summary.n})", colour, "box")
            for label, colour, summary in series
        ],
        x=svg.left,
        y=14,
    )
    if largest == 0:
        middle = ((svg.left + svg.right) / 2, (svg.top + svg.bottom) / 2)
        svg.text(*middle, "no explained instances", anchor="middle")
    return svg.render()


def _histogram_bars(
    svg: SvgCanvas, histogram: Histogram, colour: str, position: int, series: int, label: str
) -> None:
    """Bars of one series, side by side with the other series inside each bin."""
    edges, counts = histogram.edges, histogram.counts
    for i, count in enumerate(counts[: max(len(edges) - 1, 0)]):
        x0, x1 = svg.x(edges[i]), svg.x(edges[i + 1])
        width = (x1 - x0 - 2) / series
        svg.rect(
            x0 + 1 + position * width,
            svg.y(count),
            width,
            svg.bottom - svg.y(count),
            fill=colour,
            tooltip=f"{label}: {count} in [{edges[i]:.2f}, {edges[i + 1]:.2f}]",
        )


def _mean_lines(svg: SvgCanvas, between: MetricSummary, floor: MetricSummary | None) -> None:
    """Dashed lines at the means, labelled above the plot.

    The larger mean's label goes right of its line and the smaller one's left, so the two
    labels part; `SvgCanvas.labels` then moves them apart or inwards if they still collide
    or would leave the canvas (close means, a mean near either end of the axis).
    """
    means = [("mean", between.mean, CANDIDATE_MEAN_COLOUR)]
    if floor is not None:
        means.append(("floor", floor.mean, NOISE_FLOOR_MEAN_COLOUR))
    drawn = [(name, value, colour) for name, value, colour in means if is_finite(value)]
    for _, value, colour in drawn:
        x = svg.x(value)
        svg.line(x, svg.top, x, svg.bottom, stroke=colour, width=1.5, dash="5 3")
    # Equal means: the between-model label keeps the left side, the floor's the right.
    ordered = sorted(drawn, key=lambda item: (item[1], item[0] == "floor"))
    labels = []
    for rank, (name, value, colour) in enumerate(ordered):
        first = name == "mean" if len(ordered) == 1 else rank == 0
        text = f"{name} {format_number(value, digits=2)}"
        labels.append(Label(text, svg.x(value), "left" if first else "right", colour))
    svg.labels(labels, y=svg.top - 4)


# --- beyond the averages --------------------------------------------------------------------


def _populated(curve: SmoothReliabilityCurve) -> list[tuple[float, float, float]]:
    """(confidence, accuracy, density) where the density is at least 2% of its peak: below
    that the curve rests on a handful of instances at most."""
    floor = 0.02 * max(curve.density, default=0.0)
    return [
        (x, _clamp(y), d)
        for x, y, d in zip(curve.confidence, curve.accuracy, curve.density, strict=True)
        if d > floor
    ]


def _smooth_domains(
    smooth: SmoothCalibration,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis ranges zoomed in to where the confidences are, by `reliability_domains`' rules."""
    points = [p for model in (smooth.reference, smooth.candidate) for p in _populated(model.curve)]
    return _zoomed_domains([x for x, _, _ in points], [y for _, y, _ in points])


def smooth_reliability_plot(smooth: SmoothCalibration) -> Markup:
    """Both models' kernel-smoothed reliability curves, with their confidence densities
    below; each curve is drawn only where its density is not negligible."""
    x_domain, y_domain = _smooth_domains(smooth)
    svg = SvgCanvas(
        440,
        452,
        label="Smooth reliability diagram (SmoothECE kernel)",
        plot=(52, 60, 424, 344),
        x_domain=x_domain,
        y_domain=y_domain,
    )
    _calibration_axes(svg, y_label="smoothed accuracy")
    models = (
        (smooth.reference, REFERENCE_COLOUR, "ref", "Reference"),
        (smooth.candidate, CANDIDATE_COLOUR, "cand", "Candidate"),
    )
    for model, colour, _, _ in models:
        points = [(x, y) for x, y, _ in _populated(model.curve) if x >= x_domain[0]]
        svg.polyline([(svg.x(x), svg.y(y)) for x, y in points], stroke=colour)
    svg.legend(
        [
            *(
                (
                    f"{name} · SmoothECE {format_number(model.smooth_ece)}, "
                    f"σ {format_number(model.bandwidth)}",
                    colour,
                    "line",
                )
                for model, colour, _, name in models
            ),
            ("Perfect calibration", AXIS_COLOUR, "dash"),
        ],
        x=svg.left,
        y=12,
    )
    _density_strips(svg, models, x_min=x_domain[0])
    return svg.render()


def _density_strips(
    svg: SvgCanvas,
    models: tuple[tuple[ModelSmoothCalibration, str, str, str], ...],
    *,
    x_min: float,
) -> None:
    """Below the plot, one strip per model: its density of confidences on the same x axis."""
    strip_top, row_height = 400.0, 22.0
    largest = max((d for model, *_ in models for d in model.curve.density), default=0.0) or 1.0
    for row, (model, colour, short, _) in enumerate(models):
        base = strip_top + (row + 1) * row_height
        svg.line(svg.left, base, svg.right, base, stroke="#d0d7de")
        svg.text(svg.left - 6, base - 6, short, anchor="end", size=10)
        curve = model.curve
        svg.polyline(
            [
                (svg.x(x), base - (row_height - 4) * d / largest)
                for x, d in zip(curve.confidence, curve.density, strict=True)
                if x >= x_min
            ],
            stroke=colour,
        )
    svg.text(svg.left, strip_top - 2, "density of confidences, same confidence axis", size=10)


def distance_histogram(summary: DistanceSummary, *, label: str, x_label: str) -> Markup:
    """Rows per bin of a per-row distance, on a log count axis (the tail is a few rows),
    with dashed lines at the median, p90 and p99."""
    edges, counts = summary.histogram.edges, summary.histogram.counts
    x_low, x_high = (float(edges[0]), float(edges[-1])) if len(edges) > 1 else (0.0, 1.0)
    if x_high <= x_low:
        x_high = x_low + 1.0
    top = max(math.log10(max(counts, default=0) + 1), 1.0)
    svg = SvgCanvas(
        440, 250, label=label, plot=(52, 36, 424, 202), x_domain=(x_low, x_high),
        y_domain=(0.0, top),
    )  # fmt: skip
    svg.axes(
        x_ticks=ticks(x_low, x_high),
        y_ticks=[],
        x_label=x_label,
        y_label="rows (log scale)",
        x_format="{:.2g}",
    )
    for count in (1, 10, 100, 1000, 10000, 100000):
        if math.log10(count + 1) > top:
            break
        y = svg.y(math.log10(count + 1))
        svg.line(svg.left, y, svg.right, y, stroke=GRID_COLOUR)
        svg.text(svg.left - 6, y + 4, f"{count:,}", anchor="end")
    for i, count in enumerate(counts[: max(len(edges) - 1, 0)]):
        if count <= 0:
            continue
        x0, x1 = svg.x(edges[i]), svg.x(edges[i + 1])
        height = math.log10(count + 1)
        svg.rect(
            x0 + 1,
            svg.y(height),
            x1 - x0 - 2,
            svg.bottom - svg.y(height),
            fill=CANDIDATE_COLOUR,
            tooltip=f"{count} rows in [{edges[i]:.3g}, {edges[i + 1]:.3g}]",
        )
    marks = [("median", summary.median), ("p90", summary.p90), ("p99", summary.p99)]
    for _, value in marks:
        svg.line(svg.x(value), svg.top, svg.x(value), svg.bottom, stroke=INK_COLOUR, dash="4 3")
    svg.labels(
        [Label(f"{name} {value:.3g}", svg.x(value), "right", INK_COLOUR) for name, value in marks],
        y=svg.top - 6,
    )
    return svg.render()
