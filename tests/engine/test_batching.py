"""Batch planning: every row once, within budget and row cap, cut at costly width jumps."""

from __future__ import annotations

import numpy as np
import pytest

from trustdiff.batching import plan_batches


def test_batches_cover_every_row_once_within_budget_and_row_cap() -> None:
    lengths = np.random.default_rng(0).integers(1, 120, size=500)
    for budget, rows, overhead in [(512, 64, 0), (512, 64, 64), (4096, 16, 10_000), (50, 8, 5)]:
        batches = plan_batches(
            lengths, token_budget=budget, max_rows=rows, batch_overhead_tokens=overhead
        )
        np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(500))
        widths = [int(lengths[batch].max()) for batch in batches]
        assert widths == sorted(widths, reverse=True)  # longest first
        for batch, width in zip(batches, widths, strict=True):
            assert len(batch) <= rows
            assert len(batch) == 1 or len(batch) * width <= budget


def test_batches_close_at_width_jumps_only_when_padding_costs_more_than_a_pass() -> None:
    lengths = [30, 30, 10, 10, 10, 10, 9, 9]
    # Free passes: every batch holds one length, no padding at all.
    free = plan_batches(lengths, token_budget=1000, max_rows=100, batch_overhead_tokens=0)
    assert [sorted(batch.tolist()) for batch in free] == [[0, 1], [2, 3, 4, 5], [6, 7]]
    # A pass costs 25 tokens: 30 -> 10 would pad 6 rows by 20 (120 > 25), so it closes;
    # 10 -> 9 would pad 2 rows by 1 (2 < 25), so it does not.
    mixed = plan_batches(lengths, token_budget=1000, max_rows=100, batch_overhead_tokens=25)
    assert [sorted(batch.tolist()) for batch in mixed] == [[0, 1], [2, 3, 4, 5, 6, 7]]
    # Passes so dear that only the row cap closes batches: fixed-size sorted batches.
    fixed = plan_batches(lengths, token_budget=1000, max_rows=3, batch_overhead_tokens=10**6)
    assert [len(batch) for batch in fixed] == [3, 3, 2]
    # A row longer than the budget is a batch of its own.
    alone = plan_batches([40, 5, 5], token_budget=20, max_rows=8, batch_overhead_tokens=10**6)
    assert [batch.tolist() for batch in alone] == [[0], [1, 2]]
    assert plan_batches([], token_budget=10, max_rows=1, batch_overhead_tokens=0) == []
    with pytest.raises(ValueError, match="token_budget"):
        plan_batches([1], token_budget=0, max_rows=1, batch_overhead_tokens=0)
