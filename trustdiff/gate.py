"""The verdict: judge parity, calibration and alignment against "no worse than" thresholds.

Each check is a row of `CHECKS`: what it measures, in which direction it is judged and how
its threshold follows from the setting. Default thresholds live in `GateSettings`, one field
per check, so the API schema and the CLI show them from one place.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, get_args

from trustdiff.config import CheckSetting, ExplainMethod, GateSettings
from trustdiff.result import (
    Calibration,
    Divergence,
    Gate,
    GateCheck,
    Interval,
    MethodAlignment,
    Parity,
    Pillar,
    SliceResult,
    Slices,
)

Comparison = Literal["<=", ">="]


@dataclass(frozen=True)
class Evidence:
    """Everything the checks measure: the audit's parity, calibration and alignment, and the
    sections beyond the averages (None in documents that predate them: their checks fail)."""

    parity: Parity
    calibration: Calibration
    alignment: dict[str, MethodAlignment]
    slices: Slices | None = None
    divergence: Divergence | None = None


@dataclass(frozen=True)
class Rule:
    """A check's threshold for one audit, and the sentence describing what is judged."""

    threshold: float
    description: str


@dataclass(frozen=True)
class CheckSpec:
    """One gate check: its name (a `GateSettings` field), pillar, measurement and direction.

    `measure(evidence)` gives the value with its interval (None when it could not be
    measured: the check fails). `rule(evidence, threshold)` turns the configured threshold
    into the one judged; by default it is used as given. `method` marks an alignment check,
    which exists only when that method was run.
    """

    name: str
    pillar: Pillar
    comparison: Comparison
    measure: Callable[[Evidence], Interval | None]
    description: str = ""
    rule: Callable[[Evidence, float], Rule] | None = None
    method: str | None = None

    def judged_rule(self, evidence: Evidence, threshold: float) -> Rule:
        if self.rule is None:
            return Rule(threshold=threshold, description=self.description)
        return self.rule(evidence, threshold)


def _negated(interval: Interval) -> Interval:
    """The interval of `−x` given that of `x`: a drop is a negated delta."""

    def negate(value: float) -> float:
        return 0.0 - value  # never −0.0, which would print as "-0.0000"

    return Interval(
        value=negate(interval.value),
        ci_low=None if interval.ci_high is None else negate(interval.ci_high),
        ci_high=None if interval.ci_low is None else negate(interval.ci_low),
    )


def _agreement(evidence: Evidence) -> Interval:
    parity = evidence.parity
    return parity.agreement_interval or Interval(value=parity.agreement)


def _calibration_increase(metric: str) -> Callable[[Evidence], Interval | None]:
    return lambda evidence: evidence.calibration.delta.get(metric)


def _mean_jaccard(method: str) -> Callable[[Evidence], Interval | None]:
    def measure(evidence: Evidence) -> Interval | None:
        summary = evidence.alignment[method].jaccard_at_k
        if summary.mean is None:
            return None
        return Interval(value=summary.mean, ci_low=summary.ci_low, ci_high=summary.ci_high)

    return measure


def _below_noise_floor(method: str) -> Callable[[Evidence, float], Rule]:
    """The mean must reach `noise_floor_mean − margin`, or `1 − margin` with no floor."""

    def rule(evidence: Evidence, margin: float) -> Rule:
        method_alignment = evidence.alignment[method]
        floor = method_alignment.noise_floor
        floor_mean = None if floor is None else floor.jaccard_at_k.mean
        if floor_mean is None:
            threshold, basis = 1.0 - margin, "1 (no noise floor measured)"
        else:
            threshold, basis = floor_mean - margin, f"the reference's noise floor {floor_mean:.4f}"
        description = (
            f"{method.upper()} mean jaccard@{method_alignment.top_k} between the models, "
            f"at most {margin} below {basis}"
        )
        return Rule(threshold=threshold, description=description)

    return rule


def _jaccard_margin(method: str) -> CheckSpec:
    return CheckSpec(
        name=f"{method}_jaccard_margin",
        pillar="alignment",
        comparison=">=",
        measure=_mean_jaccard(method),
        rule=_below_noise_floor(method),
        method=method,
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


CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec(
        name="accuracy_drop",
        pillar="parity",
        comparison="<=",
        measure=lambda evidence: _negated(evidence.parity.accuracy_delta),
        description="reference accuracy − candidate accuracy",
    ),
    CheckSpec(
        name="macro_f1_drop",
        pillar="parity",
        comparison="<=",
        measure=lambda evidence: _negated(evidence.parity.macro_f1_delta),
        description="reference macro-F1 − candidate macro-F1",
    ),
    CheckSpec(
        name="agreement",
        pillar="parity",
        comparison=">=",
        measure=_agreement,
        description="fraction of instances both models predict the same class",
    ),
    CheckSpec(
        name="ece_increase",
        pillar="calibration",
        comparison="<=",
        measure=_calibration_increase("ece"),
        description="candidate ece − reference ece",
    ),
    CheckSpec(
        name="brier_increase",
        pillar="calibration",
        comparison="<=",
        measure=_calibration_increase("brier"),
        description="candidate brier − reference brier",
    ),
    CheckSpec(
        name="negative_flip_rate",
        pillar="parity",
        comparison="<=",
        measure=lambda evidence: evidence.parity.negative_flip_rate,
        description="share of all rows the reference gets right and the candidate wrong",
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
      `>=`): the between-model mean jaccard@k must reach `noise_floor_mean − margin`, or
      `1 − margin` when no noise floor was measured; the interval is the mean's CI; then
      `<method>_comprehensiveness_drop` (alignment, `<=`): reference − candidate mean
      comprehensiveness, negated paired CI.

    A gate with no enabled check passes (an empty AND).
    """
    evidence = Evidence(
        parity=parity,
        calibration=calibration,
        alignment=alignment,
        slices=slices,
        divergence=divergence,
    )
    checks = []
    for spec in _applicable_checks(evidence):
        setting: CheckSetting = getattr(settings, spec.name)
        if setting.enabled:
            checks.append(_judge(spec, evidence, setting))
    return Gate(passed=all(check.passed for check in checks), checks=checks)
