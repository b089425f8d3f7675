"""One invariance suite over every array metric (as scikit-learn's test_common)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from trustdiff.metrics import (
    calibration,
    divergence,
    exemplars,
    flips,
    parity,
    slices,
    smooth_calibration,
)

LABEL_ARGUMENTS = ("y_true", "y_pred", "reference_pred", "candidate_pred")
PROBABILITY_ARGUMENTS = ("y_proba", "reference_proba", "candidate_proba")
N_CLASSES = 3


@dataclass(frozen=True)
class MetricCase:
    """A metric function, the sample arrays it takes (in order) and its options.

    `per_instance`: the result has one entry per sample, so reordering the samples reorders
    the result the same way (equivariance) rather than leaving it unchanged.
    """

    name: str
    function: Callable[..., Any]
    arguments: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    per_instance: bool = False

    def __call__(self, arrays: dict[str, Any]) -> Any:
        return self.function(*(arrays[name] for name in self.arguments), **self.options)


def _slice_of_every_row(y_true: Any, reference_proba: Any, candidate_proba: Any) -> Any:
    """`slice_metrics` over all rows, so that reordering the samples must not matter."""
    rows = np.arange(len(y_true))
    return slices.slice_metrics(
        y_true, reference_proba, candidate_proba, rows=rows, column="all", value="all"
    )


METRICS = [
    MetricCase("accuracy", parity.accuracy, ("y_true", "y_pred")),
    MetricCase("macro_f1", parity.macro_f1, ("y_true", "y_pred"), {"n_classes": N_CLASSES}),
    MetricCase(
        "per_class_recall",
        parity.per_class_recall,
        ("y_true", "y_pred"),
        {"n_classes": N_CLASSES},
    ),
    MetricCase("agreement", parity.agreement, ("reference_pred", "candidate_pred")),
    MetricCase("flip_counts", parity.flip_counts, ("y_true", "reference_pred", "candidate_pred")),
    MetricCase(
        "disagreement_matrix",
        parity.disagreement_matrix,
        ("reference_pred", "candidate_pred"),
        {"n_classes": N_CLASSES},
    ),
    MetricCase("cohen_kappa", parity.cohen_kappa, ("reference_pred", "candidate_pred")),
    MetricCase(
        "probability_loyalty",
        parity.probability_loyalty,
        ("reference_proba", "candidate_proba"),
    ),
    MetricCase(
        "expected_calibration_error", calibration.expected_calibration_error, ("y_true", "y_proba")
    ),
    MetricCase(
        "expected_calibration_error_equal_mass",
        calibration.expected_calibration_error,
        ("y_true", "y_proba"),
        {"binning": "equal_mass", "n_bins": 7},
    ),
    MetricCase(
        "maximum_calibration_error", calibration.maximum_calibration_error, ("y_true", "y_proba")
    ),
    MetricCase(
        "maximum_calibration_error_equal_mass",
        calibration.maximum_calibration_error,
        ("y_true", "y_proba"),
        {"binning": "equal_mass", "n_bins": 7},
    ),
    MetricCase(
        "classwise_expected_calibration_error",
        calibration.classwise_expected_calibration_error,
        ("y_true", "y_proba"),
    ),
    MetricCase(
        "classwise_expected_calibration_error_equal_mass",
        calibration.classwise_expected_calibration_error,
        ("y_true", "y_proba"),
        {"binning": "equal_mass"},
    ),
    MetricCase("brier_score", calibration.brier_score, ("y_true", "y_proba")),
    MetricCase(
        "negative_log_likelihood", calibration.negative_log_likelihood, ("y_true", "y_proba")
    ),
    MetricCase("calibration_summary", calibration.calibration_summary, ("y_true", "y_proba")),
    MetricCase("flip_rates", flips.flip_rates, ("y_true", "reference_pred", "candidate_pred")),
    MetricCase(
        "kl_divergence_per_instance",
        divergence.kl_divergence_per_instance,
        ("reference_proba", "candidate_proba"),
        per_instance=True,
    ),
    MetricCase(
        "jensen_shannon_distance_per_instance",
        divergence.jensen_shannon_distance_per_instance,
        ("reference_proba", "candidate_proba"),
        per_instance=True,
    ),
    MetricCase(
        "probability_shift",
        exemplars.probability_shift,
        ("reference_proba", "candidate_proba"),
        per_instance=True,
    ),
    MetricCase(
        "smooth_expected_calibration_error",
        smooth_calibration.smooth_expected_calibration_error,
        ("y_true", "y_proba"),
    ),
    MetricCase(
        "smooth_expected_calibration_error_fixed_bandwidth",
        smooth_calibration.smooth_expected_calibration_error,
        ("y_true", "y_proba"),
        {"bandwidth": 0.05},
    ),
    MetricCase(
        "smooth_reliability_curve",
        smooth_calibration.smooth_reliability_curve,
        ("y_true", "y_proba"),
    ),
    MetricCase(
        "slice_metrics_of_every_row",
        _slice_of_every_row,
        ("y_true", "reference_proba", "candidate_proba"),
    ),
]


WITH_PROBABILITIES = [case for case in METRICS if set(case.arguments) & set(PROBABILITY_ARGUMENTS)]
WITH_LABELS = [case for case in METRICS if set(case.arguments) & set(LABEL_ARGUMENTS)]
WITH_GOLD_AND_PROBABILITIES = [case for case in METRICS if "y_proba" in case.arguments]


def _sample(seed: int = 0, n: int = 80) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    reference_proba = rng.dirichlet(np.ones(N_CLASSES), size=n)
    candidate_proba = rng.dirichlet(np.ones(N_CLASSES), size=n)
    # Repeated confidences make equal-mass ties, the case where order could leak in.
    reference_proba[: n // 4] = reference_proba[0]
    return {
        "y_true": rng.integers(0, N_CLASSES, n),
        "y_pred": reference_proba.argmax(axis=1),
        "reference_pred": reference_proba.argmax(axis=1),
        "candidate_pred": candidate_proba.argmax(axis=1),
        "y_proba": reference_proba,
        "reference_proba": reference_proba,
        "candidate_proba": candidate_proba,
    }


def _assert_same(first: Any, second: Any) -> None:
    if hasattr(first, "__dataclass_fields__"):
        first, second = vars(first), vars(second)
    if isinstance(first, dict):
        assert first.keys() == second.keys()
        for key in first:
            if first[key] is None or second[key] is None:  # an empty bin's statistics
                assert first[key] is second[key]
            elif isinstance(first[key], str):
                assert first[key] == second[key]
            else:
                np.testing.assert_allclose(first[key], second[key], rtol=1e-12, atol=1e-12)
    else:
        np.testing.assert_allclose(first, second, rtol=1e-12, atol=1e-12)


def _ids(cases: list[MetricCase]) -> list[str]:
    return [case.name for case in cases]


@pytest.mark.parametrize("metric", METRICS, ids=_ids(METRICS))
def test_sample_order_invariance(metric: MetricCase) -> None:
    arrays = _sample()
    permutation = np.random.default_rng(1).permutation(len(arrays["y_true"]))
    shuffled = {name: value[permutation] for name, value in arrays.items()}
    expected = metric(arrays)
    if metric.per_instance:
        expected = expected[permutation]
    _assert_same(expected, metric(shuffled))


def test_reliability_bins_are_sample_order_invariant() -> None:
    arrays = _sample()
    permutation = np.random.default_rng(2).permutation(len(arrays["y_true"]))
    for binning in ("equal_width", "equal_mass"):
        original = calibration.reliability_bins(
            arrays["y_true"], arrays["y_proba"], binning=binning
        )
        shuffled = calibration.reliability_bins(
            arrays["y_true"][permutation], arrays["y_proba"][permutation], binning=binning
        )
        for first, second in zip(original, shuffled, strict=True):
            _assert_same(first, second)


@pytest.mark.parametrize("metric", METRICS, ids=_ids(METRICS))
def test_length_mismatch_raises(metric: MetricCase) -> None:
    for shortened in metric.arguments:
        arrays = _sample()
        arrays[shortened] = arrays[shortened][:-1]
        with pytest.raises(ValueError, match=r"inconsistent numbers of samples|shape"):
            metric(arrays)


@pytest.mark.parametrize("metric", METRICS, ids=_ids(METRICS))
def test_nan_raises(metric: MetricCase) -> None:
    for poisoned in metric.arguments:
        arrays = _sample()
        value = arrays[poisoned].astype(float)
        value[3] = np.nan
        arrays[poisoned] = value
        with pytest.raises(ValueError, match="NaN"):
            metric(arrays)


@pytest.mark.parametrize("metric", METRICS, ids=_ids(METRICS))
def test_out_of_range_raises(metric: MetricCase) -> None:
    for argument in metric.arguments:
        arrays = _sample()
        value = arrays[argument].copy()
        if argument in PROBABILITY_ARGUMENTS:
            value[5] = [1.5, -0.5, 0.0]  # sums to 1, but is not a probability vector
            match = r"outside \[0, 1\]"
        else:
            value[5] = -1
            match = "negative class id"
        arrays[argument] = value
        with pytest.raises(ValueError, match=match):
            metric(arrays)


@pytest.mark.parametrize("metric", WITH_PROBABILITIES, ids=_ids(WITH_PROBABILITIES))
def test_rows_not_summing_to_one_raise(metric: MetricCase) -> None:
    probability_arguments = [name for name in metric.arguments if name in PROBABILITY_ARGUMENTS]
    for argument in probability_arguments:
        arrays = _sample()
        arrays[argument] = arrays[argument].copy()
        arrays[argument][7] *= 0.9
        with pytest.raises(ValueError, match="row 7 sums to"):
            metric(arrays)


@pytest.mark.parametrize("metric", WITH_LABELS, ids=_ids(WITH_LABELS))
def test_float_labels_are_refused_not_rounded(metric: MetricCase) -> None:
    label_arguments = [name for name in metric.arguments if name in LABEL_ARGUMENTS]
    for argument in label_arguments:
        arrays = _sample()
        arrays[argument] = arrays[argument].astype(float)
        with pytest.raises(ValueError, match="integer class ids"):
            metric(arrays)


@pytest.mark.parametrize("metric", METRICS, ids=_ids(METRICS))
def test_empty_input_raises(metric: MetricCase) -> None:
    arrays = {name: value[:0] for name, value in _sample().items()}
    with pytest.raises(ValueError, match="empty"):
        metric(arrays)


@pytest.mark.parametrize(
    "metric", WITH_GOLD_AND_PROBABILITIES, ids=_ids(WITH_GOLD_AND_PROBABILITIES)
)
def test_gold_label_outside_the_probability_columns_raises(metric: MetricCase) -> None:
    arrays = _sample()
    arrays["y_true"] = arrays["y_true"].copy()
    arrays["y_true"][0] = N_CLASSES
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        metric(arrays)
