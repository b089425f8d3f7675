"""The parity and calibration sections: direct metric values, paired intervals, label space."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from trustdiff.config import CalibrationSettings
from trustdiff.metrics.bootstrap import bootstrap_indices
from trustdiff.metrics.calibration import calibration_summary
from trustdiff.prediction_summary import CALIBRATION_DELTA_METRICS, summarize_predictions

LABELS = ["a", "b", "c"]


def _sample(seed: int, n: int = 120) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, len(LABELS), n)
    reference = rng.dirichlet(np.ones(len(LABELS)), n)
    candidate = 0.7 * reference + 0.3 * rng.dirichlet(np.ones(len(LABELS)), n)
    return y_true, reference, candidate


def test_deltas_and_intervals_come_from_one_paired_bootstrap() -> None:
    y_true, reference, candidate = _sample(0)
    settings = CalibrationSettings(n_bootstrap=60, confidence_level=0.9)
    parity, calibration = summarize_predictions(
        y_true, reference, candidate, labels=LABELS, settings=settings, seed=4
    )
    # A plain recomputation: the same seeded rows for both models and for every metric.
    rows = bootstrap_indices(y_true.size, n_resamples=60, seed=4)
    ece_deltas = [
        calibration_summary(y_true[r], candidate[r]).ece
        - calibration_summary(y_true[r], reference[r]).ece
        for r in rows
    ]
    agreements = [np.mean(reference[r].argmax(axis=1) == candidate[r].argmax(axis=1)) for r in rows]
    assert calibration.delta["ece"].ci_low == pytest.approx(np.quantile(ece_deltas, 0.05))
    assert calibration.delta["ece"].ci_high == pytest.approx(np.quantile(ece_deltas, 0.95))
    assert parity.agreement_interval is not None
    assert parity.agreement_interval.ci_low == pytest.approx(np.quantile(agreements, 0.05))
    assert calibration.delta["brier"].value == pytest.approx(
        calibration.candidate.brier - calibration.reference.brier
    )
    assert parity.accuracy_delta.value == pytest.approx(
        parity.candidate.accuracy - parity.reference.accuracy
    )
    # Computed once per model and binning: the configured figures are that binning's.
    configured = next(r for r in calibration.reference.reliability if r.binning == "equal_width")
    assert calibration.reference.ece == configured.ece
    assert calibration.reference.bins == configured.bins


def test_identical_models_differ_by_exactly_zero_and_no_bootstrap_means_no_interval() -> None:
    y_true, reference, _ = _sample(1)
    parity, calibration = summarize_predictions(
        y_true,
        reference,
        reference.copy(),
        labels=LABELS,
        settings=CalibrationSettings(n_bootstrap=30),
        seed=0,
    )
    deltas = [calibration.delta[metric] for metric in CALIBRATION_DELTA_METRICS]
    for interval in [parity.accuracy_delta, parity.macro_f1_delta, *deltas]:
        assert (interval.value, interval.ci_low, interval.ci_high) == (0.0, 0.0, 0.0)
    parity, calibration = summarize_predictions(
        y_true,
        reference,
        reference,
        labels=LABELS,
        settings=CalibrationSettings(n_bootstrap=0),
        seed=0,
    )
    assert parity.macro_f1_delta.ci_low is None and calibration.delta["nll"].ci_high is None


def test_macro_f1_of_both_models_averages_the_whole_label_space() -> None:
    # Gold labels and the candidate never use class "c"; the reference predicts it once.
    y_true = np.array([0, 0, 1, 1, 1, 0])
    reference = np.eye(3)[[0, 2, 1, 1, 1, 0]] * 0.8 + 0.2 / 3
    candidate = np.eye(3)[[0, 1, 1, 1, 1, 0]] * 0.8 + 0.2 / 3
    parity, _ = summarize_predictions(
        y_true,
        reference,
        candidate,
        labels=LABELS,
        settings=CalibrationSettings(n_bootstrap=0),
        seed=0,
    )
    for model, proba in ((parity.reference, reference), (parity.candidate, candidate)):
        assert model.macro_f1 == pytest.approx(
            f1_score(
                y_true, proba.argmax(axis=1), labels=[0, 1, 2], average="macro", zero_division=0
            )
        )
