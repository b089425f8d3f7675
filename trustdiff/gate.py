"""The verdict: judge parity, calibration and alignment against "no worse than" thresholds.

Each check is a row of `CHECKS`: what it measures, in which direction it is judged and how
its threshold follows from the setting. Default thresholds live in `GateSettings`, one field
per check, so the API schema and the CLI show them from one place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Literal, get_args

from trustdiff.config import CheckSetting, ExplainMethod, GateSettings
from trustdiff.result import (
    AlignmentMetrics,
    Calibration,
    Divergence,
    Gate,
    GateCheck,
    Interval,
    JudgedRelativeTo,
    MethodAlignment,
    Parity,
    Pillar,
    SliceResult,
    Slices,
)

Comparison = Literal["<=", ">="]


@dataclass(frozen=True)
class Evidence:
    """Everything the checks measure: the audit's parity, calibration and alignment (each
    with its `twin` section when a twin was audited), the sections beyond the averages (None
    in documents that predate them: their checks fail), and the gate's settings."""

    parity: Parity
    calibration: Calibration
    alignment: dict[str, MethodAlignment]
    settings: GateSettings
    slices: Slices | None = None
    divergence: Divergence | None = None

    @property
    def judged_relative_to_twin(self) -> bool:
        return self.settings.relative_to_twin and self.parity.twin is not None


@dataclass(frozen=True)
class Rule:
    """A check's threshold for one audit, the sentence describing what is judged, and what
    the threshold is relative to (with the twin's figure and the margin when relative)."""

    threshold: float
    description: str
    relative_to: JudgedRelativeTo = "absolute"
    twin_value: float | None = None
    margin: float | None = None


Measure = Callable[[Evidence], Interval | None]


@dataclass(frozen=True)
class CheckSpec:
    """One gate check: its name (a `GateSettings` field), pillar, measurement and direction.

    `measure(evidence)` gives the value with its interval (None when it could not be
    measured: the check fails); `twin_measure(evidence)` the same figure for the twin from the
    `twin` sections (None when the twin has none). Relative to the twin, a `<=` check (a drop
    or an increase) may reach the twin's |figure| plus the margin, and a `>=` check the twin's
    figure minus the margin; the margin is `margin_of(threshold)` (the configured threshold
    itself, except for agreement, whose margin is `1 − threshold`), so a twin identical to
    the reference gives back the absolute rule. A check the twin has no figure for keeps its
    own rule and says so. `rule`, when set, replaces the absolute rule (the alignment checks
    judge against the noise floor). `method` marks an alignment check, which exists only when
    that method was run.
    """

    name: str
    pillar: Pillar
    comparison: Comparison
    measure: Measure
    description: str = ""
    rule: Callable[[Evidence, float], Rule] | None = None
    method: str | None = None
    margin_of: Callable[[float], float] = lambda threshold: threshold
    twin_measure: Measure | None = None

    def judged_rule(self, evidence: Evidence, threshold: float) -> Rule:
        if evidence.judged_relative_to_twin and self.twin_measure is not None:
            return self._relative_to_twin(evidence, threshold, self.twin_measure)
        rule = (
            Rule(threshold=threshold, description=self.description)
            if self.rule is None
            else self.rule(evidence, threshold)
        )
        if evidence.judged_relative_to_twin:
            note = " (the twin has no figure for this check: its own rule applies)"
            return replace(rule, description=rule.description + note)
        return rule

    def _relative_to_twin(self, evidence: Evidence, threshold: float, twin: Measure) -> Rule:
        measured = twin(evidence)
        margin = self.margin_of(threshold)
        if measured is None or math.isnan(measured.value):
            return Rule(
                threshold=math.nan,
                description=f"{self.description}; the twin's figure is missing: fails",
                relative_to="twin",
                margin=margin,
            )
        twin_value = measured.value
        if self.comparison == "<=":
            judged = abs(twin_value) + margin
            sentence = f"at most the twin's |{twin_value:.4f}| + {margin:g}"
        else:
            judged = twin_value - margin
            sentence = f"at least the twin's {twin_value:.4f} − {margin:g}"
        return Rule(
            threshold=judged,
            description=f"{self.description}, {sentence} (relative to the twin)",
            relative_to="twin",
            twin_value=twin_value,
            margin=margin,
        )


def _negated(interval: Interval) -> Interval:
    """The interval of `−x` given that of `x`: a drop is a negated delta."""

    def negate(value: float) -> float:
        return 0.0 - value  # never −0.0, which would print as "-0.0000"

    return Interval(
        value=negate(interval.value),
        ci_low=None if interval.ci_high is None else negate(interval.ci_high),
        ci_high=None if interval.ci_low is None else negate(interval.ci_low),
    )


def _twin(read: Callable[[Parity, Calibration], Interval | None]) -> Measure:
    """A twin measure from the twin's parity and calibration sections."""

    def measure(evidence: Evidence) -> Interval | None:
        parity, calibration = evidence.parity.twin, evidence.calibration.twin
        return None if parity is None or calibration is None else read(parity, calibration)

    return measure


def _agreement_of(parity: Parity) -> Interval:
    return parity.agreement_interval or Interval(value=parity.agreement)


def _mean_of(metrics: AlignmentMetrics | None) -> Interval | None:
    summary = None if metrics is None else metrics.jaccard_at_k
    if summary is None or summary.mean is None:
        return None
    return Interval(value=summary.mean, ci_low=summary.ci_low, ci_high=summary.ci_high)


def _mean_jaccard(method: str) -> Measure:
    return lambda evidence: _mean_of(evidence.alignment[method])


def _twin_mean_jaccard(method: str) -> Measure:
    return lambda evidence: _mean_of(evidence.alignment[method].twin)


def _below_noise_floor(method: str) -> Callable[[Evidence, float], Rule]:
    """The mean must reach `noise_floor_mean − margin`; with no floor measured (a
    deterministic explainer, or the floor switched off) the explicit absolute minimum
    `GateSettings.alignment_minimum`."""

    def rule(evidence: Evidence, margin: float) -> Rule:
        method_alignment = evidence.alignment[method]
        floor = method_alignment.noise_floor
        floor_mean = (
            None if floor is None or floor.jaccard_at_k is None else floor.jaccard_at_k.mean
        )
        measured = f"{method.upper()} mean jaccard@{method_alignment.top_k} between the models"
        if floor_mean is None:
            minimum = evidence.settings.alignment_minimum
            why = (
                f"{method.upper()} is deterministic under these settings (its re-run equals "
                "its first run), so it has no noise floor"
                if floor is not None and floor.deterministic
                else "no noise floor was measured"
            )
            return Rule(
                threshold=minimum,
                description=f"{measured}, at least the absolute minimum {minimum:g} ({why})",
                relative_to="absolute",
            )
        return Rule(
            threshold=floor_mean - margin,
            description=(
                f"{measured}, at most {margin:g} below the reference's noise floor {floor_mean:.4f}"
            ),
            relative_to="noise_floor",
            margin=margin,
        )

    return rule


def _jaccard_margin(method: str) -> CheckSpec:
    return CheckSpec(
        name=f"{method}_jaccard_margin",
        pillar="alignment",
        comparison=">=",
        measure=_mean_jaccard(method),
        description=f"{method.upper()} mean jaccard@k between the models",
        rule=_below_noise_floor(method),
        method=method,
        twin_measure=_twin_mean_jaccard(method),
    )


def _comprehensiveness_drop(method: str) -> CheckSpec:
    def measure(evidence: Evidence) -> Interval | None:
        faithfulness = evidence.alignment[method].faithfulness
        return None if faithfulness is None else _negated(faithfulness.comprehensiveness_delta)

    return CheckSpec(
        name=f"{method}_comprehensiveness_drop",
        pillar="alignment",
        comparison="<=",
        measure=measure,
        description=(
            f"reference − candidate mean comprehensiveness of the {method.upper()} explanations "
            f"(each model's own top words erased)"
        ),
        method=method,
    )


def _judged_slices(evidence: Evidence) -> list[SliceResult]:
    return [] if evidence.slices is None else [s for s in evidence.slices.slices if s.judged]


def _worst_slice_accuracy_drop(evidence: Evidence) -> Interval | None:
    judged = _judged_slices(evidence)
    if not judged:
        return None
    worst = min(judged, key=lambda item: item.accuracy_delta.value)
    return _negated(worst.accuracy_delta)


def _worst_slice_agreement(evidence: Evidence) -> Interval | None:
    judged = _judged_slices(evidence)
    return min((item.agreement for item in judged), key=lambda item: item.value, default=None)


def _slice_rule(
    what: str, pick: Callable[[SliceResult], float]
) -> Callable[[Evidence, float], Rule]:
    """Names the worst slice (or says none had enough rows) in the check's description."""

    def rule(evidence: Evidence, threshold: float) -> Rule:
        judged = _judged_slices(evidence)
        size = None if evidence.slices is None else evidence.slices.min_slice_size
        if not judged:
            return Rule(threshold, f"{what}: no slice has at least {size} rows")
        worst = min(judged, key=pick)
        return Rule(
            threshold,
            f"{what} over slices of at least {size} rows: {worst.column} = {worst.value} "
            f"({worst.n} rows)",
        )

    return rule


def _kl_p99(evidence: Evidence) -> Interval | None:
    return None if evidence.divergence is None else Interval(value=evidence.divergence.kl.p99)


def _parity_drop(name: str, delta: Callable[[Parity], Interval], label: str) -> CheckSpec:
    """`name`: reference − candidate of the metric whose candidate − reference `delta` the
    parity section holds, for the candidate and for the twin alike."""
    return CheckSpec(
        name=name,
        pillar="parity",
        comparison="<=",
        measure=lambda evidence: _negated(delta(evidence.parity)),
        description=f"reference {label} − candidate {label}",
        twin_measure=_twin(lambda parity, _: _negated(delta(parity))),
    )


def _calibration_increase(metric: str) -> CheckSpec:
    """`<metric>_increase`: candidate − reference of a calibration metric, paired CI."""
    return CheckSpec(
        name=f"{metric}_increase",
        pillar="calibration",
        comparison="<=",
        measure=lambda evidence: evidence.calibration.delta.get(metric),
        description=f"candidate {metric} − reference {metric}",
        twin_measure=_twin(lambda _, calibration: calibration.delta.get(metric)),
    )


CHECKS: tuple[CheckSpec, ...] = (
    _parity_drop("accuracy_drop", lambda parity: parity.accuracy_delta, "accuracy"),
    _parity_drop("macro_f1_drop", lambda parity: parity.macro_f1_delta, "macro-F1"),
    CheckSpec(
        name="agreement",
        pillar="parity",
        comparison=">=",
        measure=lambda evidence: _agreement_of(evidence.parity),
        description="fraction of instances both models predict the same class",
        margin_of=lambda threshold: 1.0 - threshold,
        twin_measure=_twin(lambda parity, _: _agreement_of(parity)),
    ),
    _calibration_increase("ece"),
    _calibration_increase("brier"),
    CheckSpec(
        name="negative_flip_rate",
        pillar="parity",
        comparison="<=",
        measure=lambda evidence: evidence.parity.negative_flip_rate,
        description="share of all rows the reference gets right and the candidate wrong",
        twin_measure=_twin(lambda parity, _: parity.negative_flip_rate),
    ),
    CheckSpec(
        name="worst_slice_accuracy_drop",
        pillar="parity",
        comparison="<=",
        measure=_worst_slice_accuracy_drop,
        rule=_slice_rule("largest accuracy drop", lambda item: item.accuracy_delta.value),
    ),
    CheckSpec(
        name="worst_slice_agreement",
        pillar="parity",
        comparison=">=",
        measure=_worst_slice_agreement,
        rule=_slice_rule("lowest agreement", lambda item: item.agreement.value),
    ),
    CheckSpec(
        name="kl_p99",
        pillar="parity",
        comparison="<=",
        measure=_kl_p99,
        description="99th percentile over rows of KL(reference ‖ candidate), nats",
    ),
    *(_jaccard_margin(method) for method in get_args(ExplainMethod)),
    *(_comprehensiveness_drop(method) for method in get_args(ExplainMethod)),
)


def _judged_value(
    measured: Interval | None, setting: CheckSetting, comparison: Comparison
) -> tuple[float | None, Literal["value", "interval"]]:
    """The number compared with the threshold, and what it is. With `judged_on="interval"`
    the unfavourable bound is judged: `ci_high` for a `<=` check, `ci_low` for a `>=` check;
    when that bound is missing (no bootstrap), the point value is judged and "value" returned,
    so the document never claims an interval it did not use.
    """
    value = None if measured is None else measured.value
    if setting.judged_on == "interval" and measured is not None:
        bound = measured.ci_high if comparison == "<=" else measured.ci_low
        if bound is not None:
            return bound, "interval"
    return value, "value"


def _passes(judged: float | None, threshold: float, comparison: Comparison) -> bool:
    """A missing or NaN value fails."""
    if judged is None or math.isnan(judged):
        return False
    return judged <= threshold if comparison == "<=" else judged >= threshold


def _judge(spec: CheckSpec, evidence: Evidence, setting: CheckSetting) -> GateCheck:
    measured = spec.measure(evidence)
    rule = spec.judged_rule(evidence, setting.threshold)
    judged, judged_on = _judged_value(measured, setting, spec.comparison)
    description = rule.description
    if judged_on != setting.judged_on:
        description += " (no interval available: judged the point value)"
    return GateCheck(
        name=spec.name,
        pillar=spec.pillar,
        value=None if measured is None else measured.value,
        threshold=rule.threshold,
        comparison=spec.comparison,
        ci_low=None if measured is None else measured.ci_low,
        ci_high=None if measured is None else measured.ci_high,
        judged_on=judged_on,
        passed=_passes(judged, rule.threshold, spec.comparison),
        description=description,
        judged_relative_to=rule.relative_to,
        twin_value=rule.twin_value,
        margin=rule.margin,
    )


def _applicable_checks(evidence: Evidence) -> Iterator[CheckSpec]:
    """The parity and calibration checks in table order, then one alignment check per
    method that ran, in the order the methods ran."""
    yield from (spec for spec in CHECKS if spec.method is None)
    for method in evidence.alignment:
        yield from (spec for spec in CHECKS if spec.method == method)


def evaluate_gate(
    parity: Parity,
    calibration: Calibration,
    alignment: dict[str, MethodAlignment],
    settings: GateSettings,
    *,
    slices: Slices | None = None,
    divergence: Divergence | None = None,
) -> Gate:
    """Judge every enabled check of `CHECKS`; the gate passes when all of them pass.

    Checks, in order (disabled ones are omitted):

    - `accuracy_drop`, `macro_f1_drop` (parity, `<=`): reference − candidate; the interval is
      the negated paired-bootstrap interval of the candidate − reference delta.
    - `agreement` (parity, `>=`): fraction of identical predictions, with its bootstrap
      interval when the parity section carries one.
    - `ece_increase`, `brier_increase` (calibration, `<=`): candidate − reference, paired CI.
    - `negative_flip_rate` (parity, `<=`): reference right → candidate wrong, over all rows.
    - `worst_slice_accuracy_drop` (`<=`) and `worst_slice_agreement` (`>=`) (parity): the
      worst slice among those with at least `min_slice_size` rows, with that slice's CI.
    - `kl_p99` (parity, `<=`): the 99th percentile of per-row KL(reference ‖ candidate).
    - for each method in `alignment`, in that order: `<method>_jaccard_margin` (alignment,
      `>=`): the between-model mean jaccard@k must reach `noise_floor_mean − margin`, or the
      absolute `settings.alignment_minimum` when no floor was measured (a deterministic
      explainer, or the floor switched off); the interval is the mean's CI; then
      `<method>_comprehensiveness_drop` (alignment, `<=`): reference − candidate mean
      comprehensiveness, negated paired CI.

    With a twin (`parity.twin` set) and `settings.relative_to_twin`, every check is judged
    relative to the twin instead (`CheckSpec`): the candidate may differ from the reference
    by what the retrained twin differs, plus the margin. Each check records the rule it was
    judged by (`judged_relative_to`, `twin_value`, `margin`).

    A gate with no enabled check passes (an empty AND).
    """
    evidence = Evidence(
        parity=parity,
        calibration=calibration,
        alignment=alignment,
        settings=settings,
        slices=slices,
        divergence=divergence,
    )
    checks = []
    for spec in _applicable_checks(evidence):
        setting: CheckSetting = getattr(settings, spec.name)
        if setting.enabled:
            checks.append(_judge(spec, evidence, setting))
    return Gate(
        passed=all(check.passed for check in checks),
        checks=checks,
        twin_identical=_twin_identical(parity, calibration, alignment),
    )


def _twin_identical(
    parity: Parity, calibration: Calibration, alignment: dict[str, MethodAlignment]
) -> bool | None:
    """None without a twin; True when the twin shows no difference from the reference on
    any pillar (then the relative rules allow nothing beyond the margins)."""
    if parity.twin is None or calibration.twin is None:
        return None
    twin_parity, twin_calibration = parity.twin, calibration.twin
    if twin_parity.agreement != 1.0 or twin_parity.probability_loyalty != 1.0:
        return False
    deltas = [twin_parity.accuracy_delta, twin_parity.macro_f1_delta]
    deltas += list(twin_calibration.delta.values())
    if any(delta.value != 0.0 for delta in deltas):
        return False
    for aligned in alignment.values():
        twin = aligned.twin
        if twin is None:
            continue
        shared = twin.shared_perturbations or twin
        if shared.cosine_similarity.mean is not None and shared.cosine_similarity.mean < 1.0:
            return False
    return True
