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
    Gate,
    GateCheck,
    Interval,
    MethodAlignment,
    Parity,
    Pillar,
)

Comparison = Literal["<=", ">="]


@dataclass(frozen=True)
class Evidence:
    """Everything the checks measure: the audit's parity, calibration and alignment."""

    parity: Parity
    calibration: Calibration
    alignment: dict[str, MethodAlignment]


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
    *(_jaccard_margin(method) for method in get_args(ExplainMethod)),
)
_CHECKS_BY_NAME = {spec.name: spec for spec in CHECKS}


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
        spec = _CHECKS_BY_NAME.get(f"{method}_jaccard_margin")
        if spec is not None:
            yield spec


def evaluate_gate(
    parity: Parity,
    calibration: Calibration,
    alignment: dict[str, MethodAlignment],
    settings: GateSettings,
) -> Gate:
    """Judge every enabled check of `CHECKS`; the gate passes when all of them pass.

    Checks, in order (disabled ones are omitted):

    - `accuracy_drop`, `macro_f1_drop` (parity, `<=`): reference − candidate; the interval is
      the negated paired-bootstrap interval of the candidate − reference delta.
    - `agreement` (parity, `>=`): fraction of identical predictions, with its bootstrap
      interval when the parity section carries one.
    - `ece_increase`, `brier_increase` (calibration, `<=`): candidate − reference, paired CI.
    - `<method>_jaccard_margin` for each method in `alignment` that has a setting (alignment,
      `>=`): the between-model mean jaccard@k must reach `noise_floor_mean − margin`, or
      `1 − margin` when no noise floor was measured; the interval is the mean's CI.

    A gate with no enabled check passes (an empty AND).
    """
    evidence = Evidence(parity=parity, calibration=calibration, alignment=alignment)
    checks = []
    for spec in _applicable_checks(evidence):
        setting: CheckSetting = getattr(settings, spec.name)
        if setting.enabled:
            checks.append(_judge(spec, evidence, setting))
    return Gate(passed=all(check.passed for check in checks), checks=checks)
