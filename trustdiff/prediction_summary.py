"""The parity and calibration sections of a result: gold labels and both models' predictions."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from trustdiff.config import CalibrationSettings
from trustdiff.metrics import parity as parity_metrics
from trustdiff.metrics.bootstrap import paired_bootstrap_replicates, percentile_interval
from trustdiff.metrics.calibration import BINNINGS, calibration_summary, reliability_bins
from trustdiff.metrics.flips import flip_rates
from trustdiff.result import (
    BinnedCalibration,
    Calibration,
    Interval,
    ModelCalibration,
    ModelParity,
    Parity,
    ReliabilityBin,
)

CALIBRATION_DELTA_METRICS = ("ece", "mce", "classwise_ece", "brier", "nll")
# Replicates by name: "accuracy", "macro_f1" and each calibration metric are candidate −
# reference deltas, "agreement" the agreement itself.
Replicates = dict[str, NDArray[np.float64]]


def summarize_predictions(
    y_true: NDArray[np.intp],
    reference_proba: NDArray[np.float64],
    candidate_proba: NDArray[np.float64],
    *,
    labels: list[str],
    settings: CalibrationSettings,
    seed: int,
) -> tuple[Parity, Calibration]:
    """Parity and calibration sections from gold labels (n,) and both models' (n, K) probabilities.

    Deltas are candidate − reference. Their intervals come from one paired bootstrap
    (`settings.n_bootstrap` resamples of the instances, seeded): every replicate evaluates
    both models, and every metric, on the same resampled rows. With `n_bootstrap = 0` the
    intervals are omitted. Macro-F1 averages over all `len(labels)` classes.
    """
    replicates = (
        _paired_replicates(
            y_true,
            reference_proba,
            candidate_proba,
            n_classes=len(labels),
            settings=settings,
            seed=seed,
        )
        if settings.n_bootstrap > 0
        else None
    )
    parity = _parity(
        y_true,
        reference_proba,
        candidate_proba,
        labels=labels,
        replicates=replicates,
        confidence_level=settings.confidence_level,
    )
    calibration = _calibration(
        y_true, reference_proba, candidate_proba, settings=settings, replicates=replicates
    )
    return parity, calibration


def _interval(
    name: str, value: float, replicates: Replicates | None, confidence_level: float
) -> Interval:
    if replicates is None:
        return Interval(value=value)
    low, high = percentile_interval(replicates[name], confidence_level=confidence_level)
    return Interval(value=value, ci_low=low, ci_high=high)


def _paired_replicates(
    y_true: NDArray[np.intp],
    reference_proba: NDArray[np.float64],
    candidate_proba: NDArray[np.float64],
    *,
    n_classes: int,
    settings: CalibrationSettings,
    seed: int,
) -> Replicates:
    """Every delta (and the agreement) on `settings.n_bootstrap` shared resamples."""
    reference_pred = reference_proba.argmax(axis=1)
    candidate_pred = candidate_proba.argmax(axis=1)
    reference_correct = reference_pred == y_true
    candidate_correct = candidate_pred == y_true
    agreeing = reference_pred == candidate_pred

    def statistics(rows: NDArray[np.intp]) -> dict[str, float]:
        truth = y_true[rows]
        reference_summary, candidate_summary = (
            calibration_summary(
                truth, proba[rows], n_bins=settings.n_bins, binning=settings.binning
            )
            for proba in (reference_proba, candidate_proba)
        )
        return {
            "accuracy": candidate_correct[rows].mean() - reference_correct[rows].mean(),
            "agreement": agreeing[rows].mean(),
            "negative_flip_rate": (reference_correct[rows] & ~candidate_correct[rows]).mean(),
            "positive_flip_rate": (~reference_correct[rows] & candidate_correct[rows]).mean(),
            "macro_f1": parity_metrics.macro_f1(truth, candidate_pred[rows], n_classes=n_classes)
            - parity_metrics.macro_f1(truth, reference_pred[rows], n_classes=n_classes),
            **{
                metric: getattr(candidate_summary, metric) - getattr(reference_summary, metric)
                for metric in CALIBRATION_DELTA_METRICS
            },
        }

    return paired_bootstrap_replicates(
        statistics, y_true.size, n_resamples=settings.n_bootstrap, seed=seed
    )


def _model_parity(
    y_true: NDArray[np.intp], predicted: NDArray[np.intp], *, labels: list[str]
) -> ModelParity:
    recall = parity_metrics.per_class_recall(y_true, predicted, n_classes=len(labels))
    return ModelParity(
        accuracy=parity_metrics.accuracy(y_true, predicted),
        macro_f1=parity_metrics.macro_f1(y_true, predicted, n_classes=len(labels)),
        per_class_recall={label: float(recall[index]) for index, label in enumerate(labels)},
    )


def _parity(
    y_true: NDArray[np.intp],
    reference_proba: NDArray[np.float64],
    candidate_proba: NDArray[np.float64],
    *,
    labels: list[str],
    replicates: Replicates | None,
    confidence_level: float,
) -> Parity:
    reference_pred = reference_proba.argmax(axis=1)
    candidate_pred = candidate_proba.argmax(axis=1)
    reference = _model_parity(y_true, reference_pred, labels=labels)
    candidate = _model_parity(y_true, candidate_pred, labels=labels)
    flips = parity_metrics.flip_counts(y_true, reference_pred, candidate_pred)
    rates = flip_rates(y_true, reference_pred, candidate_pred)
    agreement = parity_metrics.agreement(reference_pred, candidate_pred)
    return Parity(
        reference=reference,
        candidate=candidate,
        accuracy_delta=_interval(
            "accuracy", candidate.accuracy - reference.accuracy, replicates, confidence_level
        ),
        macro_f1_delta=_interval(
            "macro_f1", candidate.macro_f1 - reference.macro_f1, replicates, confidence_level
        ),
        agreement=agreement,
        agreement_interval=_interval("agreement", agreement, replicates, confidence_level),
        fixed=flips.fixed,
        broken=flips.broken,
        negative_flip_rate=_interval(
            "negative_flip_rate", rates.negative, replicates, confidence_level
        ),
        positive_flip_rate=_interval(
            "positive_flip_rate", rates.positive, replicates, confidence_level
        ),
        mcnemar_p=parity_metrics.mcnemar_exact_p_value(flips.fixed, flips.broken),
        kappa=parity_metrics.cohen_kappa(reference_pred, candidate_pred),
        probability_loyalty=parity_metrics.probability_loyalty(reference_proba, candidate_proba),
        disagreement_matrix=parity_metrics.disagreement_matrix(
            reference_pred, candidate_pred, n_classes=len(labels)
        ).tolist(),
    )


def _model_calibration(
    y_true: NDArray[np.intp], proba: NDArray[np.float64], settings: CalibrationSettings
) -> ModelCalibration:
    """One model's calibration: the configured binning's figures, and both binnings' diagrams."""
    summaries = {
        binning: calibration_summary(y_true, proba, n_bins=settings.n_bins, binning=binning)
        for binning in BINNINGS
    }
    reliability = [
        BinnedCalibration(
            binning=binning,
            n_bins=settings.n_bins,
            ece=summaries[binning].ece,
            mce=summaries[binning].mce,
            bins=[
                ReliabilityBin(
                    lower=stats.lower,
                    upper=stats.upper,
                    count=stats.count,
                    mean_confidence=stats.mean_confidence,
                    accuracy=stats.accuracy,
                )
                for stats in reliability_bins(
                    y_true, proba, n_bins=settings.n_bins, binning=binning
                )
            ],
        )
        for binning in BINNINGS
    ]
    configured = summaries[settings.binning]
    return ModelCalibration(
        ece=configured.ece,
        mce=configured.mce,
        classwise_ece=configured.classwise_ece,
        brier=configured.brier,
        nll=configured.nll,
        bins=next(item.bins for item in reliability if item.binning == settings.binning),
        reliability=reliability,
    )


def _calibration(
    y_true: NDArray[np.intp],
    reference_proba: NDArray[np.float64],
    candidate_proba: NDArray[np.float64],
    *,
    settings: CalibrationSettings,
    replicates: Replicates | None,
) -> Calibration:
    reference = _model_calibration(y_true, reference_proba, settings)
    candidate = _model_calibration(y_true, candidate_proba, settings)
    return Calibration(
        binning=settings.binning,
        n_bins=settings.n_bins,
        reference=reference,
        candidate=candidate,
        delta={
            metric: _interval(
                metric,
                getattr(candidate, metric) - getattr(reference, metric),
                replicates,
                settings.confidence_level,
            )
            for metric in CALIBRATION_DELTA_METRICS
        },
    )
