"""What the command line prints while and after an audit runs: stage progress, the summary."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import IO, Any

from trustdiff.formatting import TERMINAL, format_interval, format_number
from trustdiff.result import AuditResult, CheckpointManifest, Gate, GateCheck, Interval

# The summary goes to any terminal: the shared number rules, in ASCII with four decimals.
_number = partial(format_number, style=TERMINAL)
_interval_text = partial(format_interval, style=TERMINAL)
_CALIBRATION_ROWS = (("ece", "ECE"), ("mce", "MCE"), ("brier", "Brier"), ("nll", "NLL"))


class StageProgress:
    """Progress of audit stages on a stream: a tqdm bar on a terminal, plain lines otherwise."""

    def __init__(self, stream: IO[str], *, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.interactive = enabled and stream.isatty()
        self._bar: Any = None
        self._stage: str | None = None
        self._started = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self._stage:
            self.close()
            self._stage = stage
            self._started = time.perf_counter()
            if self.interactive:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=stage, file=self.stream, leave=False)
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()
        elif done >= total:
            elapsed = time.perf_counter() - self._started
            print(f"trustdiff: {stage} {done}/{total} ({elapsed:.1f} s)", file=self.stream)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _table(rows: Sequence[Sequence[str]], *, right_aligned: Sequence[int] = ()) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if column in right_aligned else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def _checkpoint_name(checkpoint: CheckpointManifest) -> str:
    return checkpoint.path + (f" [{checkpoint.transform}]" if checkpoint.transform else "")


def _header_lines(result: AuditResult) -> list[str]:
    manifest = result.manifest
    twin = []
    if manifest.twin is not None:
        cache = manifest.twin_cache
        source = "" if cache is None else (" (figures from the cache)" if cache.hit else "")
        twin = [f"twin:      {_checkpoint_name(manifest.twin)}{source}"]
    return [
        f"reference: {_checkpoint_name(manifest.reference)}",
        f"candidate: {_checkpoint_name(manifest.candidate)}",
        *twin,
        f"dataset:   {manifest.dataset.path} ({manifest.dataset.rows} of "
        f"{manifest.dataset.rows_in_file} rows)   device: {manifest.device}   "
        f"time: {manifest.timings.get('total', 0.0):.1f} s",
    ]


def _metric_row(label: str, reference: float, candidate: float, delta: Interval) -> list[str]:
    return [
        label,
        _number(reference),
        _number(candidate),
        _number(delta.value, signed=True),
        _interval_text(delta.ci_low, delta.ci_high),
    ]


def _metric_lines(result: AuditResult) -> list[str]:
    """Both models' parity and calibration metrics with the delta and its interval, and the
    twin's delta (what a retrain alone changes) when a twin was audited."""
    parity, calibration = result.parity, result.calibration
    rows = [
        ["metric", "reference", "candidate", "delta", "95% interval"],
        _metric_row(
            "accuracy", parity.reference.accuracy, parity.candidate.accuracy, parity.accuracy_delta
        ),
        _metric_row(
            "macro-F1", parity.reference.macro_f1, parity.candidate.macro_f1, parity.macro_f1_delta
        ),
    ]
    rows += [
        _metric_row(
            label,
            getattr(calibration.reference, metric),
            getattr(calibration.candidate, metric),
            calibration.delta[metric],
        )
        for metric, label in _CALIBRATION_ROWS
    ]
    smooth = calibration.smooth
    if smooth is not None:
        rows.append(
            _metric_row(
                "SmoothECE",
                smooth.reference.smooth_ece,
                smooth.candidate.smooth_ece,
                smooth.delta,
            )
        )
    if parity.twin is None or calibration.twin is None:
        return _table(rows, right_aligned=(1, 2, 3))
    twin_deltas: list[Interval | None] = [
        parity.twin.accuracy_delta,
        parity.twin.macro_f1_delta,
        *(calibration.twin.delta.get(metric) for metric, _ in _CALIBRATION_ROWS),
    ]
    if smooth is not None:
        twin_smooth = calibration.twin.smooth
        twin_deltas.append(None if twin_smooth is None else twin_smooth.delta)
    rows[0].append("twin delta")
    for row, twin_delta in zip(rows[1:], twin_deltas, strict=True):
        row.append("-" if twin_delta is None else _number(twin_delta.value, signed=True))
    return _table(rows, right_aligned=(1, 2, 3, 5))


def _agreement_lines(result: AuditResult) -> list[str]:
    """Prediction agreement, then each explanation method's mean jaccard@k."""
    parity = result.parity
    lines = [
        f"agreement {parity.agreement:.4f}   kappa {parity.kappa:.4f}   "
        f"loyalty {parity.probability_loyalty:.4f}   flips: {parity.fixed} fixed, "
        f"{parity.broken} broken (McNemar p = {parity.mcnemar_p:.3g})",
    ]
    if parity.twin is not None:
        lines.append(f"twin agreement {parity.twin.agreement:.4f} (reference vs twin)")
    for method, alignment in result.alignment.items():
        floor = alignment.noise_floor
        if floor is None:
            floor_text = ""
        elif floor.deterministic:
            floor_text = "   deterministic: no noise floor"
        else:
            floor_mean = None if floor.jaccard_at_k is None else floor.jaccard_at_k.mean
            floor_text = f"   noise floor {_number(floor_mean)}"
        twin_text = (
            "" if alignment.twin is None else f"   twin {_number(alignment.twin.jaccard_at_k.mean)}"
        )
        eligible = (
            ""
            if alignment.eligible_instances is None
            else f" (of {alignment.eligible_instances} rows with more than {alignment.top_k} words)"
        )
        lines.append(
            f"{method} jaccard@{alignment.top_k} {_number(alignment.jaccard_at_k.mean)} "
            f"over {alignment.n_instances} instances{eligible}{floor_text}{twin_text}"
        )
    return lines


def _rate(interval: Interval | None) -> str:
    if interval is None:
        return _number(None)
    return f"{_number(interval.value)} {_interval_text(interval.ci_low, interval.ci_high)}"


def _breakdown_lines(result: AuditResult) -> list[str]:
    """Flip rates, the output-distance tail, the worst slices, faithfulness, exemplars; each
    only when the document has it (documents from before them have none)."""
    parity, lines = result.parity, []
    if parity.negative_flip_rate is not None:
        lines.append(
            f"flip rates: negative {_rate(parity.negative_flip_rate)}   "
            f"positive {_rate(parity.positive_flip_rate)}"
        )
    if result.divergence is not None:
        kl, js = result.divergence.kl, result.divergence.js_distance
        lines.append(
            f"KL(ref || cand): mean {_number(kl.mean)}  median {_number(kl.median)}  "
            f"p90 {_number(kl.p90)}  p99 {_number(kl.p99)}  max {_number(kl.max)}   "
            f"JS distance p99 {_number(js.p99)}"
        )
    if result.slices is not None:
        judged = [item for item in result.slices.slices if item.judged]
        worst = ", ".join(
            f"{item.column}={item.value} {_rate(item.agreement)} (n={item.n})"
            + (" FAILS" if item.failing else "")
            for item in judged[:3]
        )
        lines.append(
            f"lowest slice agreement (slices of at least {result.slices.min_slice_size} rows): "
            + (worst or "no slice large enough")
        )
    for method, alignment in result.alignment.items():
        faithfulness = alignment.faithfulness
        if faithfulness is not None:
            lines.append(
                f"{method} faithfulness: comprehensiveness ref "
                f"{_number(faithfulness.reference.comprehensiveness.mean)} cand "
                f"{_number(faithfulness.candidate.comprehensiveness.mean)} "
                f"(delta {_rate(faithfulness.comprehensiveness_delta)}), sufficiency ref "
                f"{_number(faithfulness.reference.sufficiency.mean)} cand "
                f"{_number(faithfulness.candidate.sufficiency.mean)}"
            )
    if result.exemplars is not None and result.exemplars.groups:
        groups = result.exemplars.groups
        lines.append(
            f"disagreements to review: {sum(group.count for group in groups)} rows in "
            f"{len(groups)} (reference -> candidate) groups; the report lists the largest shifts"
        )
    return lines


def _relative_text(check: GateCheck) -> str:
    """What the threshold is relative to: "twin 0.0200 + 0.01", "floor - 0.15", "absolute"."""
    if check.judged_relative_to == "twin":
        if check.twin_value is None:
            return "twin (missing)"
        upper = check.comparison == "<="
        twin = abs(check.twin_value) if upper else check.twin_value
        return f"twin {twin:.4f} {'+' if upper else '-'} {check.margin:g}"
    if check.judged_relative_to == "noise_floor":
        return f"noise floor - {check.margin:g}"
    return "absolute"


def _check_row(check: GateCheck) -> list[str]:
    return [
        check.name,
        _number(check.value),
        f"{check.comparison} {check.threshold:.4f}",
        _relative_text(check),
        _interval_text(check.ci_low, check.ci_high),
        check.judged_on,
        "PASS" if check.passed else "FAIL",
    ]


def format_gate(gate: Gate) -> str:
    """Every gate check as a table (value, rule, what the rule is relative to, interval, what
    was judged, result), then the verdict; the `audit` summary ends with it and `trustdiff
    gate` prints it."""
    checks = gate.checks
    rows = [["check", "value", "rule", "relative to", "interval", "judged", "result"]]
    rows += [_check_row(check) for check in checks]
    failed = sum(not check.passed for check in checks)
    verdict = "PASS" if gate.passed else "FAIL"
    notes = []
    if gate.twin_identical and any(c.judged_relative_to == "twin" for c in checks):
        notes = [
            "the twin shows no difference from the reference: no difference is allowed "
            "beyond each margin"
        ]
    return "\n".join(
        [
            *_table(rows, right_aligned=(1,)),
            *notes,
            "",
            f"verdict: {verdict} ({len(checks) - failed} of {len(checks)} checks passed)",
        ]
    )


def _gate_lines(result: AuditResult) -> list[str]:
    return ["gate", format_gate(result.gate)]


def format_summary(result: AuditResult) -> str:
    """A plain-text summary: the audited pair, key metrics, every gate check and the verdict."""
    sections = (_header_lines, _metric_lines, _agreement_lines, _breakdown_lines, _gate_lines)
    parts = ("\n".join(section(result)) for section in sections)
    return "\n\n".join(part for part in parts if part)
