"""Calibration metrics: hand-computed bins and edges, then torchmetrics and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import brier_score_loss, log_loss
from torchmetrics.functional.classification import multiclass_calibration_error

from trustdiff.metrics.calibration import (
    BINNINGS,
    NLL_EPSILON,
    ReliabilityBinStats,
    brier_score,
    calibration_summary,
    classwise_expected_calibration_error,
    expected_calibration_error,
    expected_calibration_error_replicates,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_bins,
)

# M = 4, K = 4, so the confidences sit exactly on bin edges: 1/M = 0.25 (row A, top of the
# first bin), 2/M = 0.5 (row B, top of the second bin), 1.0 (rows C and D, the last bin).
# Zeros in the class columns exercise "c = 0 goes to the first bin" for classwise ECE.
EDGE_PROBA = np.array(
    [
        [0.25, 0.25, 0.25, 0.25],  # A: predicts 0 (lowest id of the tie), correct
        [0.50, 0.50, 0.00, 0.00],  # B: predicts 0, gold 1: wrong
        [1.00, 0.00, 0.00, 0.00],  # C: correct
        [0.00, 0.00, 0.00, 1.00],  # D: predicts 3, gold 2: wrong
    ]
)
EDGE_TRUE = np.array([0, 1, 0, 2])


def test_equal_width_bins_at_the_edges_by_hand() -> None:
    bins = reliability_bins(EDGE_TRUE, EDGE_PROBA, n_bins=4)
    assert bins == [
        ReliabilityBinStats(lower=0.0, upper=0.25, count=1, mean_confidence=0.25, accuracy=1.0),
        ReliabilityBinStats(lower=0.25, upper=0.5, count=1, mean_confidence=0.5, accuracy=0.0),
        ReliabilityBinStats(lower=0.5, upper=0.75, count=0, mean_confidence=None, accuracy=None),
        ReliabilityBinStats(lower=0.75, upper=1.0, count=2, mean_confidence=1.0, accuracy=0.5),
    ]


def test_ece_and_mce_by_hand() -> None:
    # gaps 0.75, 0.5, (empty), 0.5 with counts 1, 1, 0, 2.
    assert expected_calibration_error(EDGE_TRUE, EDGE_PROBA, n_bins=4) == pytest.approx(
        (0.75 + 0.5 + 2 * 0.5) / 4
    )
    assert maximum_calibration_error(EDGE_TRUE, EDGE_PROBA, n_bins=4) == pytest.approx(0.75)


def test_classwise_ece_by_hand() -> None:
    # Per class, |hits − Σp| summed per bin over n = 4 (zeros fall into the first bin):
    # class 0: bin 1 |1 − 0.25| + bin 2 |0 − 0.5| + bin 4 |1 − 1| = 1.25
    # class 1: bin 1 |0 − 0.25| + bin 2 |1 − 0.5| = 0.75
    # class 2: bin 1 |1 − 0.25| = 0.75
    # class 3: bin 1 |0 − 0.25| + bin 4 |0 − 1| = 1.25
    expected = np.mean([1.25, 0.75, 0.75, 1.25]) / 4
    value = classwise_expected_calibration_error(EDGE_TRUE, EDGE_PROBA, n_bins=4)
    assert value == pytest.approx(expected)


def test_brier_and_nll_by_hand() -> None:
    # A: 0.75² + 3·0.25²; B: 0.5² + 0.5²; C: 0; D: 1 + 1.
    assert brier_score(EDGE_TRUE, EDGE_PROBA) == pytest.approx((0.75 + 0.5 + 0.0 + 2.0) / 4)
    # D gives its gold class probability 0: clipped to NLL_EPSILON, not infinite.
    expected = (-math.log(0.25) - math.log(0.5) + 0.0 - math.log(NLL_EPSILON)) / 4
    assert negative_log_likelihood(EDGE_TRUE, EDGE_PROBA) == pytest.approx(expected)


def test_confidence_exactly_on_an_inner_edge_goes_to_the_lower_bin() -> None:
    # 0.6 is 3/5 exactly as a float: it belongs to bin (0.4, 0.6], not (0.6, 0.8].
    bins = reliability_bins([0], [[0.6, 0.4]], n_bins=5)
    assert [item.count for item in bins] == [0, 0, 1, 0, 0]


def test_equal_mass_bins_by_hand() -> None:
    # sorted confidences 0.55 (wrong), 0.6 (right), 0.7 (wrong) | 0.8 (right), 0.9 (right)
    confidence = np.array([0.6, 0.7, 0.9, 0.55, 0.8])
    correct = np.array([True, False, True, False, True])
    proba = np.column_stack([confidence, 1 - confidence])
    y_true = np.where(correct, 0, 1)
    bins = reliability_bins(y_true, proba, n_bins=2, binning="equal_mass")
    assert [item.count for item in bins] == [3, 2]
    assert (bins[0].lower, bins[0].upper) == (0.55, 0.7)
    assert (bins[1].lower, bins[1].upper) == (0.8, 0.9)
    assert bins[0].mean_confidence == pytest.approx((0.55 + 0.6 + 0.7) / 3)
    assert bins[0].accuracy == pytest.approx(1 / 3)
    expected = (abs(1 - (0.55 + 0.6 + 0.7)) + abs(2 - (0.8 + 0.9))) / 5
    ece = expected_calibration_error(y_true, proba, n_bins=2, binning="equal_mass")
    assert ece == pytest.approx(expected)


def test_equal_mass_with_fewer_instances_than_bins_reports_empty_bins() -> None:
    bins = reliability_bins([0, 1], [[0.7, 0.3], [0.9, 0.1]], n_bins=4, binning="equal_mass")
    assert [item.count for item in bins] == [1, 1, 0, 0]
    assert bins[2] == ReliabilityBinStats(
        lower=0.9, upper=0.9, count=0, mean_confidence=None, accuracy=None
    )


def test_equal_mass_ties_do_not_depend_on_sample_order() -> None:
    # Every confidence ties; which rows land in which bin must not follow the input order.
    proba = np.tile([0.7, 0.3], (6, 1))
    y_true = np.array([0, 1, 0, 1, 0, 1])
    values = {
        expected_calibration_error(y_true[order], proba[order], n_bins=2, binning="equal_mass")
        for order in (np.arange(6), np.array([1, 3, 5, 0, 2, 4]), np.array([0, 2, 4, 1, 3, 5]))
    }
    assert len(values) == 1


def test_single_bin_ece_is_the_gap_between_mean_confidence_and_accuracy() -> None:
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    y_true = np.array([0, 0, 0])
    assert expected_calibration_error(y_true, proba, n_bins=1) == pytest.approx(
        abs(2 / 3 - (0.9 + 0.8 + 0.6) / 3)
    )


def test_a_perfectly_calibrated_one_hot_model_scores_zero() -> None:
    proba = np.eye(3)[[0, 1, 2, 1]]
    y_true = np.array([0, 1, 2, 1])
    summary = calibration_summary(y_true, proba)
    assert summary.ece == summary.mce == summary.classwise_ece == summary.brier == 0.0
    assert summary.nll == pytest.approx(0.0)


@pytest.mark.parametrize("n_bins", [0, -1, 1.5, True])
def test_bad_bin_count_raises(n_bins: object) -> None:
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error([0], [[1.0, 0.0]], n_bins=n_bins)  # type: ignore[arg-type]


def test_unknown_binning_raises() -> None:
    with pytest.raises(ValueError, match="binning"):
        expected_calibration_error([0], [[1.0, 0.0]], binning="quantile")  # type: ignore[arg-type]


def test_probabilities_given_as_one_binary_column_are_refused() -> None:
    with pytest.raises(ValueError, match="2-D"):
        brier_score([0, 1], [0.2, 0.9])


# --- independent references ------------------------------------------------------------------


def _random_case(seed: int, n_classes: int, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.full(n_classes, 0.7), size=n)
    # Gold labels drawn from a sharpened version of the model: miscalibrated on purpose.
    sharpened = proba**2 / np.sum(proba**2, axis=1, keepdims=True)
    y_true = np.array([rng.choice(n_classes, p=row) for row in sharpened])
    return y_true, proba


@pytest.mark.parametrize(("seed", "n_classes", "n_bins"), [(0, 2, 15), (1, 3, 10), (2, 5, 7)])
def test_ece_and_mce_against_torchmetrics(seed: int, n_classes: int, n_bins: int) -> None:
    # torchmetrics bins [lower, upper) where we bin (lower, upper]; random confidences never
    # sit exactly on an edge, so the two conventions agree here.
    y_true, proba = _random_case(seed, n_classes)
    preds, target = torch.from_numpy(proba), torch.from_numpy(y_true)
    expected_ece = multiclass_calibration_error(
        preds, target, num_classes=n_classes, n_bins=n_bins, norm="l1"
    )
    expected_mce = multiclass_calibration_error(
        preds, target, num_classes=n_classes, n_bins=n_bins, norm="max"
    )
    assert expected_calibration_error(y_true, proba, n_bins=n_bins) == pytest.approx(
        float(expected_ece), abs=1e-6
    )
    assert maximum_calibration_error(y_true, proba, n_bins=n_bins) == pytest.approx(
        float(expected_mce), abs=1e-6
    )


def test_torchmetrics_bins_an_exact_edge_differently() -> None:
    # The documented difference: a confidence of exactly 0.6 with M = 5.
    proba = np.array([[0.6, 0.4], [0.65, 0.35]])
    y_true = np.array([1, 0])
    ours = expected_calibration_error(y_true, proba, n_bins=5)
    theirs = float(
        multiclass_calibration_error(
            torch.from_numpy(proba), torch.from_numpy(y_true), num_classes=2, n_bins=5
        )
    )
    # ours: two bins, (0.6 − 0) + (1 − 0.65) over 2; theirs: one bin, |0.5 − 0.625|.
    assert ours == pytest.approx((0.6 + 0.35) / 2)
    assert theirs == pytest.approx(abs(0.5 - 0.625))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_brier_is_twice_scikit_learn_brier_score_loss(seed: int) -> None:
    y_true, proba = _random_case(seed, 2)
    assert brier_score(y_true, proba) == pytest.approx(2 * brier_score_loss(y_true, proba[:, 1]))


@pytest.mark.parametrize(("seed", "n_classes"), [(0, 2), (1, 3), (2, 6)])
def test_multiclass_brier_against_scikit_learn_unscaled(seed: int, n_classes: int) -> None:
    y_true, proba = _random_case(seed, n_classes)
    expected = brier_score_loss(y_true, proba, labels=list(range(n_classes)), scale_by_half=False)
    assert brier_score(y_true, proba) == pytest.approx(expected)


@pytest.mark.parametrize(("seed", "n_classes"), [(0, 2), (1, 3), (2, 6)])
def test_nll_against_scikit_learn_log_loss(seed: int, n_classes: int) -> None:
    y_true, proba = _random_case(seed, n_classes)
    proba[0] = 0.0
    proba[0, (y_true[0] + 1) % n_classes] = 1.0  # a zero on the gold class: the clip matters
    expected = log_loss(y_true, proba, labels=list(range(n_classes)))
    assert negative_log_likelihood(y_true, proba) == pytest.approx(expected)


@pytest.mark.parametrize(("seed", "n_classes"), [(0, 2), (1, 4)])
def test_classwise_ece_against_a_direct_computation(seed: int, n_classes: int) -> None:
    # No library computes this exact definition: torchmetrics' binary ECE on [1 − p_k, p_k]
    # bins the top-label confidence max(p_k, 1 − p_k), not p_k. So the reference is written
    # out plainly: np.digitize(right=True) bins (lower, upper], one loop per class and bin.
    y_true, proba = _random_case(seed, n_classes)
    edges = np.arange(16) / 15
    per_class = []
    for label in range(n_classes):
        scores = proba[:, label]
        hits = (y_true == label).astype(float)
        index = np.clip(np.digitize(scores, edges, right=True) - 1, 0, 14)
        total = 0.0
        for bin_index in range(15):
            members = index == bin_index
            total += abs(hits[members].sum() - scores[members].sum())
        per_class.append(total / len(y_true))
    assert classwise_expected_calibration_error(y_true, proba) == pytest.approx(np.mean(per_class))


def test_summary_matches_the_individual_functions() -> None:
    y_true, proba = _random_case(4, 3)
    for binning in BINNINGS:
        options = {"n_bins": 10, "binning": binning}
        summary = calibration_summary(y_true, proba, **options)
        assert summary.ece == expected_calibration_error(y_true, proba, **options)
        assert summary.mce == maximum_calibration_error(y_true, proba, **options)
        assert summary.classwise_ece == classwise_expected_calibration_error(
            y_true, proba, **options
        )
        assert summary.brier == brier_score(y_true, proba)
        assert summary.nll == negative_log_likelihood(y_true, proba)


@pytest.mark.parametrize("binning", BINNINGS)
def test_ece_replicates_equal_one_call_per_resample(binning: str) -> None:
    rng = np.random.default_rng(5)
    proba = rng.dirichlet(np.ones(3), size=120)
    truth = rng.integers(0, 3, 120)
    draws = rng.integers(0, 120, size=(40, 90))
    np.testing.assert_allclose(
        expected_calibration_error_replicates(truth, proba, draws, n_bins=7, binning=binning),
        [
            expected_calibration_error(truth[rows], proba[rows], n_bins=7, binning=binning)
            for rows in draws
        ],
        atol=1e-12,
    )
    with pytest.raises(ValueError, match=r"row index outside 0\.\.119"):
        expected_calibration_error_replicates(truth, proba, np.array([[0, 120]]))
