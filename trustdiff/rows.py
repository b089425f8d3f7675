"""Per-row outcomes of an audit as one Parquet file: written in row groups, read a page at a time.

The result document keeps summaries and the explained instances; every audited row's outcome
(both probability vectors, both predictions, the gold label, the text only when asked) lives
in this columnar file beside it. At a million rows the file is tens of megabytes where the
same rows as JSON would be hundreds, and a page of it is read without loading the rest.

pyarrow is imported on use, so that the result document stays importable without it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import pyarrow as pa

ROWS_MEDIA_TYPE = "application/vnd.apache.parquet"
ROWS_FORMAT_VERSION = "1"
# Rows per Parquet row group: a page read decodes at most two groups, so this bounds the
# cost of the first page of a million-row file; writing holds one group's text at a time.
ROW_GROUP_SIZE = 16_384
_METADATA_KEY = b"trustdiff.rows"
# Columns a page reads when the caller does not ask for text.
OUTCOME_COLUMNS = (
    "index",
    "row_number",
    "label",
    "reference_prediction",
    "candidate_prediction",
    "flipped",
    "reference_proba",
    "candidate_proba",
)
TEXT_COLUMNS = ("text", "text_pair")


@dataclass(frozen=True)
class RowOutcomes:
    """Every audited row's outcome, as arrays in row order.

    `y_true` (n,) gold class ids; `reference_proba`, `candidate_proba` (n, K) in the order of
    `labels`; `row_numbers` (n,) each row's 1-based data row in the file; `texts` and
    `text_pairs` (n,) the inputs, written only when asked.
    """

    y_true: NDArray[np.intp]
    reference_proba: NDArray[np.float64]
    candidate_proba: NDArray[np.float64]
    labels: Sequence[str]
    row_numbers: Sequence[int]
    texts: Sequence[str]
    text_pairs: Sequence[str] | None = None

    def __post_init__(self) -> None:
        n = self.y_true.shape[0]
        k = len(self.labels)
        for name in ("reference_proba", "candidate_proba"):
            shape = getattr(self, name).shape
            if shape != (n, k):
                raise ValueError(f"{name} has shape {shape}, expected ({n}, {k})")
        for name in ("row_numbers", "texts", "text_pairs"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} values for {n} rows")

    def __len__(self) -> int:
        return int(self.y_true.shape[0])

    @property
    def reference_prediction(self) -> NDArray[np.intp]:
        return self.reference_proba.argmax(axis=1)

    @property
    def candidate_prediction(self) -> NDArray[np.intp]:
        return self.candidate_proba.argmax(axis=1)

    @property
    def flipped(self) -> NDArray[np.bool_]:
        """Rows whose predicted class differs between the two models."""
        return self.reference_prediction != self.candidate_prediction


@dataclass(frozen=True)
class RowsFileInfo:
    """What `write_rows` wrote: row count, flipped rows, whether text is in, the file's sha256."""

    count: int
    flipped: int
    text: bool
    sha256: str
    size_bytes: int


def _schema(labels: Sequence[str], *, include_text: bool, text_pair: bool) -> pa.Schema:
    import pyarrow as pa

    label = pa.dictionary(pa.int32(), pa.string())
    proba = pa.list_(pa.float64(), len(labels))
    fields = [
        pa.field("index", pa.int64(), nullable=False),
        pa.field("row_number", pa.int64(), nullable=False),
        pa.field("label", label, nullable=False),
        pa.field("reference_prediction", label, nullable=False),
        pa.field("candidate_prediction", label, nullable=False),
        pa.field("flipped", pa.bool_(), nullable=False),
        pa.field("reference_proba", proba, nullable=False),
        pa.field("candidate_proba", proba, nullable=False),
    ]
    if include_text:
        fields.append(pa.field("text", pa.string(), nullable=False))
        if text_pair:
            fields.append(pa.field("text_pair", pa.string(), nullable=False))
    metadata = {"labels": list(labels), "format_version": ROWS_FORMAT_VERSION}
    return pa.schema(fields, metadata={_METADATA_KEY: json.dumps(metadata).encode()})


def _row_group(
    outcomes: RowOutcomes, start: int, stop: int, schema: pa.Schema, label_names: pa.Array
) -> pa.Table:
    import pyarrow as pa

    def labels_of(ids: NDArray[np.intp]) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(ids.astype(np.int32)), label_names)

    def proba_of(matrix: NDArray[np.float64]) -> pa.FixedSizeListArray:
        block = np.ascontiguousarray(matrix[start:stop], dtype=np.float64)
        return pa.FixedSizeListArray.from_arrays(pa.array(block.ravel()), block.shape[1])

    reference_prediction = outcomes.reference_proba[start:stop].argmax(axis=1)
    candidate_prediction = outcomes.candidate_proba[start:stop].argmax(axis=1)
    columns: dict[str, Any] = {
        "index": pa.array(np.arange(start, stop, dtype=np.int64)),
        "row_number": pa.array(np.asarray(outcomes.row_numbers[start:stop], dtype=np.int64)),
        "label": labels_of(outcomes.y_true[start:stop]),
        "reference_prediction": labels_of(reference_prediction),
        "candidate_prediction": labels_of(candidate_prediction),
        "flipped": pa.array(reference_prediction != candidate_prediction),
        "reference_proba": proba_of(outcomes.reference_proba),
        "candidate_proba": proba_of(outcomes.candidate_proba),
    }
    if "text" in schema.names:
        columns["text"] = pa.array(outcomes.texts[start:stop], pa.string())
    if "text_pair" in schema.names and outcomes.text_pairs is not None:
        columns["text_pair"] = pa.array(outcomes.text_pairs[start:stop], pa.string())
    return pa.Table.from_pydict(columns, schema=schema)


class _HashingWriter:
    """A binary file wrapper that hashes and counts what passes through it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False


def write_rows(
    destination: str | os.PathLike[str] | IO[bytes],
    outcomes: RowOutcomes,
    *,
    include_text: bool = False,
    row_group_size: int = ROW_GROUP_SIZE,
) -> RowsFileInfo:
    """Write `outcomes` as Parquet to a path or an open binary file, one row group at a time.

    Columns: `index` (0-based row in the audited dataset), `row_number` (1-based data row in
    the file), `label`, `reference_prediction`, `candidate_prediction` (label names,
    dictionary-encoded), `flipped` (the predictions differ), `reference_proba` and
    `candidate_proba` (K float64 each, in the order of `labels`), and with `include_text`
    `text` (and `text_pair` for sentence pairs). The label names are also in the schema
    metadata. Only one row group's text is converted at a time, so writing holds no second
    copy of the dataset.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if row_group_size < 1:
        raise ValueError(f"row_group_size must be >= 1, got {row_group_size}")
    schema = _schema(
        outcomes.labels, include_text=include_text, text_pair=outcomes.text_pairs is not None
    )
    label_names = pa.array(list(outcomes.labels), pa.string())
    handle: IO[bytes]
    if isinstance(destination, str | os.PathLike):
        handle = open(destination, "wb")  # noqa: SIM115  # closed below
        owned = True
    else:
        handle, owned = destination, False
    sink = _HashingWriter(handle)
    try:
        with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
            for start in range(0, len(outcomes), row_group_size):
                stop = min(start + row_group_size, len(outcomes))
                writer.write_table(
                    _row_group(outcomes, start, stop, schema, label_names),
                    row_group_size=row_group_size,
                )
    finally:
        if owned:
            handle.close()
    return RowsFileInfo(
        count=len(outcomes),
        flipped=int(outcomes.flipped.sum()),
        text=include_text,
        sha256=sink.digest.hexdigest(),
        size_bytes=sink.size,
    )


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowsPage:
    """Up to `limit` rows as JSON-ready dicts, and the file position the next page starts at
    (None when no matching row follows)."""

    items: list[dict[str, Any]]
    next_position: int | None
    total: int


def rows_labels(source: str | os.PathLike[str] | IO[bytes]) -> list[str]:
    """The label names a rows file was written with (its schema metadata)."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(source).metadata or {}
    return list(json.loads(metadata[_METADATA_KEY])["labels"])


def read_rows_page(
    source: str | os.PathLike[str] | IO[bytes],
    *,
    position: int = 0,
    limit: int = 100,
    flipped_only: bool = False,
    include_text: bool = True,
) -> RowsPage:
    """Rows of a rows file from file position `position` on, at most `limit` of them.

    With `flipped_only`, only rows whose predictions differ are returned (positions still
    count every row, so a page's `next_position` resumes the scan). Only the row groups the
    page needs are decoded. Raises `ValueError` when `position` is outside `[0, total]` or
    `limit < 1`.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    parquet = pq.ParquetFile(source)
    total = parquet.metadata.num_rows
    if not 0 <= position <= total:
        raise ValueError(f"position {position} is outside the file's {total} rows")
    columns = [
        name for name in parquet.schema_arrow.names if include_text or name in OUTCOME_COLUMNS
    ]
    items: list[dict[str, Any]] = []
    group_start = 0
    for group in range(parquet.num_row_groups):
        group_rows = parquet.metadata.row_group(group).num_rows
        group_stop = group_start + group_rows
        if group_stop <= position:
            group_start = group_stop
            continue
        table = parquet.read_row_group(group, columns=columns)
        table = table.slice(max(position - group_start, 0))
        if flipped_only:
            table = table.filter(pc.field("flipped"))
        # One more than asked, to know whether another page follows.
        items.extend(table.slice(0, limit + 1 - len(items)).to_pylist())
        if len(items) > limit:
            break
        group_start = group_stop
    if len(items) > limit:
        return RowsPage(items=items[:limit], next_position=items[limit]["index"], total=total)
    return RowsPage(items=items, next_position=None, total=total)
