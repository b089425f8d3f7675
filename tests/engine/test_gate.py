"""The gate: each check's value, threshold, comparison, interval judging, and the AND."""

from __future__ import annotations

import pytest

from trustdiff.config import CheckSetting, GateSettings
from trustdiff.gate import evaluate_gate
from trustdiff.result import (
    AlignmentMetrics,
    Calibration,
    DistanceSummary,
    Divergence,
    Faithfulness,
    Histogram,
    Interval,
    MethodAlignment,
    MetricSummary,
    ModelCalibration,
    ModelFaithfulness,
    ModelParity,
    NoiseFloor,
    Parity,
    SliceResult,
    Slices,
    TwinAlignment,
)

ACCURACY_DELTA = Interval(value=-0.005, ci_low=-0.02, ci_high=0.01)
MACRO_F1_DELTA = Interval(value=0.0, ci_low=-0.01, ci_high=0.01)
ECE_DELTA = Interval(value=0.01, ci_low=-0.005, ci_high=0.03)
BRIER_DELTA = Interval(value=0.0, ci_low=-0.01, ci_high=0.01)
NEGATIVE_FLIP_RATE = Interval(value=0.02, ci_low=0.01, ci_high=0.06)


def _parity(
    *,
    accuracy_delta: Interval = ACCURACY_DELTA,
    macro_f1_delta: Interval = MACRO_F1_DELTA,
    agreement: float = 0.97,
    agreement_interval: Interval | None = None,
    negative_flip_rate: Interval | None = NEGATIVE_FLIP_RATE,
    twin: Parity | None = None,
) -> Parity:
    model = ModelParity(accuracy=0.9, macro_f1=0.9, per_class_recall={"a": 0.9, "b": 0.9})
    return Parity(
        reference=model,
        candidate=model,
        accuracy_delta=accuracy_delta,
        macro_f1_delta=macro_f1_delta,
        agreement=agreement,
        agreement_interval=agreement_interval,
        fixed=1,
        broken=2,
        negative_flip_rate=negative_flip_rate,
        mcnemar_p=1.0,
        kappa=0.9,
        probability_loyalty=0.95,
        disagreement_matrix=[[10, 1], [2, 10]],
        twin=twin,
    )


def _calibration(
    *,
    ece: Interval = ECE_DELTA,
    brier: Interval = BRIER_DELTA,
    twin: Calibration | None = None,
) -> Calibration:
    model = ModelCalibration(
        ece=0.05, mce=0.1, classwise_ece=0.05, brier=0.2, nll=0.4, bins=[], reliability=[]
    )
    zero = Interval(value=0.0)
    return Calibration(
        binning="equal_width",
        n_bins=15,
        reference=model,
        candidate=model,
        delta={"ece": ece, "mce": zero, "classwise_ece": zero, "brier": brier, "nll": zero},
        twin=twin,
    )


def _summary(
    mean: float | None, low: float | None = None, high: float | None = None
) -> MetricSummary:
    return MetricSummary(
        mean=mean,
        median=mean,
        ci_low=low,
        ci_high=high,
        n=0 if mean is None else 20,
        histogram=Histogram(edges=[0.0, 1.0], counts=[0 if mean is None else 20]),
    )


def _metrics(jaccard: MetricSummary) -> dict[str, MetricSummary]:
    names = list(AlignmentMetrics.model_fields)
    return {name: (jaccard if name == "jaccard_at_k" else _summary(0.5)) for name in names}


def _alignment(
    mean: float | None,
    low: float | None,
    high: float | None,
    floor: float | None,
    *,
    deterministic: bool = False,
    twin: float | None = None,
) -> MethodAlignment:
    noise_floor = None if floor is None else NoiseFloor(**_metrics(_summary(floor)))
    if deterministic:
        noise_floor = NoiseFloor(deterministic=True)
    return MethodAlignment(
        **_metrics(_summary(mean, low, high)),
        top_k=10,
        n_instances=20,
        settings={},
        noise_floor=noise_floor,
        twin=None if twin is None else TwinAlignment(**_metrics(_summary(twin))),
    )


def _check(gate, name):  # type: ignore[no-untyped-def]
    return next(check for check in gate.checks if check.name == name)


def test_default_gate_runs_the_default_parity_and_calibration_checks_in_order() -> None:
    gate = evaluate_gate(_parity(), _calibration(), {}, GateSettings())
    assert [check.name for check in gate.checks] == [
        "accuracy_drop",
        "macro_f1_drop",
        "agreement",
        "ece_increase",
        "brier_increase",
        "negative_flip_rate",
    ]
    assert [check.pillar for check in gate.checks] == [
        "parity", "parity", "parity", "calibration", "calibration", "parity",
    ]  # fmt: skip
    assert gate.passed


def test_accuracy_drop_is_the_negated_delta_with_a_negated_interval() -> None:
    gate = evaluate_gate(_parity(), _calibration(), {}, GateSettings())
    check = _check(gate, "accuracy_drop")
    assert check.value == pytest.approx(0.005)
    assert (check.ci_low, check.ci_high) == (pytest.approx(-0.01), pytest.approx(0.02))
    assert check.comparison == "<="
    assert check.threshold == 0.01
    assert check.judged_on == "value"
    assert check.passed


def test_interval_judging_uses_the_unfavourable_bound() -> None:
    settings = GateSettings(
        accuracy_drop=CheckSetting(threshold=0.01, judged_on="interval"),
        agreement=CheckSetting(threshold=0.95, judged_on="interval"),
    )
    parity = _parity(agreement_interval=Interval(value=0.97, ci_low=0.94, ci_high=0.99))
    gate = evaluate_gate(parity, _calibration(), {}, settings)
    # drop interval is [-0.01, 0.02]: its high end 0.02 > 0.01 fails although 0.005 passes
    assert not _check(gate, "accuracy_drop").passed
    assert _check(gate, "accuracy_drop").judged_on == "interval"
    # agreement's low end 0.94 < 0.95 fails although 0.97 passes
    assert not _check(gate, "agreement").passed
    assert not gate.passed


def test_interval_judging_without_an_interval_judges_the_value_and_says_so() -> None:
    settings = GateSettings(agreement=CheckSetting(threshold=0.95, judged_on="interval"))
    check = _check(evaluate_gate(_parity(), _calibration(), {}, settings), "agreement")
    assert check.judged_on == "value"
    assert "no interval" in check.description
    assert check.passed


def test_calibration_increase_fails_above_its_threshold() -> None:
    calibration = _calibration(ece=Interval(value=0.03, ci_low=0.01, ci_high=0.05))
    gate = evaluate_gate(_parity(), calibration, {}, GateSettings())
    assert not _check(gate, "ece_increase").passed
    assert _check(gate, "brier_increase").passed
    assert not gate.passed


def test_threshold_equality_passes() -> None:
    parity = _parity(agreement=0.95)
    assert _check(evaluate_gate(parity, _calibration(), {}, GateSettings()), "agreement").passed


def test_disabled_checks_are_omitted() -> None:
    settings = GateSettings(
        accuracy_drop=CheckSetting(threshold=0.0, enabled=False),
        ece_increase=CheckSetting(threshold=0.0, enabled=False),
    )
    gate = evaluate_gate(_parity(), _calibration(), {}, settings)
    assert "accuracy_drop" not in [check.name for check in gate.checks]
    assert "ece_increase" not in [check.name for check in gate.checks]


def test_alignment_is_judged_against_the_noise_floor_minus_the_margin() -> None:
    alignment = {
        "lime": _alignment(0.60, 0.5, 0.7, floor=0.80),  # threshold 0.65: fails
        "shap": _alignment(0.70, 0.6, 0.8, floor=0.80),  # threshold 0.65: passes
    }
    gate = evaluate_gate(_parity(), _calibration(), alignment, GateSettings())
    lime, shap = _check(gate, "lime_jaccard_margin"), _check(gate, "shap_jaccard_margin")
    assert lime.threshold == pytest.approx(0.65)
    assert lime.pillar == "alignment"
    assert lime.comparison == ">="
    assert (lime.ci_low, lime.ci_high) == (0.5, 0.7)
    assert not lime.passed
    assert shap.passed
    assert not gate.passed


def test_alignment_without_a_noise_floor_uses_the_explicit_absolute_minimum() -> None:
    alignment = {
        "lime": _alignment(0.55, 0.5, 0.6, floor=None),
        "shap": _alignment(0.45, 0.4, 0.5, floor=None, deterministic=True),
    }
    gate = evaluate_gate(_parity(), _calibration(), alignment, GateSettings())
    lime, shap = _check(gate, "lime_jaccard_margin"), _check(gate, "shap_jaccard_margin")
    assert lime.threshold == shap.threshold == 0.5
    assert lime.judged_relative_to == shap.judged_relative_to == "absolute"
    assert lime.passed and not shap.passed
    assert "absolute minimum 0.5" in shap.description
    assert "deterministic" in shap.description and "noise floor" in shap.description
    assert "1.000" not in shap.description
    stricter = GateSettings(alignment_minimum=0.6)
    assert not _check(
        evaluate_gate(_parity(), _calibration(), alignment, stricter), "lime_jaccard_margin"
    ).passed


def _twin_parity(accuracy_delta: float, agreement: float) -> Parity:
    delta = Interval(value=accuracy_delta)
    return _parity(accuracy_delta=delta, macro_f1_delta=delta, agreement=agreement)


def test_with_a_twin_every_check_is_judged_relative_to_it() -> None:
    twin_parity = _twin_parity(-0.02, 0.96)
    twin_calibration = _calibration(ece=Interval(value=-0.015), brier=Interval(value=0.0))
    parity = _parity(accuracy_delta=Interval(value=-0.025), agreement=0.92, twin=twin_parity)
    calibration = _calibration(ece=Interval(value=0.03), twin=twin_calibration)
    alignment = {"lime": _alignment(0.60, 0.5, 0.7, floor=0.80, twin=0.70)}
    gate = evaluate_gate(parity, calibration, alignment, GateSettings())
    checks = {check.name: check for check in gate.checks}
    assert {check.judged_relative_to for check in gate.checks} == {"twin"}
    # Drops and increases: the twin's |figure| + the margin.
    assert checks["accuracy_drop"].twin_value == pytest.approx(0.02)
    assert checks["accuracy_drop"].threshold == pytest.approx(0.03)
    assert checks["accuracy_drop"].passed  # 0.025 <= 0.03; absolutely it would fail 0.01
    assert checks["ece_increase"].threshold == pytest.approx(0.035)
    assert checks["ece_increase"].margin == 0.02
    # Agreement: the twin's agreement − (1 − 0.95).
    assert checks["agreement"].threshold == pytest.approx(0.91)
    assert checks["agreement"].passed
    # Alignment: the twin's mean jaccard − the margin.
    assert checks["lime_jaccard_margin"].threshold == pytest.approx(0.55)
    assert checks["lime_jaccard_margin"].twin_value == 0.70
    assert checks["lime_jaccard_margin"].passed
    assert "relative to the twin" in checks["accuracy_drop"].description
    assert gate.twin_identical is False
    absolute = evaluate_gate(parity, calibration, alignment, GateSettings(relative_to_twin=False))
    assert {check.judged_relative_to for check in absolute.checks} == {"absolute", "noise_floor"}
    assert not _check(absolute, "accuracy_drop").passed


def test_an_identical_twin_collapses_the_relative_rules_to_the_margins() -> None:
    zero = Interval(value=0.0)
    twin_parity = _parity(
        accuracy_delta=zero, macro_f1_delta=zero, agreement=1.0, negative_flip_rate=zero
    )
    twin_parity = twin_parity.model_copy(update={"probability_loyalty": 1.0})
    twin_calibration = _calibration(ece=zero, brier=zero)
    parity, calibration = _parity(twin=twin_parity), _calibration(twin=twin_calibration)
    relative = evaluate_gate(parity, calibration, {}, GateSettings())
    absolute = evaluate_gate(_parity(), _calibration(), {}, GateSettings())
    assert relative.twin_identical is True and absolute.twin_identical is None
    for twin_check, plain in zip(relative.checks, absolute.checks, strict=True):
        assert twin_check.judged_relative_to == "twin"
        assert twin_check.threshold == pytest.approx(plain.threshold)
        assert twin_check.passed == plain.passed


def test_alignment_without_explained_instances_fails() -> None:
    alignment = {"shap": _alignment(None, None, None, floor=0.8)}
    gate = evaluate_gate(_parity(), _calibration(), alignment, GateSettings())
    assert not _check(gate, "shap_jaccard_margin").passed


def test_an_empty_gate_passes() -> None:
    from trustdiff.gate import CHECKS

    off = CheckSetting(threshold=0.0, enabled=False)
    settings = GateSettings(**{spec.name: off for spec in CHECKS})
    gate = evaluate_gate(
        _parity(), _calibration(), {"lime": _alignment(0.1, 0, 0.2, 0.9)}, settings
    )
    assert gate.checks == []
    assert gate.passed


def test_every_check_of_the_table_has_a_setting_and_every_setting_a_check() -> None:
    from trustdiff.gate import CHECKS

    check_settings = [
        name
        for name, field in GateSettings.model_fields.items()
        if field.annotation is CheckSetting
    ]
    assert [spec.name for spec in CHECKS] == check_settings


# --- beyond the averages ----------------------------------------------------------------------


def _slice(column: str, value: str, n: int, accuracy_delta: float, agreement: float) -> SliceResult:
    return SliceResult(
        column=column,
        value=value,
        n=n,
        judged=n >= 50,
        reference_accuracy=0.9,
        candidate_accuracy=0.9 + accuracy_delta,
        accuracy_delta=Interval(
            value=accuracy_delta, ci_low=accuracy_delta - 0.05, ci_high=accuracy_delta + 0.05
        ),
        agreement=Interval(
            value=agreement, ci_low=agreement - 0.04, ci_high=min(1.0, agreement + 0.04)
        ),
        negative_flip_rate=Interval(value=0.0),
        reference_ece=0.05,
        candidate_ece=0.05,
        ece_delta=Interval(value=0.0),
    )


SLICES_ON = GateSettings(
    worst_slice_accuracy_drop=CheckSetting(threshold=0.05),
    worst_slice_agreement=CheckSetting(threshold=0.90),
)


def _slices() -> Slices:
    return Slices(
        columns=["source", "gold label", "length"],
        min_slice_size=50,
        slices=[
            _slice("source", "forum", 80, -0.08, 0.88),  # the worst judged slice on both
            _slice("source", "tiny", 10, -0.50, 0.40),  # worse, but too small to judge
            _slice("gold label", "positive", 300, -0.01, 0.97),
        ],
    )


def test_negative_flip_rate_is_on_by_default_and_judged_on_its_value() -> None:
    check = _check(
        evaluate_gate(_parity(), _calibration(), {}, GateSettings()), "negative_flip_rate"
    )
    assert (check.value, check.threshold, check.comparison) == (0.02, 0.05, "<=")
    assert check.judged_on == "value"
    assert check.passed  # the upper bound 0.06 would fail; the value is judged
    failing = _parity(negative_flip_rate=Interval(value=0.051))
    assert not _check(
        evaluate_gate(failing, _calibration(), {}, GateSettings()), "negative_flip_rate"
    ).passed


def test_slice_checks_judge_the_worst_slice_with_enough_rows() -> None:
    gate = evaluate_gate(_parity(), _calibration(), {}, SLICES_ON, slices=_slices())
    drop, agreement = (
        _check(gate, "worst_slice_accuracy_drop"),
        _check(gate, "worst_slice_agreement"),
    )
    assert drop.value == pytest.approx(0.08)
    assert (drop.ci_low, drop.ci_high) == (pytest.approx(0.03), pytest.approx(0.13))
    assert "source = forum (80 rows)" in drop.description
    assert not drop.passed
    assert agreement.value == pytest.approx(0.88)
    assert agreement.comparison == ">="
    assert not agreement.passed


def test_slice_checks_are_off_by_default_and_fail_with_no_slice_to_judge() -> None:
    gate = evaluate_gate(_parity(), _calibration(), {}, GateSettings(), slices=_slices())
    assert "worst_slice_agreement" not in [check.name for check in gate.checks]
    empty = Slices(columns=[], min_slice_size=50, slices=[_slice("source", "tiny", 10, 0.0, 1.0)])
    check = _check(
        evaluate_gate(_parity(), _calibration(), {}, SLICES_ON, slices=empty),
        "worst_slice_agreement",
    )
    assert check.value is None and not check.passed
    assert "no slice has at least 50 rows" in check.description


def test_kl_p99_judges_the_tail() -> None:
    def summary(p99: float) -> DistanceSummary:
        return DistanceSummary(
            mean=0.01,
            median=0.0,
            p90=0.02,
            p99=p99,
            max=1.0,
            histogram=Histogram(edges=[0, 1], counts=[5]),
        )

    settings = GateSettings(kl_p99=CheckSetting(threshold=0.25))
    for p99, passed in ((0.2, True), (0.3, False)):
        divergence = Divergence(kl=summary(p99), js_distance=summary(0.1), most_divergent=[])
        check = _check(
            evaluate_gate(_parity(), _calibration(), {}, settings, divergence=divergence), "kl_p99"
        )
        assert (check.value, check.passed) == (p99, passed)


def test_comprehensiveness_drop_per_method() -> None:
    def faithfulness(delta: float) -> Faithfulness:
        model = ModelFaithfulness(comprehensiveness=_summary(0.3), sufficiency=_summary(0.1))
        return Faithfulness(
            top_k=10,
            n_instances=20,
            reference=model,
            candidate=model,
            comprehensiveness_delta=Interval(
                value=delta, ci_low=delta - 0.02, ci_high=delta + 0.02
            ),
            sufficiency_delta=Interval(value=0.0),
        )

    alignment = {
        "lime": _alignment(0.9, 0.8, 1.0, floor=0.9).model_copy(
            update={"faithfulness": faithfulness(-0.1)}
        ),
        "shap": _alignment(0.9, 0.8, 1.0, floor=0.9),  # not measured
    }
    settings = GateSettings(
        lime_comprehensiveness_drop=CheckSetting(threshold=0.05),
        shap_comprehensiveness_drop=CheckSetting(threshold=0.05),
    )
    gate = evaluate_gate(_parity(), _calibration(), alignment, settings)
    names = [check.name for check in gate.checks]
    assert names[-4:] == [
        "lime_jaccard_margin", "lime_comprehensiveness_drop",
        "shap_jaccard_margin", "shap_comprehensiveness_drop",
    ]  # fmt: skip
    lime = _check(gate, "lime_comprehensiveness_drop")
    assert lime.value == pytest.approx(0.1) and lime.pillar == "alignment"
    assert not lime.passed
    assert not _check(gate, "shap_comprehensiveness_drop").passed  # nothing measured fails
