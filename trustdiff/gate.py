"""The verdict: judge parity, calibration and alignment against "no worse than" thresholds."""

from __future__ import annotations

import math
from typing import Literal

from trustdiff.config import CheckSetting, GateSettings
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


def _negated(interval: Interval) -> Interval:
    """The interval of `−x` given that of `x`: a drop is a negated delta."""

    def negate(value: float) -> float:
        return 0.0 - value  # never −0.0, which would print as "-0.0000"

    return Interval(
        value=negate(interval.value),
        ci_low=None if interval.ci_high is None else negate(interval.ci_high),
        ci_high=None if interval.ci_low is None else negate(interval.ci_low),
    )


def _judge(
    name: str,
    pillar: Pillar,
    measured: Interval | None,
    setting: CheckSetting,
    *,
    threshold: float,
    comparison: Comparison,
    description: str,
) -> GateCheck:
    """One check. With `judged_on="interval"` the unfavourable bound is judged: `ci_high` for
    a `<=` check, `ci_low` for a `>=` check. When that bound is missing (no bootstrap), the
    point value is judged and `judged_on` records "value", so the document never claims an
    interval it did not use. A missing or NaN value fails.
    """
    value = None if measured is None else measured.value
    ci_low = None if measured is None else measured.ci_low
    ci_high = None if measured is None else measured.ci_high
    judged_on = setting.judged_on
    judged: float | None = value
    if judged_on == "interval":
        bound = ci_high if comparison == "<=" else ci_low
        if bound is None:
            judged_on = "value"
            description += " (no interval available: judged the point value)"
        else:
            judged = bound
    if judged is None or math.isnan(judged):
        passed = False
    elif comparison == "<=":
        passed = judged <= threshold
    else:
        passed = judged >= threshold
    return GateCheck(
        name=name,
        pillar=pillar,
        value=value,
        threshold=threshold,
        comparison=comparison,
        ci_low=ci_low,
        ci_high=ci_high,
        judged_on=judged_on,
        passed=passed,
        description=description,
    )


def evaluate_gate(
    parity: Parity,
    calibration: Calibration,
    alignment: dict[str, MethodAlignment],
    settings: GateSettings,
) -> Gate:
    """Judge every enabled check; the gate passes when all of them pass.

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
    checks: list[GateCheck] = []
    if settings.accuracy_drop.enabled:
        checks.append(
            _judge(
                "accuracy_drop",
                "parity",
                _negated(parity.accuracy_delta),
                settings.accuracy_drop,
                threshold=settings.accuracy_drop.threshold,
                comparison="<=",
                description="reference accuracy − candidate accuracy",
            )
        )
    if settings.macro_f1_drop.enabled:
        checks.append(
            _judge(
                "macro_f1_drop",
                "parity",
                _negated(parity.macro_f1_delta),
                settings.macro_f1_drop,
                threshold=settings.macro_f1_drop.threshold,
                comparison="<=",
                description="reference macro-F1 − candidate macro-F1",
            )
        )
    if settings.agreement.enabled:
        agreement = parity.agreement_interval or Interval(value=parity.agreement)
        checks.append(
            _judge(
                "agreement",
                "parity",
                agreement,
                settings.agreement,
                threshold=settings.agreement.threshold,
                comparison=">=",
                description="fraction of instances both models predict the same class",
            )
        )
    for name, metric in (("ece_increase", "ece"), ("brier_increase", "brier")):
        setting: CheckSetting = getattr(settings, name)
        if setting.enabled:
            checks.append(
                _judge(
                    name,
                    "calibration",
                    calibration.delta.get(metric),
                    setting,
                    threshold=setting.threshold,
                    comparison="<=",
                    description=f"candidate {metric} − reference {metric}",
                )
            )
    for method, method_alignment in alignment.items():
        name = f"{method}_jaccard_margin"
        method_setting: CheckSetting | None = getattr(settings, name, None)
        if method_setting is None or not method_setting.enabled:
            continue
        summary = method_alignment.jaccard_at_k
        floor = method_alignment.noise_floor
        floor_mean = None if floor is None else floor.jaccard_at_k.mean
        if floor_mean is None:
            threshold = 1.0 - method_setting.threshold
            basis = "1 (no noise floor measured)"
        else:
            threshold = floor_mean - method_setting.threshold
            basis = f"the reference's noise floor {floor_mean:.4f}"
        measured = (
            None
            if summary.mean is None
            else Interval(value=summary.mean, ci_low=summary.ci_low, ci_high=summary.ci_high)
        )
        checks.append(
            _judge(
                name,
                "alignment",
                measured,
                method_setting,
                threshold=threshold,
                comparison=">=",
                description=(
                    f"{method.upper()} mean jaccard@{method_alignment.top_k} between the models, "
                    f"at most {method_setting.threshold} below {basis}"
                ),
            )
        )
    return Gate(passed=all(check.passed for check in checks), checks=checks)
