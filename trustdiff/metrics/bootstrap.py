"""Seeded bootstrap resampling: percentile intervals for a mean and for paired comparisons."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

# Indices drawn per chunk of resamples (8 bytes each): 32 MiB, whatever the resample count.
CHUNK_INDICES = 1 << 22


def _check_sizes(n: int, n_resamples: int) -> None:
    if n < 1:
        raise ValueError(f"bootstrap needs at least one instance, got n={n}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")


def bootstrap_indices(n: int, *, n_resamples: int, seed: int) -> NDArray[np.intp]:
    """Resampled row indices, shape (n_resamples, n), drawn with replacement.

    The same index matrix is used for every statistic of a paired comparison, so both models
    are always judged on the identical resampled instances. It takes `8 · n · n_resamples`
    bytes: large datasets read it in chunks with `bootstrap_index_chunks`.
    """
    _check_sizes(n, n_resamples)
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_resamples, n))


def bootstrap_index_chunks(
    n: int, *, n_resamples: int, seed: int, chunk_indices: int = CHUNK_INDICES
) -> Iterator[NDArray[np.intp]]:
    """`bootstrap_indices(n, n_resamples=..., seed=...)`, a block of whole resamples at a time.

    Yields arrays of shape (c, n) whose concatenation is exactly that matrix: numpy's
    generator keeps its state (including a half-used 32-bit word) between calls, so drawing
    the rows in blocks draws the same numbers as drawing them at once — a test pins this.
    Each block holds about `chunk_indices` indices (at least one resample), so memory is
    O(n · c), independent of `n_resamples`.
    """
    _check_sizes(n, n_resamples)
    if chunk_indices < 1:
        raise ValueError(f"chunk_indices must be >= 1, got {chunk_indices}")
    rng = np.random.default_rng(seed)
    per_chunk = max(1, chunk_indices // n)
    for start in range(0, n_resamples, per_chunk):
        yield rng.integers(0, n, size=(min(per_chunk, n_resamples - start), n))


def percentile_interval(
    samples: ArrayLike, *, confidence_level: float = 0.95
) -> tuple[float, float]:
    """The (lower, upper) percentile interval of bootstrap replicates, NaN replicates ignored."""
    if not 0.0 < confidence_level < 1.0:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level}")
    values = np.asarray(samples, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        raise ValueError("no finite bootstrap replicate to build an interval from")
    alpha = (1.0 - confidence_level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_mean_interval(
    values: ArrayLike,
    *,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`, shape (n,)."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError("values contain NaN")
    means = np.concatenate(
        [
            array[indices].mean(axis=1)
            for indices in bootstrap_index_chunks(array.size, n_resamples=n_resamples, seed=seed)
        ]
    )
    return percentile_interval(means, confidence_level=confidence_level)


def paired_bootstrap_replicates(
    statistics: Callable[[NDArray[np.intp]], Mapping[str, float]],
    n: int,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, NDArray[np.float64]]:
    """Bootstrap replicates of several named statistics, all on the same resampled rows.

    `statistics(rows)` computes every statistic on the instances `rows` (shape (n,)) and
    returns them by name; it is called once per row of `bootstrap_indices(n, n_resamples,
    seed)`, which is drawn in chunks (`bootstrap_index_chunks`) so that memory does not grow
    with `n_resamples`. Returns each name's replicates, shape (n_resamples,). A statistic
    that compares two models (a difference, an agreement) thus always sees both on the
    identical instances — that pairing is what keeps the interval of a difference narrow
    when the models err alike.
    Every call must return the same names.
    """
    chunks = bootstrap_index_chunks(n, n_resamples=n_resamples, seed=seed)
    replicates: dict[str, NDArray[np.float64]] = {}
    for replicate, rows in enumerate(rows for chunk in chunks for rows in chunk):
        values = statistics(rows)
        if replicate == 0:
            replicates = {name: np.empty(n_resamples, dtype=np.float64) for name in values}
        elif values.keys() != replicates.keys():
            raise ValueError(
                f"statistics returned {sorted(values)} on replicate {replicate}, "
                f"{sorted(replicates)} before"
            )
        for name, value in values.items():
            replicates[name][replicate] = value
    return replicates


def paired_bootstrap_delta(
    statistic: Callable[[NDArray[np.intp]], tuple[float, float]],
    n: int,
    *,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Interval of `candidate − reference` for a statistic computed on shared resamples.

    `statistic(indices)` returns `(reference_value, candidate_value)` computed on the rows
    `indices` (shape (n,)); every replicate hands both models the same rows.
    """

    def delta(rows: NDArray[np.intp]) -> dict[str, float]:
        reference_value, candidate_value = statistic(rows)
        return {"delta": candidate_value - reference_value}

    replicates = paired_bootstrap_replicates(delta, n, n_resamples=n_resamples, seed=seed)
    return percentile_interval(replicates["delta"], confidence_level=confidence_level)
