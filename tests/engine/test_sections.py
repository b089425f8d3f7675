"""Result sections beyond the averages, built from a dataset and two probability matrices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trustdiff.datasets import Dataset
from trustdiff.metrics.divergence import kl_divergence_per_instance
from trustdiff.metrics.smooth_calibration import smooth_expected_calibration_error
from trustdiff.result import Slices
from trustdiff.sections import (
    GOLD_SLICE,
    LENGTH_SLICE,
    MOST_DIVERGENT_ROWS,
    Bootstrap,
    SliceThreshold,
    divergence_section,
    exemplars_section,
    slice_groups,
    slices_section,
    smooth_calibration_section,
)

LABELS = ["negative", "positive"]
BOOTSTRAP = Bootstrap(n_resamples=200, confidence_level=0.95, seed=0)


def _audit_data(n: int = 240, seed: int = 0):
    rng = np.random.default_rng(seed)
    sources = rng.choice(["web", "news", "forum"], size=n).tolist()
    texts = [" ".join(["word"] * int(length)) for length in rng.integers(1, 30, n)]
    y_true = rng.integers(0, 2, n)
    reference = rng.dirichlet([1, 1], size=n)
    candidate = reference.copy()
    # The candidate breaks "forum" rows: flip a third of them.
    broken = np.flatnonzero((np.array(sources) == "forum") & (rng.uniform(size=n) < 0.35))
    candidate[broken] = candidate[broken][:, ::-1]
    dataset = Dataset(
        path=Path("data.csv"),
        format="csv",
        texts=texts,
        text_pairs=None,
        labels=y_true.tolist(),
        label_names=LABELS,
        row_numbers=list(range(1, n + 1)),
        rows_in_file=n,
        fingerprint="0" * 64,
        columns={"source": sources},
    )
    return dataset, y_true.astype(np.intp), reference, candidate


def test_slice_groups_partition_the_rows_per_column() -> None:
    dataset, *_ = _audit_data()
    groups = slice_groups(dataset, ["source"], LABELS)
    for column in ("source", GOLD_SLICE, LENGTH_SLICE):
        rows = np.concatenate([rows for name, _, rows in groups if name == column])
        assert sorted(rows.tolist()) == list(range(len(dataset)))
    assert {value for name, value, _ in groups if name == GOLD_SLICE} == set(LABELS)
    assert {value[:2] for name, value, _ in groups if name == LENGTH_SLICE} == {
        "Q1",
        "Q2",
        "Q3",
        "Q4",
    }


def _source_slices(n: int, *, bootstrap: Bootstrap, agreement_threshold: float) -> Slices:
    """`_audit_data(n)` sliced by its "source" column, slices of 50 rows judged."""
    dataset, y_true, reference, candidate = _audit_data(n)
    section = slices_section(
        y_true,
        reference,
        candidate,
        dataset=dataset,
        labels=LABELS,
        columns=["source"],
        min_slice_size=50,
        n_bins=10,
        binning="equal_width",
        bootstrap=bootstrap,
        thresholds=[SliceThreshold("worst_slice_agreement", agreement_threshold, "value")],
    )
    return section


def test_slices_are_sorted_by_agreement_and_the_broken_one_fails() -> None:
    section = _source_slices(240, bootstrap=BOOTSTRAP, agreement_threshold=0.9)
    assert section.columns == ["source", GOLD_SLICE, LENGTH_SLICE]
    agreements = [item.agreement.value for item in section.slices]
    assert agreements == sorted(agreements)
    worst = section.slices[0]
    assert (worst.column, worst.value) == ("source", "forum")
    assert worst.failing == ["worst_slice_agreement"]
    assert all(item.failing == [] for item in section.slices if item.agreement.value >= 0.9)
    for item in section.slices:
        assert item.judged == (item.n >= 50)
        assert item.agreement.ci_low <= item.agreement.value <= item.agreement.ci_high
        assert item.accuracy_delta.value == pytest.approx(
            item.candidate_accuracy - item.reference_accuracy
        )


def test_small_slices_are_listed_not_judged() -> None:
    no_intervals = Bootstrap(n_resamples=0, confidence_level=0.95, seed=0)
    section = _source_slices(60, bootstrap=no_intervals, agreement_threshold=1.0)
    small = [item for item in section.slices if item.column == "source"]
    assert small and all(not item.judged and item.failing == [] for item in small)
    assert all(item.agreement.ci_low is None for item in section.slices)


def test_divergence_lists_the_largest_kl_rows() -> None:
    dataset, _, reference, candidate = _audit_data()
    section = divergence_section(reference, candidate, dataset=dataset, labels=LABELS)
    kl = kl_divergence_per_instance(reference, candidate)
    assert section.kl.max == pytest.approx(kl.max())
    assert section.kl.p99 == pytest.approx(np.quantile(kl, 0.99))
    assert len(section.most_divergent) == MOST_DIVERGENT_ROWS
    listed = [row.kl for row in section.most_divergent]
    assert listed == sorted(listed, reverse=True)
    top = section.most_divergent[0]
    assert top.text == dataset.texts[top.index]
    assert top.reference_proba == reference[top.index].tolist()
    assert sum(section.js_distance.histogram.counts) == len(dataset)


def test_smooth_calibration_delta_and_interval() -> None:
    _, y_true, reference, candidate = _audit_data()
    section = smooth_calibration_section(y_true, reference, candidate, bootstrap=BOOTSTRAP)
    assert section.reference.smooth_ece == pytest.approx(
        smooth_expected_calibration_error(y_true, reference)
    )
    assert section.delta.value == pytest.approx(
        section.candidate.smooth_ece - section.reference.smooth_ece
    )
    assert section.delta.ci_low is not None and section.delta.ci_high is not None
    assert section.delta.ci_low <= section.delta.ci_high
    assert len(section.reference.curve.confidence) == len(section.reference.curve.accuracy)


def test_exemplars_name_the_classes() -> None:
    dataset, _, reference, candidate = _audit_data()
    section = exemplars_section(reference, candidate, dataset=dataset, labels=LABELS)
    assert section.groups
    flipped = int((reference.argmax(1) != candidate.argmax(1)).sum())
    assert sum(group.count for group in section.groups) == flipped
    for group in section.groups:
        assert group.reference_prediction != group.candidate_prediction
        assert len(group.rows) <= section.per_group
        for row in group.rows:
            assert LABELS[int(reference[row.index].argmax())] == group.reference_prediction
