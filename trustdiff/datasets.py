"""Read labelled text datasets (JSONL, CSV, TSV), reporting each bad row by number; no torch."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from trustdiff.config import DatasetFormat, DatasetSpec
from trustdiff.errors import DatasetError, DatasetNotFoundError

TextInput = str | tuple[str, str]
_READ_BLOCK_BYTES = 1 << 20

_SUFFIX_FORMATS: dict[str, DatasetFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
}


@dataclass(frozen=True)
class Dataset:
    """Validated rows, in file order, after `limit` and sampling.

    `labels[i]` is the id of row i's gold label in `label_names` (the audit's label space);
    `row_numbers[i]` its 1-based data row in the file (see `read_dataset`). `fingerprint` is
    the sha256 of the file bytes; `rows_in_file` counts every data row before sampling.
    `columns` keeps every other field of the file (e.g. `source`, `language`), one value per
    kept row, for slicing: CSV/TSV values are strings, JSONL values as parsed (None where a
    row lacks the field).
    """

    path: Path
    format: DatasetFormat
    texts: list[str]
    text_pairs: list[str] | None
    labels: list[int]
    label_names: list[str]
    row_numbers: list[int]
    rows_in_file: int
    fingerprint: str
    columns: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def inputs(self) -> list[TextInput]:
        """Model inputs: the text, or the (text, text pair) tuple for sentence-pair data."""
        if self.text_pairs is None:
            return list(self.texts)
        return list(zip(self.texts, self.text_pairs, strict=True))


@dataclass(frozen=True)
class DatasetSummary:
    """What an uploaded file holds, for accepting it before any audit uses it."""

    path: Path
    format: DatasetFormat
    rows: int
    fields: list[str]
    label_names: list[str]
    fingerprint: str


# Slots: one of these exists per data row while a file is read.
@dataclass(frozen=True, slots=True)
class _RawRow:
    row: int
    text: str
    text_pair: str | None
    label: str | int
    other: dict[str, Any] | None  # None when the row has no other field (saves a dict a row)


def dataset_format(path: Path, spec: DatasetSpec) -> DatasetFormat:
    """`spec.format`, or the format named by the file suffix (.jsonl/.ndjson, .csv, .tsv)."""
    if spec.format is not None:
        return spec.format
    try:
        return _SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        raise DatasetError(
            f"cannot infer the dataset format from suffix {path.suffix!r} of {path.name!r}; "
            f"use .jsonl, .csv or .tsv or give the format"
        ) from None


def _file_sha256(path: Path) -> str:
    """sha256 of the file's bytes, read in blocks (the file is never held whole)."""
    if not path.is_file():
        raise DatasetNotFoundError(f"dataset file {str(path)!r} does not exist")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_READ_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _text_lines(path: Path) -> Iterator[TextIO]:
    """The file decoded as UTF-8 as it is read (a byte-order mark is dropped).

    Line endings are passed through (`newline=""`), as the csv module needs; a byte that is
    not UTF-8 becomes a `DatasetError`, wherever in the file it is.
    """
    with path.open(encoding="utf-8-sig", newline="") as handle:
        try:
            yield handle
        except UnicodeDecodeError as error:
            raise DatasetError(
                f"dataset file {path.name!r} is not UTF-8: {error.reason} "
                f"(byte {error.object[error.start : error.start + 1]!r})"
            ) from error


def _text_value(value: Any, *, field: str, row: int) -> str:
    if value is None:
        raise DatasetError(f"row {row}: missing field {field!r}", row=row)
    if not isinstance(value, str):
        raise DatasetError(
            f"row {row}: field {field!r} must be a string, got {type(value).__name__}", row=row
        )
    if not value.strip():
        raise DatasetError(f"row {row}: field {field!r} is empty", row=row)
    if "\x00" in value:
        # Refused rather than altered: no tokenizer gives NUL a meaning, and Postgres JSON
        # cannot store it, so a result echoing the text would be lost after the compute.
        raise DatasetError(f"row {row}: field {field!r} contains a NUL character (U+0000)", row=row)
    return value


def _label_value(value: Any, *, field: str, row: int) -> str | int:
    # bool is an int subclass; `true` as a label is a data error, not class 1.
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DatasetError(f"row {row}: missing field {field!r}", row=row)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DatasetError(
            f"row {row}: field {field!r} must be a label name or integer id, got "
            f"{type(value).__name__}",
            row=row,
        )
    if isinstance(value, str) and "\x00" in value:
        raise DatasetError(f"row {row}: label {value!r} contains a NUL character", row=row)
    return value.strip() if isinstance(value, str) else value


def _jsonl_rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    # Row numbers are line numbers, so an editor jumps straight to the bad line; blank lines
    # are skipped but still counted.
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(
                f"row {line_number}: invalid JSON ({error.msg} at column {error.colno})",
                row=line_number,
            ) from error
        except RecursionError:
            raise DatasetError(
                f"row {line_number}: JSON nested too deeply to read", row=line_number
            ) from None
        except ValueError as error:
            # Python refuses integers of more than 4,300 digits (`sys.int_info`).
            raise DatasetError(
                f"row {line_number}: unreadable JSON ({error})", row=line_number
            ) from error
        if not isinstance(record, dict):
            raise DatasetError(
                f"row {line_number}: expected a JSON object, got {type(record).__name__}",
                row=line_number,
            )
        _refuse_nul_names(record, row=line_number)
        yield line_number, record


def _refuse_nul_names(names: Iterable[str], *, row: int | None) -> None:
    # Field names are stored and echoed; a NUL in them is no name anyone meant, and
    # databases such as Postgres cannot store it in text.
    for name in names:
        if "\x00" in name:
            where = f"row {row}: " if row is not None else "header: "
            raise DatasetError(f"{where}field name {name!r} contains a NUL character", row=row)


def _delimited_rows(
    source: TextIO, spec: DatasetSpec, *, delimiter: str
) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    # TSV follows the GLUE convention: no quoting, so a lone `"` inside a sentence is text.
    # CSV uses standard quoting (RFC 4180), which is how quoted commas and newlines survive.
    if delimiter == "\t":
        reader = csv.reader(source, delimiter=delimiter, quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(source, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL)
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError("dataset file is empty (no header row)") from None
    except csv.Error as error:
        raise DatasetError(f"header row: {error}") from error
    header = [name.strip() for name in header]
    _refuse_nul_names(header, row=None)
    if len(set(header)) != len(header):
        raise DatasetError(f"header repeats a column name: {header}")
    required = [spec.text_field, spec.label_field]
    if spec.text_pair_field is not None:
        required.append(spec.text_pair_field)
    missing = [name for name in required if name not in header]
    if missing:
        raise DatasetError(
            f"missing field {missing[0]!r}: the header has columns {header}",
            details={"columns": header},
        )

    def records() -> Iterator[tuple[int, dict[str, Any]]]:
        row = 0
        try:
            for values in reader:
                if not values or (len(values) == 1 and not values[0].strip()):
                    continue  # blank line
                row += 1
                if len(values) != len(header):
                    raise DatasetError(
                        f"row {row}: expected {len(header)} columns ({header}), got {len(values)}",
                        row=row,
                    )
                yield row, dict(zip(header, values, strict=True))
        except csv.Error as error:
            raise DatasetError(f"row {row + 1}: {error}", row=row + 1) from error

    return header, records()


def _raw_rows(
    source: TextIO, spec: DatasetSpec, file_format: DatasetFormat
) -> tuple[list[str], list[_RawRow]]:
    """Every data row, validated for presence and non-empty text, plus the fields seen."""
    fields: list[str] = []
    if file_format == "jsonl":
        records = _jsonl_rows(source)
    else:
        fields, records = _delimited_rows(
            source, spec, delimiter="\t" if file_format == "tsv" else ","
        )
    seen_fields = dict.fromkeys(fields)
    rows = []
    for row, record in records:
        if file_format == "jsonl":
            seen_fields.update(dict.fromkeys(record))
        text_value = _text_value(record.get(spec.text_field), field=spec.text_field, row=row)
        pair_value = None
        if spec.text_pair_field is not None:
            pair_value = _text_value(
                record.get(spec.text_pair_field), field=spec.text_pair_field, row=row
            )
        label_value = _label_value(record.get(spec.label_field), field=spec.label_field, row=row)
        used = (spec.text_field, spec.text_pair_field, spec.label_field)
        other = {name: value for name, value in record.items() if name not in used} or None
        rows.append(
            _RawRow(row=row, text=text_value, text_pair=pair_value, label=label_value, other=other)
        )
    if not rows:
        raise DatasetError("dataset has no data rows")
    return list(seen_fields), rows


def _label_id(
    value: str | int,
    label_names: Sequence[str],
    label_ids: Mapping[str, int],
    *,
    field: str,
    row: int,
) -> int:
    """Resolve a label given as a name (first, via `label_ids`) or as an integer id."""
    if isinstance(value, str):
        if value in label_ids:
            return label_ids[value]
        try:
            value = int(value)
        except ValueError:
            raise DatasetError(
                f"row {row}: unknown label {value!r} in field {field!r}; "
                f"known labels are {list(label_names)}",
                row=row,
            ) from None
    if not 0 <= value < len(label_names):
        raise DatasetError(
            f"row {row}: label id {value} in field {field!r} is out of range for labels "
            f"{list(label_names)}",
            row=row,
        )
    return value


def _inferred_label_names(rows: Sequence[_RawRow]) -> list[str]:
    """Label names when the caller gives none: ids 0..max if all are integers, else sorted names."""
    values = {row.label for row in rows}
    if all(isinstance(value, int) or value.isdigit() for value in values):
        return [str(index) for index in range(max(int(value) for value in values) + 1)]
    return sorted(str(value) for value in values)


def read_dataset(
    path: Path, spec: DatasetSpec, *, labels: Sequence[str] | None = None, seed: int = 0
) -> Dataset:
    """Read and validate every row of `path`, then apply `spec.limit` and `spec.sampling`.

    Labels may be given as names or as integer ids into `labels` (the audit's label names in
    id order; a name is matched first, so a label named "1" is never read as id 1). Without
    `labels`, they are inferred: ids `0..max` when all values are integers, otherwise the
    sorted distinct names.

    Every row is validated even when `limit` keeps fewer, so a file is accepted or refused as
    a whole. A bad row raises `DatasetError` with `row` set: for JSONL the 1-based line
    number, for CSV/TSV the 1-based record after the header (blank lines skipped). Bad rows
    are: invalid JSON, wrong column count, a missing field, an empty text, an unknown label.

    With `limit`, `sampling="head"` keeps the first rows and `"random"` a sample drawn with
    `random.Random(seed)`, kept in file order.
    """
    file_format = dataset_format(path, spec)
    fingerprint = _file_sha256(path)
    with _text_lines(path) as source:
        fields, rows = _raw_rows(source, spec, file_format)
    label_names = list(labels) if labels is not None else _inferred_label_names(rows)
    # The first id of each name, as `list.index` gives; a dict keeps this linear in rows.
    id_of_name: dict[str, int] = {}
    for index, name in enumerate(label_names):
        id_of_name.setdefault(name, index)
    label_ids = [
        _label_id(row.label, label_names, id_of_name, field=spec.label_field, row=row.row)
        for row in rows
    ]
    keep = list(range(len(rows)))
    if spec.limit is not None and spec.limit < len(rows):
        if spec.sampling == "random":
            keep = sorted(random.Random(seed).sample(keep, spec.limit))
        else:
            keep = keep[: spec.limit]
    return Dataset(
        path=path,
        format=file_format,
        texts=[rows[index].text for index in keep],
        text_pairs=(
            [rows[index].text_pair or "" for index in keep]
            if spec.text_pair_field is not None
            else None
        ),
        labels=[label_ids[index] for index in keep],
        label_names=label_names,
        row_numbers=[rows[index].row for index in keep],
        rows_in_file=len(rows),
        fingerprint=fingerprint,
        columns={
            name: [(rows[index].other or {}).get(name) for index in keep]
            for name in fields
            if name not in (spec.text_field, spec.text_pair_field, spec.label_field)
        },
    )


def validate_dataset_file(path: Path, spec: DatasetSpec) -> DatasetSummary:
    """Validate an uploaded file against `spec` without knowing the model's labels.

    Same row checks as `read_dataset`, except that any label value is accepted; the summary
    lists the distinct label values seen (as strings, sorted) for the caller to compare with a
    checkpoint later.
    """
    file_format = dataset_format(path, spec)
    fingerprint = _file_sha256(path)
    with _text_lines(path) as source:
        fields, rows = _raw_rows(source, spec, file_format)
    return DatasetSummary(
        path=path,
        format=file_format,
        rows=len(rows),
        fields=fields,
        label_names=sorted({str(row.label) for row in rows}),
        fingerprint=fingerprint,
    )
