"""The rows file: what it holds, and reading it a page at a time across row groups."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from trustdiff.rows import RowOutcomes, read_rows_page, rows_labels, write_rows

LABELS = ["neg", "neutral", "pos"]


def _outcomes(n: int, *, pairs: bool = False, seed: int = 0) -> RowOutcomes:
    rng = np.random.default_rng(seed)
    reference = rng.dirichlet(np.ones(3), size=n)
    candidate = rng.dirichlet(np.ones(3), size=n)
    return RowOutcomes(
        y_true=rng.integers(0, 3, size=n),
        reference_proba=reference,
        candidate_proba=candidate,
        labels=LABELS,
        row_numbers=list(range(2, n + 2)),
        texts=[f"text <{index}> é" for index in range(n)],
        text_pairs=[f"pair {index}" for index in range(n)] if pairs else None,
    )


def test_the_file_holds_each_outcome_exactly(tmp_path: Path) -> None:
    outcomes = _outcomes(50)
    path = tmp_path / "rows.parquet"
    info = write_rows(path, outcomes, row_group_size=16)
    table = pq.read_table(path)
    assert table.num_rows == info.count == 50
    assert pq.ParquetFile(path).num_row_groups == 4
    assert "text" not in table.column_names
    columns = table.to_pydict()
    np.testing.assert_array_equal(np.array(columns["reference_proba"]), outcomes.reference_proba)
    np.testing.assert_array_equal(np.array(columns["candidate_proba"]), outcomes.candidate_proba)
    assert columns["label"] == [LABELS[i] for i in outcomes.y_true]
    assert columns["candidate_prediction"] == [LABELS[i] for i in outcomes.candidate_prediction]
    assert columns["flipped"] == outcomes.flipped.tolist()
    assert info.flipped == sum(columns["flipped"]) > 0
    assert columns["row_number"] == list(range(2, 52))
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.size_bytes == path.stat().st_size
    assert rows_labels(path) == LABELS


def test_text_and_text_pairs_only_when_asked(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    write_rows(buffer, _outcomes(5, pairs=True), include_text=True)
    columns = pq.read_table(io.BytesIO(buffer.getvalue())).to_pydict()
    assert columns["text"][1] == "text <1> é"
    assert columns["text_pair"][4] == "pair 4"


def test_pages_walk_every_row_across_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    write_rows(path, _outcomes(50), include_text=True, row_group_size=7)
    seen, position, pages = [], 0, 0
    while position is not None:
        page = read_rows_page(path, position=position, limit=11)
        seen += [item["index"] for item in page.items]
        position = page.next_position
        pages += 1
    assert seen == list(range(50))
    assert pages == 5
    assert page.total == 50


def test_flipped_pages_hold_only_flipped_rows(tmp_path: Path) -> None:
    outcomes = _outcomes(60)
    path = tmp_path / "rows.parquet"
    write_rows(path, outcomes, row_group_size=8)
    expected = np.flatnonzero(outcomes.flipped).tolist()
    seen: list[int] = []
    position: int | None = 0
    while position is not None:
        page = read_rows_page(path, position=position, limit=4, flipped_only=True)
        assert len(page.items) <= 4
        seen += [item["index"] for item in page.items]
        position = page.next_position
    assert seen == expected


def test_a_page_without_text_reads_no_text_and_items_are_json_ready(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    write_rows(path, _outcomes(3), include_text=True)
    item = read_rows_page(path, limit=1, include_text=False).items[0]
    assert set(item) == {
        "index", "row_number", "label", "reference_prediction", "candidate_prediction",
        "flipped", "reference_proba", "candidate_proba",
    }  # fmt: skip
    assert isinstance(item["reference_proba"], list)
    assert isinstance(item["label"], str)


def test_the_last_page_and_bad_requests(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    write_rows(path, _outcomes(10))
    last = read_rows_page(path, position=10)
    assert (last.items, last.next_position) == ([], None)
    with pytest.raises(ValueError, match="position 11"):
        read_rows_page(path, position=11)
    with pytest.raises(ValueError, match="limit"):
        read_rows_page(path, limit=0)


def test_outcomes_check_their_shapes() -> None:
    with pytest.raises(ValueError, match="candidate_proba"):
        RowOutcomes(
            y_true=np.zeros(2, dtype=np.intp),
            reference_proba=np.full((2, 2), 0.5),
            candidate_proba=np.full((3, 2), 0.5),
            labels=["a", "b"],
            row_numbers=[1, 2],
            texts=["x", "y"],
        )
