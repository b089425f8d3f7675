"""Slice metrics: a hand-computed slice, then the whole-data metrics on the slice's rows."""

from __future__ import annotations

import numpy as np
import pytest

from trustdiff.metrics.calibration import expected_calibration_error
from trustdiff.metrics.flips import negative_flip_rate
from trustdiff.metrics.parity import accuracy, agreement
from trustdiff.metrics.slices import length_quartile_labels, slice_metrics, slice_rows

Y_TRUE = np.array([0, 1, 1, 0, 1])
REFERENCE = np.array([[0.9, 0.1], [0.3, 0.7], [0.4, 0.6], [0.2, 0.8], [0.6, 0.4]])
CANDIDATE = np.array([[0.6, 0.4], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.1, 0.9]])


def test_slice_by_hand() -> None:
    # Rows 0, 1, 2: reference predicts 0, 1, 1 (all right); candidate 0, 0, 1 (row 1 wrong).
    metrics = slice_metrics(
        Y_TRUE, REFERENCE, CANDIDATE, rows=[0, 1, 2], column="source", value="web", n_bins=10
    )
    assert (metrics.column, metrics.value, metrics.n, metrics.judged) == ("source", "web", 3, False)
    assert metrics.reference_accuracy == 1.0
    assert metrics.candidate_accuracy == pytest.approx(2 / 3)
    assert metrics.accuracy_delta == pytest.approx(-1 / 3)
    assert metrics.agreement == pytest.approx(2 / 3)
    assert metrics.negative_flip_rate == pytest.approx(1 / 3)
    # Reference confidences .9, .7, .6 in three bins, all right: (.1 + .3 + .4) / 3.
    assert metrics.reference_ece == pytest.approx(0.8 / 3)
    # Candidate: .6 right, .8 wrong, .6 right -> bin (.5,.6]: |1 − .6|·2/3; bin (.7,.8]: .8/3.
    assert metrics.candidate_ece == pytest.approx(0.8 / 3 + 0.8 / 3)
    assert metrics.ece_delta == pytest.approx(0.8 / 3)


def test_min_slice_size_decides_judged() -> None:
    kwargs = {"rows": [0, 1, 2], "column": "c", "value": "v"}
    assert slice_metrics(Y_TRUE, REFERENCE, CANDIDATE, min_slice_size=3, **kwargs).judged
    assert not slice_metrics(Y_TRUE, REFERENCE, CANDIDATE, min_slice_size=4, **kwargs).judged
    with pytest.raises(ValueError, match="min_slice_size must be an integer >= 1"):
        slice_metrics(Y_TRUE, REFERENCE, CANDIDATE, min_slice_size=0, **kwargs)


@pytest.mark.parametrize(
    ("rows", "match"),
    [([], "non-empty"), ([0, 5], "row index 5, outside 0..4"), ([0.0], "integer row indices")],
)
def test_bad_rows_raise(rows: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        slice_metrics(Y_TRUE, REFERENCE, CANDIDATE, rows=rows, column="c", value="v")


@pytest.mark.parametrize("seed", range(3))
def test_a_slice_equals_the_whole_data_metrics_on_its_rows(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    truth = rng.integers(0, 3, n)
    reference = rng.dirichlet(np.ones(3), size=n)
    candidate = rng.dirichlet(np.ones(3), size=n)
    rows = np.flatnonzero(rng.uniform(size=n) < 0.3)
    metrics = slice_metrics(truth, reference, candidate, rows=rows, column="c", value="v")
    sub_truth, sub_reference, sub_candidate = truth[rows], reference[rows], candidate[rows]
    reference_pred, candidate_pred = sub_reference.argmax(axis=1), sub_candidate.argmax(axis=1)
    assert metrics.reference_accuracy == accuracy(sub_truth, reference_pred)
    assert metrics.candidate_accuracy == accuracy(sub_truth, candidate_pred)
    assert metrics.agreement == agreement(reference_pred, candidate_pred)
    assert metrics.negative_flip_rate == negative_flip_rate(
        sub_truth, reference_pred, candidate_pred
    )
    assert metrics.candidate_ece == expected_calibration_error(sub_truth, sub_candidate)
    # The slice's rows in another order give the same figures.
    shuffled = slice_metrics(
        truth, reference, candidate, rows=rng.permutation(rows), column="c", value="v"
    )
    assert vars(shuffled) == pytest.approx(vars(metrics))


def test_slice_rows_groups_by_string_with_missing_values() -> None:
    groups = slice_rows(["en", "de", None, "en", float("nan"), 1, "1"])
    assert list(groups) == ["(missing)", "1", "de", "en"]
    assert groups["en"].tolist() == [0, 3]
    assert groups["(missing)"].tolist() == [2, 4]
    assert groups["1"].tolist() == [5, 6]


def test_length_quartiles_by_hand() -> None:
    # q25 = 2.75, q50 = 4.5, q75 = 6.25 for lengths 1..8.
    labels = length_quartile_labels(np.array([1, 2, 3, 4, 5, 6, 7, 8]))
    assert labels == [
        "Q1: 1–2 words",
        "Q1: 1–2 words",
        "Q2: 3–4 words",
        "Q2: 3–4 words",
        "Q3: 5–6 words",
        "Q3: 5–6 words",
        "Q4: 7–8 words",
        "Q4: 7–8 words",
    ]


def test_length_quartiles_keep_ties_together() -> None:
    # q25 = q50 = q75 = 3: every length-3 row is in Q1, the longer ones in Q4.
    labels = length_quartile_labels(np.array([3, 3, 3, 3, 3, 9]))
    assert labels == ["Q1: 3 words"] * 5 + ["Q4: 9 words"]
    with pytest.raises(ValueError, match="integer word counts"):
        length_quartile_labels(np.array([1.5]))
    with pytest.raises(ValueError, match="negative"):
        length_quartile_labels(np.array([-1]))
