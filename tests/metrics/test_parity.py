"""Parity metrics: hand-computed values, then scikit-learn and scipy on random inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    recall_score,
)

from trustdiff.metrics.parity import (
    FlipCounts,
    accuracy,
    agreement,
    cohen_kappa,
    disagreement_matrix,
    flip_counts,
    macro_f1,
    mcnemar_exact_p_value,
    per_class_recall,
    probability_loyalty,
    probability_loyalty_per_instance,
)

Y_TRUE = [0, 0, 1, 1, 2]
REFERENCE_PRED = [0, 1, 1, 0, 1]
CANDIDATE_PRED = [1, 0, 1, 1, 2]


# --- hand-computed ---------------------------------------------------------------------------


def test_accuracy_by_hand() -> None:
    assert accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75


def test_macro_f1_by_hand() -> None:
    # class 0: TP 1, FP 1, FN 1 -> 0.5; class 1: TP 2, FP 1, FN 0 -> 0.8; class 2: TP 0 -> 0.
    y_true, y_pred = [0, 0, 1, 1, 2], [0, 1, 1, 1, 0]
    assert macro_f1(y_true, y_pred, n_classes=3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    # A fourth class of the label space that nothing uses is averaged in as zero_division.
    assert macro_f1(y_true, y_pred, n_classes=4) == pytest.approx((0.5 + 0.8 + 0.0 + 0.0) / 4)
    assert macro_f1(y_true, y_pred, n_classes=4, zero_division=1.0) == pytest.approx(
        (0.5 + 0.8 + 0.0 + 1.0) / 4
    )


def test_macro_f1_averages_over_the_full_label_space() -> None:
    # Gold labels use classes 0 and 1 of three. The reference wrongly predicts class 2 once,
    # the candidate never: both must still be averaged over the same three classes, so the
    # delta compares like with like (it used to be a mean over 3 classes against one over 2).
    y_true = [0, 0, 1, 1, 1, 0]
    reference = [0, 2, 1, 1, 1, 0]
    candidate = [0, 1, 1, 1, 1, 0]
    for predicted in (reference, candidate):
        assert macro_f1(y_true, predicted, n_classes=3) == pytest.approx(
            f1_score(y_true, predicted, labels=[0, 1, 2], average="macro", zero_division=0)
        )
    # class 0: TP 2, FP 0, FN 1 -> 0.8; class 1: TP 3, FP 0, FN 0 -> 1; class 2: 0.
    assert macro_f1(y_true, reference, n_classes=3) == pytest.approx((0.8 + 1.0 + 0.0) / 3)
    # class 0: TP 2, FN 1 -> 0.8; class 1: TP 3, FP 1 -> 6/7; class 2 unused by all -> 0.
    assert macro_f1(y_true, candidate, n_classes=3) == pytest.approx((0.8 + 6 / 7 + 0.0) / 3)
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        macro_f1(y_true, reference, n_classes=2)


def test_per_class_recall_by_hand_with_a_class_without_support() -> None:
    recall = per_class_recall([0, 0, 1, 1], [0, 1, 1, 1], n_classes=3)
    np.testing.assert_allclose(recall, [0.5, 1.0, 0.0])
    recall = per_class_recall([0, 0, 1, 1], [0, 1, 1, 1], n_classes=3, zero_division=1.0)
    assert recall[2] == 1.0


def test_agreement_and_flips_by_hand() -> None:
    assert agreement(REFERENCE_PRED, CANDIDATE_PRED) == pytest.approx(1 / 5)
    # reference right on rows 0, 2; candidate right on rows 1, 2, 3, 4.
    assert flip_counts(Y_TRUE, REFERENCE_PRED, CANDIDATE_PRED) == FlipCounts(fixed=3, broken=1)


def test_flips_ignore_both_wrong_with_different_classes() -> None:
    assert flip_counts([0], [1], [2]) == FlipCounts(fixed=0, broken=0)


def test_disagreement_matrix_by_hand() -> None:
    matrix = disagreement_matrix(REFERENCE_PRED, CANDIDATE_PRED, n_classes=3)
    # rows = reference prediction, columns = candidate prediction
    expected = [[0, 2, 0], [1, 1, 1], [0, 0, 0]]
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.sum() == 5


@pytest.mark.parametrize(
    ("fixed", "broken", "expected"),
    [(0, 0, 1.0), (0, 5, 2 * 0.5**5), (5, 0, 2 * 0.5**5), (3, 3, 1.0), (1, 4, 2 * 6 / 32)],
)
def test_mcnemar_by_hand(fixed: int, broken: int, expected: float) -> None:
    assert mcnemar_exact_p_value(fixed, broken) == pytest.approx(expected)


@pytest.mark.parametrize("bad", [-1, 1.5, True, None])
def test_mcnemar_refuses_bad_counts(bad: object) -> None:
    with pytest.raises(ValueError, match="fixed"):
        mcnemar_exact_p_value(bad, 1)  # type: ignore[arg-type]


def test_cohen_kappa_by_hand() -> None:
    # p_o = 0.75; p_e = 0.5·0.25 + 0.5·0.75 = 0.5; kappa = 0.25 / 0.5.
    assert cohen_kappa([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.5)


def test_cohen_kappa_is_one_when_both_predict_one_class_everywhere() -> None:
    # scikit-learn gives NaN (0/0) here; our documented rule is perfect agreement = 1.
    assert cohen_kappa([1, 1, 1], [1, 1, 1]) == 1.0


def test_probability_loyalty_by_hand() -> None:
    # m = (0.75, 0.25); KL(p‖m) = 0.5·log2(2/3) + 0.5·log2(2); KL(q‖m) = log2(4/3).
    divergence = 0.5 * (0.5 * math.log2(2 / 3) + 0.5) + 0.5 * math.log2(4 / 3)
    value = probability_loyalty([[0.5, 0.5]], [[1.0, 0.0]])
    assert value == pytest.approx(1 - math.sqrt(divergence))


def test_probability_loyalty_extremes() -> None:
    assert probability_loyalty([[0.2, 0.8], [1.0, 0.0]], [[0.2, 0.8], [1.0, 0.0]]) == 1.0
    assert probability_loyalty([[1.0, 0.0]], [[0.0, 1.0]]) == pytest.approx(0.0)


def test_probability_loyalty_refuses_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        probability_loyalty([[0.5, 0.5]], [[0.2, 0.3, 0.5]])


# --- independent references ------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "n_classes"), [(0, 2), (1, 3), (2, 5), (3, 7)])
def test_against_scikit_learn(seed: int, n_classes: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, 200)
    reference = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, n_classes, 200))
    candidate = np.where(rng.random(200) < 0.8, reference, rng.integers(0, n_classes, 200))
    assert accuracy(y_true, reference) == pytest.approx(accuracy_score(y_true, reference))
    assert macro_f1(y_true, reference, n_classes=n_classes) == pytest.approx(
        f1_score(y_true, reference, labels=list(range(n_classes)), average="macro")
    )
    # Classes missing from the gold labels or from one model's predictions.
    sparse_truth = np.minimum(y_true, n_classes - 2) if n_classes > 2 else y_true
    sparse_pred = np.where(reference == 0, 1 % n_classes, reference)
    for truth, predicted in ((sparse_truth, reference), (y_true, sparse_pred)):
        assert macro_f1(truth, predicted, n_classes=n_classes) == pytest.approx(
            f1_score(
                truth, predicted, labels=list(range(n_classes)), average="macro", zero_division=0
            )
        )
    np.testing.assert_allclose(
        per_class_recall(y_true, reference, n_classes=n_classes),
        recall_score(
            y_true, reference, labels=list(range(n_classes)), average=None, zero_division=0
        ),
    )
    assert cohen_kappa(reference, candidate) == pytest.approx(
        cohen_kappa_score(reference, candidate)
    )
    np.testing.assert_array_equal(
        disagreement_matrix(reference, candidate, n_classes=n_classes),
        confusion_matrix(reference, candidate, labels=list(range(n_classes))),
    )
    assert agreement(reference, candidate) == pytest.approx(accuracy_score(reference, candidate))


@pytest.mark.parametrize(("fixed", "broken"), [(0, 1), (2, 9), (10, 10), (17, 3), (140, 95)])
def test_mcnemar_against_scipy_binomtest(fixed: int, broken: int) -> None:
    expected = binomtest(fixed, fixed + broken, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact_p_value(fixed, broken) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("seed", "n_classes"), [(0, 2), (1, 4), (2, 10)])
def test_probability_loyalty_against_scipy_jensenshannon(seed: int, n_classes: int) -> None:
    rng = np.random.default_rng(seed)
    reference = rng.dirichlet(np.full(n_classes, 0.5), size=100)
    candidate = rng.dirichlet(np.full(n_classes, 0.5), size=100)
    candidate[:5] = reference[:5]  # identical rows: divergence exactly 0
    candidate[5, :] = 0.0
    candidate[5, 0] = 1.0  # zeros exercise 0·log 0
    expected = 1.0 - jensenshannon(reference, candidate, base=2, axis=1)
    np.testing.assert_allclose(
        probability_loyalty_per_instance(reference, candidate), expected, atol=1e-7
    )
    assert probability_loyalty(reference, candidate) == pytest.approx(np.mean(expected), abs=1e-7)
