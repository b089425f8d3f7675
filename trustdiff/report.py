"""Render an audit result as one self-contained HTML page: inline CSS and SVG, no script."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeGuard

from trustdiff.result import (
    AlignmentMetrics,
    Attributions,
    AuditResult,
    BinnedCalibration,
    Explanation,
    GateCheck,
    Histogram,
    Instance,
    MethodAlignment,
    MetricSummary,
    ReliabilityBin,
)

__all__ = ["render_report"]

# Grey is the reference (the baseline), blue is the candidate (the model being judged), so
# "blue" always means "involves the candidate". Green and red are kept for pass and fail only.
REFERENCE_COLOUR = "#4a4f57"
CANDIDATE_COLOUR = "#2f6fb3"
NOISE_FLOOR_COLOUR = "#b4bcc6"
PASS_COLOUR = "#1a7f37"
FAIL_COLOUR = "#cf222e"
# Word shading uses a purple/orange diverging scale: it cannot be read as model, pass or fail.
SUPPORTS_RGB = (94, 60, 153)
OPPOSES_RGB = (230, 97, 1)

INSTANCES_SHOWN = 5
METHOD_NAMES = {"lime": "LIME", "shap": "SHAP"}
CALIBRATION_METRICS = (
    ("ece", "ECE"),
    ("mce", "MCE"),
    ("classwise_ece", "Classwise ECE"),
    ("brier", "Brier score"),
    ("nll", "NLL"),
)
BINNING_NAMES = {"equal_width": "equal-width bins", "equal_mass": "equal-mass bins"}
MISSING = "—"


def render_report(result: AuditResult) -> str:
    """The audit as one HTML document (UTF-8 text) that opens offline in any browser.

    Every string taken from the document (dataset text, paths, label names, settings) is
    HTML-escaped; the page carries no script and a Content-Security-Policy that forbids
    every fetch, so a hostile dataset row can neither run nor phone home.
    """
    manifest = result.manifest
    title = f"trustdiff audit: {manifest.candidate.path} vs {manifest.reference.path}"
    sections = [
        _verdict_section(result),
        _parity_section(result),
        _calibration_section(result),
        _alignment_section(result),
        _instances_section(result),
        _manifest_section(result),
    ]
    return "".join(
        [
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
            # Defence in depth behind the escaping: no script, no network, ever.
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'\">\n",
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n",
            _page_header(result),
            '<main class="page">\n',
            *sections,
            "</main>\n</body>\n</html>\n",
        ]
    )


# --- formatting -----------------------------------------------------------------------------


def _e(value: object) -> str:
    """Escaped for both element text and double-quoted attribute values."""
    return html.escape(str(value), quote=True)


def _finite(value: float | None) -> TypeGuard[float]:
    return value is not None and math.isfinite(value)


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return MISSING
    if round(value, digits) == 0:
        value = 0.0  # never print "-0.000"
    return f"{value:.{digits}f}".replace("-", "−")


def _signed(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return MISSING
    if round(value, digits) == 0:
        return f"{0.0:.{digits}f}"
    return f"{value:+.{digits}f}".replace("-", "−")


def _p_value(value: float) -> str:
    if not math.isfinite(value):
        return MISSING
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _interval(low: float | None, high: float | None, *, signed: bool = False) -> str:
    if not (_finite(low) and _finite(high)):
        return f'<span class="na">{MISSING}</span>'
    fmt = _signed if signed else _num
    return f"[{fmt(low)}, {fmt(high)}]"


def _cell(value: float | None, digits: int = 3, *, signed: bool = False) -> str:
    text = _signed(value, digits) if signed else _num(value, digits)
    return f'<span class="na">{MISSING}</span>' if text == MISSING else text


def _short_hash(fingerprint: str, head: int = 12, tail: int = 6) -> str:
    """A fingerprint's first and last characters, the whole value in a hover title.

    The tail is kept too: two fingerprints that share a prefix must not look identical.
    """
    prefix, _, digest = fingerprint.rpartition(":")
    if len(digest) > head + tail + 1:
        digest = f"{digest[:head]}…{digest[-tail:]}"
    shown = f"{prefix}:{digest}" if prefix else digest
    return f'<code class="hash" title="{_e(fingerprint)}">{_e(shown)}</code>'


def _method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def _ci_label(result: AuditResult) -> str:
    calibration = result.manifest.config.get("calibration")
    level = calibration.get("confidence_level") if isinstance(calibration, Mapping) else None
    if isinstance(level, int | float) and 0 < level < 1:
        return f"{level * 100:g}% CI"
    return "CI"


# --- SVG ------------------------------------------------------------------------------------


def _f(value: float) -> str:
    return f"{value:.1f}"


class _Svg:
    """A fixed-size SVG canvas with one rectangular plot area and linear scales.

    Callers draw in data units through `x()`/`y()` or in pixels directly; every string that
    reaches the markup goes through `_e`, so labels and tooltips may carry dataset text.
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        label: str,
        plot: tuple[float, float, float, float],
        x_domain: tuple[float, float] = (0.0, 1.0),
        y_domain: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        self.width, self.height, self.label = width, height, label
        self.left, self.top, self.right, self.bottom = plot
        self.x_domain, self.y_domain = x_domain, y_domain
        self.parts: list[str] = []

    def x(self, value: float) -> float:
        low, high = self.x_domain
        return self.left + (value - low) / ((high - low) or 1.0) * (self.right - self.left)

    def y(self, value: float) -> float:
        low, high = self.y_domain
        return self.bottom - (value - low) / ((high - low) or 1.0) * (self.bottom - self.top)

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        *,
        stroke: str,
        width: float = 1.0,
        dash: str | None = None,
    ) -> None:
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<line x1="{_f(x1)}" y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}" '
            f'stroke="{stroke}" stroke-width="{width}"{dash_attr}/>'
        )

    def rect(
        self,
        x: float,
        y: float,
        width: float,
        height: float,
        *,
        fill: str,
        opacity: float = 1.0,
        tooltip: str | None = None,
    ) -> None:
        inner = f"<title>{_e(tooltip)}</title>" if tooltip else ""
        self.parts.append(
            f'<rect x="{_f(x)}" y="{_f(y)}" width="{_f(max(width, 0.0))}" '
            f'height="{_f(max(height, 0.0))}" fill="{fill}" fill-opacity="{opacity:.2f}">'
            f"{inner}</rect>"
        )

    def circle(
        self, cx: float, cy: float, radius: float, *, fill: str, tooltip: str | None = None
    ) -> None:
        inner = f"<title>{_e(tooltip)}</title>" if tooltip else ""
        self.parts.append(
            f'<circle cx="{_f(cx)}" cy="{_f(cy)}" r="{_f(radius)}" fill="{fill}" '
            f'fill-opacity="0.85" stroke="#ffffff" stroke-width="1">{inner}</circle>'
        )

    def polyline(self, points: Sequence[tuple[float, float]], *, stroke: str) -> None:
        if len(points) < 2:
            return
        coordinates = " ".join(f"{_f(px)},{_f(py)}" for px, py in points)
        self.parts.append(
            f'<polyline points="{coordinates}" fill="none" stroke="{stroke}" stroke-width="2" '
            'stroke-linejoin="round"/>'
        )

    def text(
        self,
        x: float,
        y: float,
        content: str,
        *,
        anchor: str = "start",
        size: float = 11,
        fill: str = "#59636e",
        weight: str | None = None,
        rotate: bool = False,
    ) -> None:
        extra = f' font-weight="{weight}"' if weight else ""
        if rotate:
            extra += f' transform="rotate(-90 {_f(x)} {_f(y)})"'
        self.parts.append(
            f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{fill}"{extra}>{_e(content)}</text>'
        )

    def axes(
        self,
        *,
        x_ticks: Sequence[float],
        y_ticks: Sequence[float],
        x_label: str,
        y_label: str,
        x_format: str = "{:.1f}",
        y_format: str = "{:.1f}",
    ) -> None:
        """Light grid lines at the ticks, the two axis lines, tick labels and axis titles."""
        for tick in y_ticks:
            self.line(self.left, self.y(tick), self.right, self.y(tick), stroke="#e6e9ed")
            self.text(self.left - 6, self.y(tick) + 4, y_format.format(tick), anchor="end")
        for tick in x_ticks:
            self.line(self.x(tick), self.top, self.x(tick), self.bottom, stroke="#e6e9ed")
            self.text(self.x(tick), self.bottom + 15, x_format.format(tick), anchor="middle")
        self.line(self.left, self.bottom, self.right, self.bottom, stroke="#8c959f")
        self.line(self.left, self.top, self.left, self.bottom, stroke="#8c959f")
        self.text((self.left + self.right) / 2, self.bottom + 32, x_label, anchor="middle")
        self.text(14, (self.top + self.bottom) / 2, y_label, anchor="middle", rotate=True)

    def legend(
        self,
        items: Sequence[tuple[str, str, str]],
        *,
        x: float,
        y: float,
        columns: int = 1,
        column_width: float = 0.0,
    ) -> None:
        """Items are (label, colour, mark) with mark "line", "dash" or "box", row by row."""
        for position, (label, colour, mark) in enumerate(items):
            row, column = divmod(position, columns)
            item_x, item_y = x + column * column_width, y + row * 16
            if mark == "box":
                self.rect(item_x, item_y - 8, 12, 10, fill=colour)
            else:
                self.line(
                    item_x,
                    item_y - 3,
                    item_x + 14,
                    item_y - 3,
                    stroke=colour,
                    width=2,
                    dash="4 3" if mark == "dash" else None,
                )
            self.text(item_x + 19, item_y + 1, label, fill="#1f2328")

    def render(self) -> str:
        return (
            f'<svg class="plot" viewBox="0 0 {self.width} {self.height}" width="{self.width}" '
            f'height="{self.height}" role="img" aria-label="{_e(self.label)}" '
            f'font-family="inherit"><title>{_e(self.label)}</title>'
            + "".join(self.parts)
            + "</svg>"
        )


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high - 1e-9:
        # Axes end on a tick, so the largest value (a bar, a point) stays inside the plot.
        ticks.append(round(value, 10))
    return ticks


# --- page header and verdict ----------------------------------------------------------------


def _page_header(result: AuditResult) -> str:
    manifest = result.manifest
    candidate = manifest.candidate
    transform = f" + {_e(candidate.transform)}" if candidate.transform else ""
    nav = "".join(
        f'<a href="#{anchor}">{name}</a>'
        for anchor, name in (
            ("verdict", "Verdict"),
            ("parity", "Parity"),
            ("calibration", "Calibration"),
            ("alignment", "Alignment"),
            ("instances", "Instances"),
            ("manifest", "Manifest"),
        )
    )
    return (
        '<header class="masthead"><div class="page">'
        '<p class="eyebrow">trustdiff audit report</p>'
        f"<h1>Candidate <code>{_e(candidate.path)}</code>{transform} "
        f'<span class="vs">vs</span> reference <code>{_e(manifest.reference.path)}</code></h1>'
        f'<p class="meta">Dataset <code>{_e(manifest.dataset.path)}</code> · '
        f"{manifest.dataset.rows:,} rows · {len(manifest.labels)} classes · "
        f"device {_e(manifest.device)} · {_e(_timestamp(manifest.created_at))}</p>"
        f'<nav aria-label="Sections">{nav}</nav></div></header>\n'
    )


def _check_judged_bound(check: GateCheck) -> float | None:
    """The number the check was decided on: the value, or the interval's unfavourable bound."""
    if check.judged_on == "value":
        return check.value
    return check.ci_high if check.comparison == "<=" else check.ci_low


def _verdict_section(result: AuditResult) -> str:
    gate = result.gate
    checks = gate.checks
    failed = [check for check in checks if not check.passed]
    word, state = ("PASSED", "pass") if gate.passed else ("FAILED", "fail")
    if gate.passed:
        summary = (
            f"All {len(checks)} checks passed: under these thresholds the candidate is "
            "trust-equivalent to the reference."
            if checks
            else "No checks were configured, so nothing failed."
        )
    else:
        reasons = "; ".join(_failure_reason(check) for check in failed)
        summary = (
            f"{len(failed)} of {len(checks)} checks failed: {reasons}. "
            "Do not replace the reference with this candidate as it is."
            if failed
            else "The gate failed."
        )
    pillars = []
    for pillar in ("parity", "calibration", "alignment"):
        in_pillar = [check for check in checks if check.pillar == pillar]
        if not in_pillar:
            pillars.append(
                f'<li class="pillar none"><span>{pillar.title()}</span><b>no checks</b></li>'
            )
            continue
        bad = sum(not check.passed for check in in_pillar)
        pillar_state, text = ("fail", f"{bad} failed") if bad else ("pass", "passed")
        pillars.append(
            f'<li class="pillar {pillar_state}"><span>{pillar.title()}</span>'
            f"<b>{text}</b><small>{len(in_pillar)} checks</small></li>"
        )
    ci_label = _ci_label(result)
    rows = "".join(_check_row(check) for check in checks)
    table = (
        '<div class="table-scroll"><table class="checks"><thead>'
        "<tr><th>Result</th><th>Check</th><th>Pillar</th>"
        f'<th class="num">Value</th><th class="num">{ci_label}</th><th>Rule</th>'
        "<th>Against the threshold</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
        if checks
        else '<p class="empty">The gate has no checks.</p>'
    )
    return (
        '<section id="verdict" class="card verdict-card">'
        f'<div class="verdict {state}"><div class="verdict-word">{word}</div>'
        f'<p class="verdict-summary">{summary}</p></div>'
        f'<ul class="pillars">{"".join(pillars)}</ul>'
        f"{table}</section>\n"
    )


def _failure_reason(check: GateCheck) -> str:
    """ "ece_increase (upper bound 0.050, must be ≤ 0.020)": the number that decided it."""
    judged = _check_judged_bound(check)
    what = (
        "value"
        if check.judged_on == "value"
        else ("upper bound" if check.comparison == "<=" else "lower bound")
    )
    symbol = "≤" if check.comparison == "<=" else "≥"
    return (
        f"<strong>{_e(check.name)}</strong> ({what} {_num(judged)}, must be "
        f"{symbol} {_num(check.threshold)})"
    )


def _check_row(check: GateCheck) -> str:
    state = "pass" if check.passed else "fail"
    rule_symbol = "≤" if check.comparison == "<=" else "≥"
    if check.judged_on == "value":
        judged = "judged on the value"
    else:
        judged = (
            "judged on the upper bound"
            if check.comparison == "<="
            else ("judged on the lower bound")
        )
    description = (
        f'<div class="description">{_e(check.description)}</div>' if check.description else ""
    )
    return (
        f'<tr class="check {state}">'
        f'<td><span class="badge {state}">{"pass" if check.passed else "FAIL"}</span></td>'
        f'<td><code class="check-name">{_e(check.name)}</code>{description}</td>'
        f"<td>{_e(check.pillar)}</td>"
        f'<td class="num">{_cell(check.value)}</td>'
        f'<td class="num">{_interval(check.ci_low, check.ci_high)}</td>'
        f'<td><span class="rule">{rule_symbol} {_num(check.threshold)}</span>'
        f'<div class="description">{judged}</div></td>'
        f'<td class="strip-cell">{_check_strip(check)}</td></tr>'
    )


def _check_strip(check: GateCheck) -> str:
    """A one-line number line: passing side tinted, threshold tick, interval, value dot."""
    values = [v for v in (check.value, check.ci_low, check.ci_high, check.threshold) if _finite(v)]
    if not values:
        return f'<span class="na">{MISSING}</span>'
    low, high = min(values), max(values)
    span = high - low or max(abs(high) * 0.2, 0.01)
    low, high = low - 0.2 * span, high + 0.2 * span
    svg = _Svg(
        180,
        24,
        label=f"{check.name}: value against threshold",
        plot=(4, 4, 176, 20),
        x_domain=(low, high),
    )
    threshold_x = svg.x(check.threshold)
    if check.comparison == "<=":
        svg.rect(svg.left, 4, threshold_x - svg.left, 16, fill=PASS_COLOUR, opacity=0.10)
        svg.rect(threshold_x, 4, svg.right - threshold_x, 16, fill=FAIL_COLOUR, opacity=0.06)
    else:
        svg.rect(threshold_x, 4, svg.right - threshold_x, 16, fill=PASS_COLOUR, opacity=0.10)
        svg.rect(svg.left, 4, threshold_x - svg.left, 16, fill=FAIL_COLOUR, opacity=0.06)
    svg.line(threshold_x, 1, threshold_x, 23, stroke="#1f2328", width=1.5)
    colour = PASS_COLOUR if check.passed else FAIL_COLOUR
    ci_low, ci_high, value = check.ci_low, check.ci_high, check.value
    if _finite(ci_low) and _finite(ci_high):
        svg.line(svg.x(ci_low), 12, svg.x(ci_high), 12, stroke=colour, width=2)
        for bound in (ci_low, ci_high):
            svg.line(svg.x(bound), 8, svg.x(bound), 16, stroke=colour, width=1.5)
    if _finite(value):
        svg.circle(svg.x(value), 12, 4.5, fill=colour, tooltip=f"value {value:.4f}")
    return svg.render()


# --- parity ---------------------------------------------------------------------------------


def _stat(label: str, value: str, note: str = "") -> str:
    note_html = f"<small>{note}</small>" if note else ""
    return f'<div class="stat"><span>{label}</span><b>{value}</b>{note_html}</div>'


def _parity_section(result: AuditResult) -> str:
    parity = result.parity
    labels = result.manifest.labels
    ci_label = _ci_label(result)
    model_rows = [
        ("Accuracy", parity.reference.accuracy, parity.candidate.accuracy, parity.accuracy_delta),
        ("Macro-F1", parity.reference.macro_f1, parity.candidate.macro_f1, parity.macro_f1_delta),
    ]
    body = "".join(
        f"<tr><th>{name}</th><td class=num>{_num(ref)}</td><td class=num>{_num(cand)}</td>"
        f"<td class=num>{_signed(delta.value)}</td>"
        f"<td class=num>{_interval(delta.ci_low, delta.ci_high, signed=True)}</td></tr>"
        for name, ref, cand, delta in model_rows
    )
    for label in labels:
        ref_recall = parity.reference.per_class_recall.get(label)
        cand_recall = parity.candidate.per_class_recall.get(label)
        delta = (
            cand_recall - ref_recall if ref_recall is not None and cand_recall is not None else None
        )
        body += (
            f'<tr class="minor"><th>Recall · {_e(label)}</th><td class=num>{_cell(ref_recall)}</td>'
            f"<td class=num>{_cell(cand_recall)}</td><td class=num>{_cell(delta, signed=True)}</td>"
            f'<td class=num><span class="na">{MISSING}</span></td></tr>'
        )
    performance = (
        '<table class="metrics"><thead><tr><th></th>'
        '<th class="num ref">Reference</th><th class="num cand">Candidate</th>'
        f'<th class="num">Δ cand − ref</th><th class="num">{ci_label} of Δ</th></tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )
    net = parity.fixed - parity.broken
    stats = (
        '<div class="stats">'
        + _stat("Agreement", _num(parity.agreement), "same prediction")
        + _stat("Cohen's κ", _num(parity.kappa), "between predictions")
        + _stat("McNemar p", _p_value(parity.mcnemar_p), "exact, fixed vs broken")
        + _stat("Probability loyalty", _num(parity.probability_loyalty), "1 − √JSD")
        + "</div>"
    )
    flips_total = max(parity.fixed + parity.broken, 1)
    flips = (
        '<div class="flips">'
        f'<div class="flip"><span>Fixed</span><b>{parity.fixed}</b>'
        f'<div class="bar"><i style="width:{100 * parity.fixed / flips_total:.1f}%"></i></div>'
        "<small>reference wrong → candidate right</small></div>"
        f'<div class="flip"><span>Broken</span><b>{parity.broken}</b>'
        f'<div class="bar"><i style="width:{100 * parity.broken / flips_total:.1f}%"></i></div>'
        "<small>reference right → candidate wrong</small></div>"
        f'<div class="flip"><span>Net</span><b>{_signed(float(net), 0)}</b>'
        "<small>fixed − broken</small></div>"
        "</div>"
    )
    return (
        '<section id="parity" class="card"><h2>Parity</h2>'
        '<p class="lede">Do the two models predict the same, and as well?</p>'
        f'<div class="split wide"><div>{performance}{stats}</div>'
        f"<div>{_disagreement_matrix(parity.disagreement_matrix, labels)}{flips}</div></div>"
        "</section>\n"
    )


def _disagreement_matrix(matrix: list[list[int]], labels: list[str]) -> str:
    size = len(matrix)
    names = labels if len(labels) == size else [str(i) for i in range(size)]
    off_diagonal = [count for i, row in enumerate(matrix) for j, count in enumerate(row) if i != j]
    largest = max(off_diagonal, default=0) or 1
    header = "".join(f'<th class="num">{_e(name)}</th>' for name in names)
    rows = []
    for i, row in enumerate(matrix):
        cells = []
        for j, count in enumerate(row):
            if i == j:
                cells.append(f'<td class="num agree">{count}</td>')
            else:
                # Flip cells are tinted by their share of the largest flip count.
                alpha = 0.08 + 0.5 * count / largest if count else 0.0
                cells.append(
                    f'<td class="num flip-cell" style="background:rgba(47,111,179,{alpha:.2f})">'
                    f"{count}</td>"
                )
        rows.append(f"<tr><th>{_e(names[i])}</th>{''.join(cells)}</tr>")
    return (
        '<table class="matrix"><caption>Disagreement matrix: rows are the reference\'s '
        "prediction, columns the candidate's; off-diagonal cells are flips.</caption>"
        f'<thead><tr><th class="corner">ref ╲ cand</th>{header}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


# --- calibration ----------------------------------------------------------------------------


def _calibration_section(result: AuditResult) -> str:
    calibration = result.calibration
    ci_label = _ci_label(result)
    reference, candidate = calibration.reference, calibration.candidate
    rows = []
    for key, name in CALIBRATION_METRICS:
        delta = calibration.delta.get(key)
        rows.append(
            f"<tr><th>{name}</th><td class=num>{_num(getattr(reference, key))}</td>"
            f"<td class=num>{_num(getattr(candidate, key))}</td>"
            f"<td class=num>{_cell(delta.value if delta else None, signed=True)}</td>"
            f"<td class=num>{_interval(delta.ci_low, delta.ci_high, signed=True) if delta else _interval(None, None)}</td></tr>"  # noqa: E501
        )
    table = (
        '<table class="metrics"><thead><tr><th></th>'
        '<th class="num ref">Reference</th><th class="num cand">Candidate</th>'
        f'<th class="num">Δ cand − ref</th><th class="num">{ci_label} of Δ</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        f'<p class="note">All lower-is-better; a positive Δ means the candidate is worse '
        f"calibrated. ECE and MCE use {calibration.n_bins} "
        f"{_e(BINNING_NAMES.get(calibration.binning, calibration.binning))}.</p>"
    )
    candidate_by_binning = {binned.binning: binned for binned in candidate.reliability}
    figures = []
    for reference_binned in reference.reliability:
        candidate_binned = candidate_by_binning.get(reference_binned.binning)
        if candidate_binned is None:
            continue
        x_domain, y_domain = _reliability_domains([*reference_binned.bins, *candidate_binned.bins])
        zoomed = (
            f" Axes start at confidence {x_domain[0]:g} and accuracy {y_domain[0]:g}, where "
            "the populated bins are."
            if x_domain[0] > 0 or y_domain[0] > 0
            else ""
        )
        figures.append(
            "<figure>"
            + _reliability_plot(reference_binned, candidate_binned, x_domain, y_domain)
            + f"<figcaption>{reference_binned.n_bins} "
            f"{_e(BINNING_NAMES.get(reference_binned.binning, reference_binned.binning))}. "
            "Points sit at each bin's mean confidence and accuracy, sized by its count; the "
            "dashed diagonal is perfect calibration; the strip below counts instances per bin."
            f"{zoomed}</figcaption></figure>"
        )
    if not figures:
        figures.append('<p class="empty">No reliability diagram in this result.</p>')
    return (
        '<section id="calibration" class="card"><h2>Calibration</h2>'
        "<p class=\"lede\">Are the candidate's probabilities as reliable as the reference's?</p>"
        f'<div class="calibration-table">{table}</div>'
        f'<div class="figures">{"".join(figures)}</div></section>\n'
    )


def _reliability_domains(
    bins: Sequence[ReliabilityBin],
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Confidence and accuracy axis ranges, zoomed in to the populated bins.

    A fine-tuned transformer puts nearly every prediction above 0.9: on a 0–1 axis all its
    points would share a few pixels. Ranges start on a round value and always end at 1; a
    range that would start low anyway starts at 0, like the textbook diagram.
    """
    populated = [b for b in bins if b.count > 0]
    if not populated:
        return (0.0, 1.0), (0.0, 1.0)
    confidences = [_clamp(b.lower) for b in populated] + [_conf(b) for b in populated if _filled(b)]
    x_low = min(math.floor(min(confidences) * 20) / 20, 0.9)
    x_low = 0.0 if x_low <= 0.25 else x_low
    # The accuracy axis also covers the diagonal's start, so perfect calibration stays drawn.
    accuracies = [_acc(b) for b in populated if _filled(b)] + [x_low]
    y_low = math.floor(min(accuracies) * 10) / 10
    y_low = 0.0 if y_low <= 0.25 else y_low
    return (x_low, 1.0), (y_low, 1.0)


def _tick_format(ticks: Sequence[float]) -> str:
    return "{:.1f}" if all(abs(t * 10 - round(t * 10)) < 1e-9 for t in ticks) else "{:.2f}"


def _reliability_plot(
    reference: BinnedCalibration,
    candidate: BinnedCalibration,
    x_domain: tuple[float, float],
    y_domain: tuple[float, float],
) -> str:
    """Accuracy against confidence per bin for both models, with a bin-count strip below."""
    svg = _Svg(
        440,
        436,
        label=f"Reliability diagram, {reference.n_bins} {reference.binning} bins",
        plot=(52, 44, 424, 328),
        x_domain=x_domain,
        y_domain=y_domain,
    )
    x_ticks, y_ticks = _ticks(*x_domain, count=6), _ticks(*y_domain, count=6)
    svg.axes(
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        x_label="confidence (max probability)",
        y_label="accuracy in bin",
        x_format=_tick_format(x_ticks),
        y_format=_tick_format(y_ticks),
    )
    diagonal_start = max(x_domain[0], y_domain[0])
    svg.line(
        svg.x(diagonal_start),
        svg.y(diagonal_start),
        svg.x(1),
        svg.y(1),
        stroke="#8c959f",
        dash="5 4",
    )
    largest = max((b.count for b in (*reference.bins, *candidate.bins)), default=0) or 1
    for binned, colour, name in (
        (reference, REFERENCE_COLOUR, "reference"),
        (candidate, CANDIDATE_COLOUR, "candidate"),
    ):
        filled = [b for b in binned.bins if _filled(b)]
        svg.polyline(
            [(svg.x(_conf(b)), svg.y(_acc(b))) for b in filled],
            stroke=colour,
        )
        for b in filled:
            svg.circle(
                svg.x(_conf(b)),
                svg.y(_acc(b)),
                2.5 + 5.5 * math.sqrt(b.count / largest),
                fill=colour,
                tooltip=_bin_tooltip(name, b),
            )
    # The legend sits above the plot: inside it, it would hide points wherever it went.
    svg.legend(
        [
            (f"Reference · ECE {_num(reference.ece)}", REFERENCE_COLOUR, "line"),
            (f"Candidate · ECE {_num(candidate.ece)}", CANDIDATE_COLOUR, "line"),
            ("Perfect calibration", "#8c959f", "dash"),
        ],
        x=svg.left,
        y=12,
        columns=2,
        column_width=186,
    )
    # The count strip: one row per model, bars span each bin, height ∝ count.
    strip_top, row_height = 384.0, 22.0
    for row, (binned, colour, name) in enumerate(
        ((reference, REFERENCE_COLOUR, "reference"), (candidate, CANDIDATE_COLOUR, "candidate"))
    ):
        base = strip_top + (row + 1) * row_height
        svg.line(svg.left, base, svg.right, base, stroke="#d0d7de")
        svg.text(svg.left - 6, base - 6, "ref" if row == 0 else "cand", anchor="end", size=10)
        for b in binned.bins:
            if b.count <= 0:
                continue
            height = (row_height - 4) * b.count / largest
            x0 = svg.x(max(_clamp(b.lower), x_domain[0]))
            x1 = svg.x(max(_clamp(b.upper), x_domain[0]))
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
    return svg.render()


def _filled(b: ReliabilityBin) -> bool:
    return b.count > 0 and _finite(b.mean_confidence) and _finite(b.accuracy)


def _conf(b: ReliabilityBin) -> float:
    return _clamp(b.mean_confidence or 0.0)


def _acc(b: ReliabilityBin) -> float:
    return _clamp(b.accuracy or 0.0)


def _clamp(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _bin_tooltip(model: str, b: ReliabilityBin) -> str:
    return (
        f"{model}: bin ({b.lower:.3f}, {b.upper:.3f}], {b.count} instances, "
        f"confidence {_num(b.mean_confidence)}, accuracy {_num(b.accuracy)}"
    )


# --- alignment ------------------------------------------------------------------------------


def _alignment_metric_name(field: str, top_k: int) -> str:
    names = {
        "jaccard_at_k": f"Jaccard@{top_k}",
        "feature_agreement": "Feature agreement",
        "rank_agreement": "Rank agreement",
        "sign_agreement": "Sign agreement",
        "signed_rank_agreement": "Signed rank agreement",
        "rank_correlation": "Rank correlation",
        "pairwise_rank_agreement": "Pairwise rank agreement",
        "cosine_similarity": "Cosine similarity",
    }
    return names.get(field, field.replace("_", " ").capitalize())


def _alignment_section(result: AuditResult) -> str:
    head = (
        '<section id="alignment" class="card"><h2>Interpretability alignment</h2>'
        '<p class="lede">Do both models base their predictions on the same words? Each figure '
        "is shown next to the noise floor: the same metric between two seeded runs of the "
        "reference itself. Agreement below the floor means the models rely on different words."
        "</p>"
    )
    if not result.alignment:
        return head + '<p class="empty">Alignment not computed for this audit.</p></section>\n'
    blocks = [_method_block(method, aligned) for method, aligned in result.alignment.items()]
    return head + "".join(blocks) + "</section>\n"


def _method_block(method: str, aligned: MethodAlignment) -> str:
    name = _method_name(method)
    floor = aligned.noise_floor
    rows = []
    for field in AlignmentMetrics.model_fields:
        between: MetricSummary = getattr(aligned, field)
        floor_summary: MetricSummary | None = getattr(floor, field) if floor else None
        floor_mean = floor_summary.mean if floor_summary else None
        gap = (
            between.mean - floor_mean
            if between.mean is not None and floor_mean is not None
            else None
        )
        rows.append(
            f"<tr><th>{_e(_alignment_metric_name(field, aligned.top_k))}</th>"
            f"<td class=num>{_cell(between.mean)}</td><td class=num>{_cell(between.median)}</td>"
            f"<td class=num>{_interval(between.ci_low, between.ci_high)}</td>"
            f"<td class=num>{_cell(floor_mean)}</td>"
            f"<td class=num>{_cell(gap, signed=True)}</td></tr>"
        )
    table = (
        '<table class="metrics alignment"><thead>'
        '<tr><th></th><th class="group cand" colspan="3">Reference vs candidate</th>'
        '<th class="group" colspan="2">Noise floor</th></tr>'
        '<tr><th></th><th class="num">Mean</th><th class="num">Median</th>'
        '<th class="num">CI of mean</th><th class="num">Mean</th>'
        '<th class="num">Δ to floor</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    settings = ", ".join(
        f"{_e(key)} {_e(_setting_text(value))}"
        for key, value in aligned.settings.items()
        if key not in ("method", "top_k")  # already in the heading and the note
    )
    floor_note = "" if floor else " No noise floor was computed."
    histogram = _alignment_histogram(
        name,
        aligned.top_k,
        aligned.jaccard_at_k,
        floor.jaccard_at_k if floor else None,
    )
    return (
        f'<div class="method"><h3>{_e(name)}</h3>'
        f'<p class="note">{aligned.n_instances} explained instances, top-k {aligned.top_k}'
        f"{'; ' + settings if settings else ''}.{floor_note}</p>"
        f'<div class="split"><figure>{histogram}<figcaption>Distribution of per-instance '
        f"Jaccard@{aligned.top_k} (overlap of the top-{aligned.top_k} words) between the "
        "models, next to the noise floor's; dashed lines are the means.</figcaption></figure>"
        f"<div>{table}</div></div></div>"
    )


def _alignment_histogram(
    name: str, top_k: int, between: MetricSummary, floor: MetricSummary | None
) -> str:
    series: list[tuple[str, str, MetricSummary]] = [
        ("reference vs candidate", CANDIDATE_COLOUR, between)
    ]
    if floor is not None:
        series.append(("noise floor: reference vs re-run", NOISE_FLOOR_COLOUR, floor))
    edges = [e for _, _, s in series for e in s.histogram.edges]
    x_low, x_high = (min(edges), max(edges)) if edges else (0.0, 1.0)
    if x_high <= x_low:
        x_low, x_high = x_low - 0.5, x_low + 0.5
    largest = max((c for _, _, s in series for c in s.histogram.counts), default=0)
    y_ticks = _ticks(0, max(largest, 1), 4)
    y_high = max(y_ticks[-1], 1)
    svg = _Svg(
        440,
        270,
        label=f"{name} Jaccard@{top_k} distribution against the noise floor",
        plot=(52, 50, 424, 222),
        x_domain=(x_low, x_high),
        y_domain=(0, y_high),
    )
    svg.axes(
        x_ticks=_ticks(x_low, x_high),
        y_ticks=y_ticks,
        x_label=f"Jaccard@{top_k} per instance",
        y_label="instances",
        y_format="{:g}",
    )
    for position, (label, colour, summary) in enumerate(series):
        _draw_histogram(svg, summary.histogram, colour, position, len(series), label)
    # Mean lines are darker than their bars so a line over its own bar stays visible; the
    # between-model label goes left of its line and the floor's right, so they rarely collide.
    for position, (_, colour, summary) in enumerate(series):
        if _finite(summary.mean):
            x = svg.x(summary.mean)
            stroke = "#1f2328" if colour == NOISE_FLOOR_COLOUR else "#173f6b"
            svg.line(x, svg.top, x, svg.bottom, stroke=stroke, width=1.5, dash="5 3")
            name = "floor" if position else "mean"
            svg.text(
                x + (4 if position else -4),
                svg.top - 4,
                f"{name} {_num(summary.mean, 2)}",
                anchor="start" if position else "end",
                size=10,
                fill=stroke,
            )
    svg.legend(
        [
            (f"{label} · mean {_num(summary.mean)} (n={summary.n})", colour, "box")
            for label, colour, summary in series
        ],
        x=svg.left,
        y=14,
    )
    if largest == 0:
        svg.text(
            (svg.left + svg.right) / 2,
            (svg.top + svg.bottom) / 2,
            "no explained instances",
            anchor="middle",
        )
    return svg.render()


def _draw_histogram(
    svg: _Svg, histogram: Histogram, colour: str, position: int, series: int, label: str
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


def _setting_text(value: object) -> str:
    """A setting as the JSON document spells it: true/false, lists comma-separated."""
    if isinstance(value, list | tuple):
        return ", ".join(_setting_text(item) for item in value)
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- instances ------------------------------------------------------------------------------


def _instance_jaccard(instance: Instance) -> float | None:
    """Mean between-model jaccard@k over the methods that explained this instance."""
    if instance.explanations is None:
        return None
    values = [
        value
        for per_method in instance.explanations.alignment.values()
        if (value := per_method.get("jaccard_at_k")) is not None and math.isfinite(value)
    ]
    return sum(values) / len(values) if values else None


def _instances_section(result: AuditResult) -> str:
    explained = [i for i in result.instances if i.explanations is not None]
    head = (
        '<section id="instances" class="card"><h2>The instances that differ most</h2>'
        '<p class="lede">Explained instances with the lowest Jaccard between the two models '
        "(mean over methods), lowest first. Each word is shaded by its attribution to the "
        "explained class; underlined words are in that model's top-k.</p>"
    )
    if not explained:
        return head + '<p class="empty">No instance was explained in this audit.</p></section>\n'
    ranked = sorted(
        explained,
        key=lambda i: (j if (j := _instance_jaccard(i)) is not None else math.inf, i.index),
    )
    shown = ranked[:INSTANCES_SHOWN]
    legend = (
        '<p class="shade-legend">'
        f'<span class="word" style="{_shade_style(1.0)}">supports</span> the explained class · '
        f'<span class="word" style="{_shade_style(-1.0)}">opposes</span> it · '
        'opacity ∝ |attribution| within each row · <span class="word top">underlined</span> '
        f"= in the model's top-k · showing {len(shown)} of {len(explained)} explained</p>"
    )
    top_k = {method: aligned.top_k for method, aligned in result.alignment.items()}
    cards = "".join(
        _instance_card(instance, instance.explanations, result, top_k)
        for instance in shown
        if instance.explanations is not None
    )
    return head + legend + cards + "</section>\n"


def _instance_card(
    instance: Instance, explanation: Explanation, result: AuditResult, top_k: Mapping[str, int]
) -> str:
    labels = result.manifest.labels
    differ = instance.reference_prediction != instance.candidate_prediction
    chips = [
        f"gold <b>{_e(instance.label)}</b>",
        f'reference <b class="ref">{_e(instance.reference_prediction)}</b> '
        f"{_probability(instance.reference_proba, labels, instance.reference_prediction)}",
        f'candidate <b class="cand">{_e(instance.candidate_prediction)}</b> '
        f"{_probability(instance.candidate_proba, labels, instance.candidate_prediction)}",
        f"explained class <b>{_e(explanation.target)}</b>",
    ]
    if differ:
        chips.append('<b class="differ">predictions differ</b>')
    for method, values in explanation.alignment.items():
        k = top_k.get(method)
        chips.append(
            f"{_e(_method_name(method))} Jaccard{'@' + str(k) if k else ''} "
            f"<b>{_num(values.get('jaccard_at_k'), 2)}</b>"
        )
    methods = [
        (method, attributions)
        for method in ("lime", "shap")
        if (attributions := getattr(explanation, method)) is not None
    ]
    blocks = "".join(
        _attribution_block(
            method, attributions, explanation.words, explanation.segments, top_k.get(method, 10)
        )
        for method, attributions in methods
    )
    return (
        '<article class="instance">'
        f'<header><h3>Row {instance.index}</h3><p class="chips">'
        + " · ".join(chips)
        + f"</p></header>{blocks}</article>"
    )


def _probability(proba: Sequence[float], labels: Sequence[str], predicted: str) -> str:
    if predicted in labels and labels.index(predicted) < len(proba):
        return f"({proba[labels.index(predicted)]:.2f})"
    return ""


def _attribution_block(
    method: str,
    attributions: Attributions,
    words: Sequence[str],
    segments: Sequence[int],
    top_k: int,
) -> str:
    rows = []
    for model, values, css in (
        ("Reference", attributions.reference, "ref"),
        ("Candidate", attributions.candidate, "cand"),
    ):
        rows.append(
            f'<tr><th class="{css}">{model}</th>'
            f"<td>{_shaded_words(words, segments, values, top_k)}</td></tr>"
        )
    return (
        f'<div class="attribution"><h4>{_e(_method_name(method))}</h4>'
        f'<table class="words">{"".join(rows)}</table></div>'
    )


def _shaded_words(
    words: Sequence[str], segments: Sequence[int], values: Sequence[float], top_k: int
) -> str:
    """Words as spans shaded by their attribution, normalised by the row's largest |value|."""
    if len(values) != len(words):
        # A malformed vector must not shift colours onto the wrong words: show text only.
        return _segments_html(words, segments, [_e(word) for word in words])
    largest = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    k = min(top_k, len(values))
    top = set(sorted(range(len(values)), key=lambda i: (-abs(values[i]), i))[:k])
    spans = []
    for position, (word, value) in enumerate(zip(words, values, strict=True)):
        weight = value / largest if largest > 0 and math.isfinite(value) else 0.0
        # When every word is in the top-k, underlining all of them would say nothing.
        top_class = " top" if position in top and largest > 0 and k < len(values) else ""
        spans.append(
            f'<span class="word{top_class}" style="{_shade_style(weight)}" '
            f'title="{_e(word)}: {value:+.4f}">{_e(word)}</span>'
        )
    return _segments_html(words, segments, spans)


def _segments_html(words: Sequence[str], segments: Sequence[int], spans: Sequence[str]) -> str:
    """Words of a sentence pair on two labelled lines; a single text on one line."""
    if len(segments) != len(words) or not any(segment == 1 for segment in segments):
        return f'<div class="seg">{" ".join(spans)}</div>'
    parts = []
    for segment, label in ((0, "text"), (1, "pair")):
        chosen = [span for span, s in zip(spans, segments, strict=True) if s == segment]
        parts.append(
            f'<div class="seg"><span class="seg-label">{label}</span>{" ".join(chosen)}</div>'
        )
    return "".join(parts)


def _shade_style(weight: float) -> str:
    """Background for a word: purple supports, orange opposes, opacity ∝ |weight| in [0, 1]."""
    red, green, blue = SUPPORTS_RGB if weight >= 0 else OPPOSES_RGB
    alpha = 0.85 * min(abs(weight), 1.0)
    # Dark shading gets white text so strongly attributed words stay legible.
    colour = "#ffffff" if alpha > 0.5 else "#1f2328"
    return f"background:rgba({red},{green},{blue},{alpha:.2f});color:{colour}"


# --- manifest -------------------------------------------------------------------------------


def _manifest_section(result: AuditResult) -> str:
    manifest = result.manifest
    reference, candidate = manifest.reference, manifest.candidate

    def checkpoint_row(name: str, ref: str, cand: str) -> str:
        return f"<tr><th>{name}</th><td>{ref}</td><td>{cand}</td></tr>"

    def optional(value: object) -> str:
        return _e(value) if value is not None else f'<span class="na">{MISSING}</span>'

    checkpoints = (
        '<table class="kv checkpoints"><thead><tr><th></th><th class="ref">Reference</th>'
        '<th class="cand">Candidate</th></tr></thead><tbody>'
        + checkpoint_row(
            "Path", f"<code>{_e(reference.path)}</code>", f"<code>{_e(candidate.path)}</code>"
        )
        + checkpoint_row(
            "Fingerprint", _short_hash(reference.fingerprint), _short_hash(candidate.fingerprint)
        )
        + checkpoint_row("Transform", optional(reference.transform), optional(candidate.transform))
        + checkpoint_row(
            "Model type", optional(reference.model_type), optional(candidate.model_type)
        )
        + checkpoint_row(
            "Parameters",
            optional(_thousands(reference.num_parameters)),
            optional(_thousands(candidate.num_parameters)),
        )
        + checkpoint_row("Labels", _e(", ".join(reference.labels)), _e(", ".join(candidate.labels)))
        + "</tbody></table>"
    )
    dataset = manifest.dataset
    fields = f"text <code>{_e(dataset.text_field)}</code>"
    if dataset.text_pair_field:
        fields += f", pair <code>{_e(dataset.text_pair_field)}</code>"
    fields += f", label <code>{_e(dataset.label_field)}</code>"
    run_rows = [
        ("Dataset", f"<code>{_e(dataset.path)}</code> ({_e(dataset.format)})"),
        ("Dataset fingerprint", _short_hash(dataset.fingerprint)),
        ("Rows", f"{dataset.rows:,} audited of {dataset.rows_in_file:,} in the file"),
        ("Fields", fields),
        ("Labels", _e(", ".join(manifest.labels))),
        ("Seed", _e(manifest.seed)),
        ("Device", _e(manifest.device)),
        ("Created", _e(_timestamp(manifest.created_at))),
        ("Schema version", _e(result.schema_version)),
    ]
    if manifest.label_mapping:
        run_rows.append(
            (
                "Label mapping",
                _e(", ".join(f"{k} → {v}" for k, v in manifest.label_mapping.items())),
            )
        )
    run = _kv_table(run_rows)
    settings = _settings_tables(manifest.config)
    versions = _kv_table(
        [(_e(name), f"<code>{_e(version)}</code>") for name, version in manifest.versions.items()]
    )
    return (
        '<section id="manifest" class="card"><h2>Manifest</h2>'
        '<div class="split even"><div><h3>Checkpoints</h3>'
        f"{checkpoints}<h3>Run</h3>{run}</div>"
        f"<div><h3>Timings</h3>{_timings(manifest.timings)}<h3>Versions</h3>{versions}</div>"
        f'</div><h3>Settings</h3><div class="settings">{settings}</div></section>\n'
    )


def _timestamp(text: str) -> str:
    """An ISO 8601 time as "2025-11-22 09:14 UTC"; anything unparsable is shown as it is."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _thousands(value: int | None) -> str | None:
    return f"{value:,}" if value is not None else None


def _kv_table(rows: Iterable[tuple[str, str]]) -> str:
    """Rows of already-escaped (key, value) HTML."""
    body = "".join(f"<tr><th>{key}</th><td>{value}</td></tr>" for key, value in rows)
    if not body:
        return f'<p class="empty">{MISSING}</p>'
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _settings_tables(config: Mapping[str, object]) -> str:
    """The audit config as one small table per top-level group, scalars gathered first."""
    scalars = {key: value for key, value in config.items() if not isinstance(value, Mapping)}
    groups: list[tuple[str, Mapping[str, object]]] = [("run", scalars)] if scalars else []
    groups += [(key, value) for key, value in config.items() if isinstance(value, Mapping)]
    tables = []
    for name, values in groups:
        rows = "".join(
            f"<tr><th><code>{_e(key)}</code></th><td>{_e(text)}</td></tr>"
            for key, text in _flatten(values)
        )
        tables.append(
            f'<table class="kv setting-group"><thead><tr><th colspan="2">{_e(name)}</th></tr>'
            f"</thead><tbody>{rows}</tbody></table>"
        )
    return "".join(tables) or f'<p class="empty">{MISSING}</p>'


def _flatten(value: object, prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings as dotted keys and display strings, in document order."""
    if isinstance(value, Mapping):
        if not value and prefix:
            return [(prefix, "{}")]
        items: list[tuple[str, str]] = []
        for key, inner in value.items():
            items.extend(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return items
    return [(prefix, _setting_text(value))]


def _timings(timings: Mapping[str, float]) -> str:
    if not timings:
        return f'<p class="empty">{MISSING}</p>'
    longest = max((t for t in timings.values() if math.isfinite(t)), default=0.0) or 1.0
    rows = "".join(
        f'<tr><th>{_e(stage)}</th><td class="num">{_duration(seconds)}</td>'
        f'<td class="timebar"><i style="width:{100 * _clamp(seconds / longest):.1f}%"></i></td>'
        "</tr>"
        for stage, seconds in timings.items()
    )
    return f'<table class="kv timings"><tbody>{rows}</tbody></table>'


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return MISSING
    if seconds >= 60:
        return f"{int(seconds // 60)} min {seconds % 60:.0f} s"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


# --- style ----------------------------------------------------------------------------------

_CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d0d7de; --soft:#f6f8fa;
  --pass:#1a7f37; --fail:#cf222e; --ref:#4a4f57; --cand:#2f6fb3; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin:0; background:#eef1f4; color:var(--ink); font-size:14px; line-height:1.45;
  font-family: -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue",
  "Noto Sans", "Liberation Sans", Arial, sans-serif; }
code, .hash { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono",
  monospace; font-size: 0.92em; }
.page { max-width: 1160px; margin: 0 auto; padding: 0 20px; }
.masthead { background:#fff; border-bottom:1px solid var(--line); padding: 14px 0 0; }
.masthead h1 { font-size: 20px; margin: 2px 0 4px; font-weight: 600; overflow-wrap:anywhere; }
.masthead .vs { color: var(--muted); font-weight: 400; }
.eyebrow { margin:0; color:var(--muted); font-size:12px; letter-spacing:.06em;
  text-transform:uppercase; }
.meta { margin: 0 0 8px; color: var(--muted); overflow-wrap:anywhere; }
nav { display:flex; gap: 18px; font-size: 13px; }
nav a { color: var(--muted); text-decoration:none; padding: 6px 0 8px;
  border-bottom: 2px solid transparent; }
nav a:hover { color: var(--ink); border-bottom-color: var(--cand); }
main.page { padding-top: 16px; padding-bottom: 40px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding: 18px 22px;
  margin-bottom: 16px; }
h2 { font-size: 18px; margin: 0 0 2px; }
h3 { font-size: 15px; margin: 14px 0 6px; }
h4 { font-size: 13px; margin: 8px 0 4px; color: var(--muted); }
.lede { margin: 0 0 12px; color: var(--muted); }
.note { color: var(--muted); font-size: 12.5px; margin: 6px 0; }
.empty { color: var(--muted); font-style: italic; }
.na { color: #8c959f; }
.split { display:grid; grid-template-columns: minmax(0, 440px) minmax(0, 1fr); gap: 24px;
  align-items: start; }
.split.wide { grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); }
.split.even { grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); }
.calibration-table { max-width: 760px; margin-bottom: 14px; }
.figures { display:flex; flex-wrap: wrap; gap: 16px 40px; }
figure { margin: 0; }
figcaption { color: var(--muted); font-size: 12px; max-width: 440px; }
svg.plot { display:block; max-width:100%; height:auto; font-family: inherit; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 5px 7px; border-bottom: 1px solid #eaeef2;
  vertical-align: top; }
th.group { text-align: center; border-bottom: 1px solid var(--line); }
thead th { font-size: 12px; color: var(--muted); font-weight: 600;
  border-bottom: 1px solid var(--line); }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th.ref, b.ref { color: var(--ref); } th.cand, b.cand { color: var(--cand); }
tr.minor th, tr.minor td { color: var(--muted); font-weight: 400; font-size: 13px; }
.verdict { display:flex; align-items:center; gap: 22px; padding: 14px 20px;
  border-radius: 8px; margin-bottom: 14px; }
.verdict.pass { background:#dafbe1; border:1px solid #8fd19e; }
.verdict.fail { background:#ffebe9; border:1px solid #f5a3a3; }
.verdict-word { font-size: 40px; font-weight: 800; letter-spacing: .04em; line-height: 1; }
.verdict.pass .verdict-word { color: var(--pass); }
.verdict.fail .verdict-word { color: var(--fail); }
.verdict-summary { margin: 0; font-size: 15px; }
.pillars { list-style:none; display:grid; grid-template-columns: repeat(3, 1fr); gap: 10px;
  padding: 0; margin: 0 0 14px; }
.pillar { border:1px solid var(--line); border-left-width: 5px; border-radius:6px;
  padding: 8px 12px; display:flex; align-items: baseline; gap: 10px; }
.pillar span { font-weight: 600; }
.pillar small { color: var(--muted); margin-left: auto; }
.pillar.pass { border-left-color: var(--pass); } .pillar.pass b { color: var(--pass); }
.pillar.fail { border-left-color: var(--fail); background:#fff8f7; }
.pillar.fail b { color: var(--fail); }
.pillar.none b { color: var(--muted); font-weight: 400; }
table.checks td { vertical-align: middle; }
tr.check.fail { background: #fff5f4; }
tr.check.fail td:first-child { box-shadow: inset 4px 0 0 var(--fail); }
tr.check.fail .check-name { font-weight: 700; }
.check-name { font-size: 13px; }
.description { color: var(--muted); font-size: 12px; }
td.strip-cell { width: 190px; }
td.strip-cell svg.plot { width: 180px; max-width: none; }
.rule { white-space: nowrap; font-variant-numeric: tabular-nums; }
.badge { display:inline-block; min-width: 46px; text-align:center; border-radius: 10px;
  padding: 1px 8px; font-size: 12px; font-weight: 700; }
.badge.pass { color: var(--pass); background:#dafbe1; }
.badge.fail { color: #fff; background: var(--fail); }
.stats { display:grid; grid-template-columns: repeat(4, 1fr); gap: 8px; margin-top: 14px; }
.stat { background: var(--soft); border-radius: 6px; padding: 8px 10px; }
.stat span { display:block; font-size:12px; color:var(--muted); }
.stat b { font-size: 20px; font-variant-numeric: tabular-nums; }
.stat small { display:block; color: var(--muted); font-size: 11px; }
table.matrix { width:auto; min-width: 60%; margin-bottom: 12px; }
table.matrix caption { caption-side: bottom; text-align:left; color:var(--muted);
  font-size:12px; padding-top: 4px; }
table.matrix td { min-width: 64px; font-size: 15px; }
table.matrix td.agree { background: var(--soft); color: var(--muted); }
table.matrix .corner { font-weight: 400; white-space: nowrap; }
.flips { display:grid; grid-template-columns: repeat(3, 1fr); gap: 8px; }
.flip { background: var(--soft); border-radius: 6px; padding: 8px 10px; }
.flip span { display:block; font-size: 12px; color: var(--muted); }
.flip b { font-size: 20px; font-variant-numeric: tabular-nums; }
.flip small { display:block; color: var(--muted); font-size: 11px; }
.bar { height: 6px; background: #e6e9ed; border-radius: 3px; margin: 4px 0; }
.bar i { display:block; height: 100%; background: var(--cand); border-radius: 3px; }
.method { border-top: 1px solid #eaeef2; padding-top: 6px; margin-top: 10px; }
.method:first-of-type { border-top: 0; margin-top: 0; }
.shade-legend { font-size: 12.5px; color: var(--muted); }
.instance { border: 1px solid #eaeef2; border-radius: 6px; padding: 10px 14px;
  margin-top: 10px; }
.instance header h3 { margin: 0; font-size: 14px; }
.chips { margin: 2px 0 0; color: var(--muted); font-size: 12.5px; }
.chips b { color: var(--ink); }
.chips b.differ { color: var(--ink); background: #fff4d6; padding: 0 4px; border-radius: 3px; }
.attribution h4 { margin: 8px 0 2px; }
table.words th { width: 92px; font-size: 12px; font-weight: 600; padding-left: 0; }
table.words td { padding: 4px 0; }
.seg { line-height: 1.9; }
.seg + .seg { border-top: 1px dashed var(--line); }
.seg-label { display:inline-block; width: 34px; color: var(--muted); font-size: 11px;
  text-transform: uppercase; letter-spacing: .04em; }
.word { padding: 1px 3px; border-radius: 3px; white-space: pre-wrap; }
.word.top { text-decoration: underline; text-decoration-thickness: 2px;
  text-underline-offset: 3px; }
table.checkpoints th:first-child { width: 22%; }
table.kv th { width: 38%; font-weight: 600; font-size: 13px; overflow-wrap:anywhere; }
table.kv td { overflow-wrap: anywhere; }
.timings th { width: 30%; }
.settings { columns: 3 300px; column-gap: 24px; }
table.setting-group { break-inside: avoid; margin-bottom: 10px; }
table.setting-group thead th { text-transform: uppercase; letter-spacing: .04em; }
table.setting-group th { width: 62%; }
.timebar { width: 45%; }
.timebar i { display:block; height: 8px; margin-top: 5px; background: var(--ref);
  border-radius: 2px; opacity: .55; }
.table-scroll { overflow-x: auto; }
@media (max-width: 700px) {
  .pillars, .flips { grid-template-columns: 1fr; }
  .verdict { flex-direction: column; align-items: flex-start; gap: 8px; }
}
@media (max-width: 1100px) {
  .split, .split.wide, .split.even { grid-template-columns: minmax(0, 1fr); }
  .stats { grid-template-columns: repeat(2, 1fr); }
}
@media print {
  @page { margin: 12mm; }
  body { background: #fff; font-size: 11.5px; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  nav { display: none; }
  .masthead { border: 0; padding: 0; }
  .page { max-width: none; padding: 0; }
  .card { border: 0; border-radius: 0; padding: 0; margin: 0 0 14px; }
  section { break-before: auto; }
  figure, tr, .instance, .verdict, .pillars, .stats, .flips { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  /* A printed page is ~700px wide: too narrow for a plot or a wide table beside another. */
  .split, .split.wide { grid-template-columns: minmax(0, 1fr); }
  .split.even { grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); }
  .figures { gap: 8px 24px; }
  svg.plot { max-width: 330px; }
  figcaption { max-width: 330px; }
  td.strip-cell svg.plot { width: 150px; }
}
"""
