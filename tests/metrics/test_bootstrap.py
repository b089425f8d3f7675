"""Seeded bootstrap intervals: shapes, determinism, pairing, and the edge rules."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from trustdiff.metrics.bootstrap import (
    CHUNK_INDICES,
    bootstrap_index_chunks,
    bootstrap_indices,
    bootstrap_mean_interval,
    paired_bootstrap_delta,
    paired_bootstrap_replicates,
    percentile_interval,
)


def test_indices_have_the_requested_shape_and_range() -> None:
    indices = bootstrap_indices(7, n_resamples=50, seed=3)
    assert indices.shape == (50, 7)
    assert indices.min() >= 0
    assert indices.max() <= 6


def test_indices_are_determined_by_the_seed() -> None:
    first = bootstrap_indices(20, n_resamples=10, seed=5)
    np.testing.assert_array_equal(first, bootstrap_indices(20, n_resamples=10, seed=5))
    assert not np.array_equal(first, bootstrap_indices(20, n_resamples=10, seed=6))


@pytest.mark.parametrize(("n", "n_resamples"), [(0, 10), (5, 0)])
def test_indices_refuse_empty_requests(n: int, n_resamples: int) -> None:
    with pytest.raises(ValueError):
        bootstrap_indices(n, n_resamples=n_resamples, seed=0)


def test_percentile_interval_by_hand_ignores_nan() -> None:
    samples = np.concatenate([np.arange(101, dtype=float), [np.nan, np.nan]])
    assert percentile_interval(samples, confidence_level=0.9) == pytest.approx((5.0, 95.0))


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5])
def test_percentile_interval_refuses_bad_levels(level: float) -> None:
    with pytest.raises(ValueError, match="confidence_level"):
        percentile_interval([1.0, 2.0], confidence_level=level)


def test_percentile_interval_needs_a_finite_replicate() -> None:
    with pytest.raises(ValueError, match="finite"):
        percentile_interval([np.nan])


def test_mean_interval_brackets_the_mean_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(0)
    small = rng.normal(size=50)
    large = rng.normal(size=5000)
    low, high = bootstrap_mean_interval(small, n_resamples=500, seed=1)
    assert low < small.mean() < high
    large_low, large_high = bootstrap_mean_interval(large, n_resamples=500, seed=1)
    assert large_high - large_low < high - low
    # A 95% interval of a mean of n standard normals is about ±1.96/sqrt(n).
    assert large_high - large_low == pytest.approx(2 * 1.96 / np.sqrt(5000), rel=0.15)


def test_mean_interval_of_a_constant_is_that_constant() -> None:
    assert bootstrap_mean_interval([0.25] * 9, n_resamples=20) == (0.25, 0.25)


@pytest.mark.parametrize("values", [[[1.0, 2.0]], [1.0, np.nan]])
def test_mean_interval_refuses_bad_values(values: list) -> None:
    with pytest.raises(ValueError):
        bootstrap_mean_interval(values)


def test_paired_delta_of_identical_models_is_exactly_zero() -> None:
    values = np.random.default_rng(2).random(30)

    def statistic(rows: np.ndarray) -> tuple[float, float]:
        return float(values[rows].mean()), float(values[rows].mean())

    assert paired_bootstrap_delta(statistic, 30, n_resamples=100) == (0.0, 0.0)


def test_paired_delta_shares_the_resampled_rows_between_models() -> None:
    # A constant per-instance offset survives pairing exactly; unpaired resampling would
    # add the spread of both samples to the interval.
    reference = np.random.default_rng(3).random(40)
    candidate = reference + 0.1

    def statistic(rows: np.ndarray) -> tuple[float, float]:
        return float(reference[rows].mean()), float(candidate[rows].mean())

    low, high = paired_bootstrap_delta(statistic, 40, n_resamples=200, seed=4)
    assert low == pytest.approx(0.1)
    assert high == pytest.approx(0.1)


def test_paired_replicates_share_one_index_matrix_across_statistics() -> None:
    values = np.random.default_rng(6).random(25)
    seen: list[np.ndarray] = []

    def statistics(rows: np.ndarray) -> dict[str, float]:
        seen.append(rows.copy())
        return {"mean": float(values[rows].mean()), "max": float(values[rows].max())}

    replicates = paired_bootstrap_replicates(statistics, 25, n_resamples=40, seed=9)
    indices = bootstrap_indices(25, n_resamples=40, seed=9)
    np.testing.assert_array_equal(np.array(seen), indices)
    np.testing.assert_array_equal(replicates["mean"], values[indices].mean(axis=1))
    np.testing.assert_array_equal(replicates["max"], values[indices].max(axis=1))
    again = paired_bootstrap_replicates(statistics, 25, n_resamples=40, seed=9)
    assert again.keys() == replicates.keys()
    np.testing.assert_array_equal(again["mean"], replicates["mean"])


def test_paired_replicates_refuse_changing_names() -> None:
    calls = iter(range(10))

    def statistics(rows: np.ndarray) -> dict[str, float]:
        return {"a": 0.0} if next(calls) == 0 else {"b": 0.0}

    with pytest.raises(ValueError, match="statistics returned"):
        paired_bootstrap_replicates(statistics, 5, n_resamples=3)


@pytest.mark.parametrize("n", [1, 7, 1001])
@pytest.mark.parametrize("chunk_indices", [1, 5000, 1 << 22])
def test_index_chunks_concatenate_to_the_whole_matrix(n: int, chunk_indices: int) -> None:
    chunks = list(bootstrap_index_chunks(n, n_resamples=37, seed=11, chunk_indices=chunk_indices))
    np.testing.assert_array_equal(
        np.concatenate(chunks), bootstrap_indices(n, n_resamples=37, seed=11)
    )
    assert max(chunk.shape[0] for chunk in chunks) == min(37, max(1, chunk_indices // n))


def test_paired_replicates_match_the_whole_matrix_loop() -> None:
    """Streaming changes memory only: the replicates (hence every interval) are unchanged."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=30_001)

    def statistics(rows: np.ndarray) -> dict[str, float]:
        return {"mean": float(values[rows].mean()), "max": float(values[rows].max())}

    streamed = paired_bootstrap_replicates(statistics, values.size, n_resamples=300, seed=4)
    whole = bootstrap_indices(values.size, n_resamples=300, seed=4)
    for name in ("mean", "max"):
        expected = np.array([statistics(rows)[name] for rows in whole])
        np.testing.assert_array_equal(streamed[name], expected)
    means = values[whole].mean(axis=1)
    assert bootstrap_mean_interval(values, n_resamples=300, seed=4) == percentile_interval(means)


def test_paired_replicates_memory_does_not_grow_with_the_resample_count() -> None:
    n, n_resamples = 20_000, 1_000  # the whole index matrix would take 160 MB
    values = np.arange(n, dtype=float)
    tracemalloc.start()
    try:
        paired_bootstrap_replicates(
            lambda rows: {"mean": float(values[rows].mean())}, n, n_resamples=n_resamples, seed=0
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # At most two chunks are alive: the one being drawn and the one still being read.
    assert peak < 2 * 8 * CHUNK_INDICES + (8 << 20) < 8 * n * n_resamples
