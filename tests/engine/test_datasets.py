"""Dataset reading: three formats parse alike, labels by name or id, bad rows by number."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from tests.conftest import TinyAssets
from tests.tiny_models import write_dataset
from trustdiff.config import DatasetSpec
from trustdiff.datasets import read_dataset, validate_dataset_file
from trustdiff.errors import DatasetError, DatasetNotFoundError

LABELS = ["negative", "positive"]


def _spec(path: Path, **fields: object) -> DatasetSpec:
    return DatasetSpec(path=str(path), **fields)  # type: ignore[arg-type]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_csv_and_tsv_parse_identically(tiny_assets: TinyAssets) -> None:
    read = {
        suffix: read_dataset(
            tiny_assets.data_root / f"sentiment.{suffix}",
            _spec(tiny_assets.data_root / f"sentiment.{suffix}"),
            labels=LABELS,
        )
        for suffix in ("jsonl", "csv", "tsv")
    }
    jsonl = read["jsonl"]
    assert len(jsonl) == 48
    assert jsonl.rows_in_file == 48
    assert jsonl.label_names == LABELS
    for other in (read["csv"], read["tsv"]):
        assert other.texts == jsonl.texts
        assert other.labels == jsonl.labels
        assert other.row_numbers == jsonl.row_numbers
    assert [dataset.format for dataset in read.values()] == ["jsonl", "csv", "tsv"]
    assert len({dataset.fingerprint for dataset in read.values()}) == 3  # sha256 of bytes
    assert jsonl.inputs == jsonl.texts
    assert jsonl.text_pairs is None


def test_fingerprint_is_the_sha256_of_the_file_bytes(tmp_path: Path) -> None:
    import hashlib

    path = _write(tmp_path / "d.jsonl", '{"text": "good", "label": "positive"}\n')
    dataset = read_dataset(path, _spec(path), labels=LABELS)
    assert dataset.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()


def test_labels_may_be_names_or_integer_ids(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "d.jsonl",
        '{"text": "a", "label": 1}\n{"text": "b", "label": "negative"}\n'
        '{"text": "c", "label": "0"}\n',
    )
    assert read_dataset(path, _spec(path), labels=LABELS).labels == [1, 0, 0]


def test_csv_ids_and_quoted_fields(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", 'sentence,gold\n"fine, really",1\n"said ""bad""",0\n')
    dataset = read_dataset(
        path, _spec(path, text_field="sentence", label_field="gold"), labels=LABELS
    )
    assert dataset.texts == ["fine, really", 'said "bad"']
    assert dataset.labels == [1, 0]


def test_tsv_follows_glue_and_keeps_quotes_as_text(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.tsv", 'sentence\tlabel\nit "works"\t1\n')
    dataset = read_dataset(path, _spec(path, text_field="sentence"), labels=LABELS)
    assert dataset.texts == ['it "works"']


def test_sentence_pairs_become_tuple_inputs(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "pairs.jsonl",
        '{"premise": "a cat", "hypothesis": "an animal", "label": "positive"}\n',
    )
    spec = _spec(path, text_field="premise", text_pair_field="hypothesis")
    dataset = read_dataset(path, spec, labels=LABELS)
    assert dataset.inputs == [("a cat", "an animal")]


def test_labels_are_inferred_when_not_given(tmp_path: Path) -> None:
    names = _write(
        tmp_path / "n.jsonl", '{"text": "a", "label": "pos"}\n{"text": "b", "label": "neg"}\n'
    )
    assert read_dataset(names, _spec(names)).label_names == ["neg", "pos"]
    ids = _write(tmp_path / "i.jsonl", '{"text": "a", "label": 2}\n{"text": "b", "label": 0}\n')
    dataset = read_dataset(ids, _spec(ids))
    assert dataset.label_names == ["0", "1", "2"]
    assert dataset.labels == [2, 0]


def test_limit_head_and_seeded_random_sampling(tiny_assets: TinyAssets) -> None:
    path = tiny_assets.dataset
    full = read_dataset(path, _spec(path), labels=LABELS)
    head = read_dataset(path, _spec(path, limit=5), labels=LABELS)
    assert head.texts == full.texts[:5]
    assert head.rows_in_file == 48
    first = read_dataset(path, _spec(path, limit=5, sampling="random"), labels=LABELS, seed=1)
    again = read_dataset(path, _spec(path, limit=5, sampling="random"), labels=LABELS, seed=1)
    other = read_dataset(path, _spec(path, limit=5, sampling="random"), labels=LABELS, seed=2)
    assert first.row_numbers == again.row_numbers
    assert first.row_numbers != other.row_numbers
    assert first.row_numbers == sorted(first.row_numbers)  # kept in file order
    assert first.texts == [full.texts[row - 1] for row in first.row_numbers]


GOOD = '{"text": "good film", "label": "positive"}'


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [
        ('{"label": "positive"}', "row 3: missing field 'text'"),
        ('{"text": "fine", "label": null}', "row 3: missing field 'label'"),
        ('{"text": "fine", "label": "meh"}', "row 3: unknown label 'meh'"),
        ('{"text": "fine", "label": 7}', "row 3: label id 7 .* out of range"),
        ('{"text": "   ", "label": "positive"}', "row 3: field 'text' is empty"),
        ('{"text": 12, "label": "positive"}', "row 3: field 'text' must be a string"),
        ('{"text": "fine", "label": true}', "row 3: field 'label' must be a label name"),
        ('{"text": "fine", "label": "positive"', "row 3: invalid JSON"),
        ('["fine", "positive"]', "row 3: expected a JSON object"),
        ('{"text": "fi\\u0000ne", "label": "positive"}', r"row 3: .* NUL character \(U\+0000\)"),
    ],
)
def test_bad_jsonl_rows_report_their_row(tmp_path: Path, bad_line: str, match: str) -> None:
    path = _write(tmp_path / "d.jsonl", f"{GOOD}\n{GOOD}\n{bad_line}\n{GOOD}\n")
    with pytest.raises(DatasetError, match=match) as caught:
        read_dataset(path, _spec(path), labels=LABELS)
    assert caught.value.row == 3
    assert caught.value.details["row"] == 3


def test_jsonl_rows_are_line_numbers_counting_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.jsonl", f"{GOOD}\n\n{{broken\n")
    with pytest.raises(DatasetError) as caught:
        read_dataset(path, _spec(path), labels=LABELS)
    assert caught.value.row == 3


@pytest.mark.parametrize(
    ("bad_record", "match"),
    [
        ("fine,positive,extra", "row 2: expected 2 columns"),
        ("fine", "row 2: expected 2 columns"),
        (",positive", "row 2: field 'text' is empty"),
        ("fine,", "row 2: missing field 'label'"),
        ("fine,meh", "row 2: unknown label 'meh'"),
    ],
)
def test_bad_csv_records_report_their_row(tmp_path: Path, bad_record: str, match: str) -> None:
    path = _write(tmp_path / "d.csv", f"text,label\ngood,positive\n{bad_record}\nbad,negative\n")
    with pytest.raises(DatasetError, match=match) as caught:
        read_dataset(path, _spec(path), labels=LABELS)
    assert caught.value.row == 2


def test_a_missing_column_is_reported_with_the_header(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.tsv", "sentence\tlabel\nfine\t1\n")
    with pytest.raises(DatasetError, match=r"missing field 'text': the header has columns"):
        read_dataset(path, _spec(path), labels=LABELS)


def test_missing_file_unknown_suffix_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError):
        read_dataset(tmp_path / "none.jsonl", _spec(tmp_path / "none.jsonl"))
    odd = _write(tmp_path / "d.parquet", "x")
    with pytest.raises(DatasetError, match="cannot infer the dataset format"):
        read_dataset(odd, _spec(odd))
    empty = _write(tmp_path / "e.jsonl", "\n")
    with pytest.raises(DatasetError, match="no data rows"):
        read_dataset(empty, _spec(empty))


def test_non_utf8_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_dataset(path, _spec(path), labels=LABELS)


def test_validate_dataset_file_summarizes_an_upload(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": "pos", "id": 1}, {"text": "b", "label": "neg", "note": "x"}]
    path = _write(tmp_path / "up.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    summary = validate_dataset_file(path, _spec(path))
    assert summary.rows == 2
    assert summary.fields == ["text", "label", "id", "note"]
    assert summary.label_names == ["neg", "pos"]
    assert summary.format == "jsonl"
    assert len(summary.fingerprint) == 64


def test_validate_dataset_file_still_reports_bad_rows(tmp_path: Path) -> None:
    path = _write(tmp_path / "up.csv", "text,label\ngood,1\n,0\n")
    with pytest.raises(DatasetError, match="row 2"):
        validate_dataset_file(path, _spec(path))


def test_other_columns_are_kept_for_slicing(tmp_path: Path) -> None:
    csv_file = _write(
        tmp_path / "data.csv",
        "text,label,source,tier\nfine,positive,web,gold\nbad,negative,news,\nok,positive,web,free\n",
    )
    dataset = read_dataset(csv_file, _spec(csv_file, limit=2), labels=LABELS)
    assert dataset.columns == {"source": ["web", "news"], "tier": ["gold", ""]}
    rows = [
        {"text": "fine", "label": "positive", "source": "web"},
        {"text": "bad", "label": "negative", "lang": "de", "source": 3},
    ]
    jsonl_file = _write(tmp_path / "data.jsonl", "\n".join(json.dumps(row) for row in rows))
    dataset = read_dataset(jsonl_file, _spec(jsonl_file), labels=LABELS)
    # A row without a field holds None there; values keep their JSON type.
    assert dataset.columns == {"source": ["web", 3], "lang": [None, "de"]}
    pair_file = _write(tmp_path / "pairs.tsv", "a\tb\tlabel\tsource\nx\ty\tpositive\tweb\n")
    pairs = read_dataset(
        pair_file, _spec(pair_file, text_field="a", text_pair_field="b"), labels=LABELS
    )
    assert pairs.columns == {"source": ["web"]}


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_reading_streams_the_file_instead_of_holding_copies_of_it(
    tmp_path: Path, suffix: str
) -> None:
    """What reading needs beyond the dataset it returns stays under one copy of the file."""
    rows = [
        {"text": "word " * 40 + str(index), "label": LABELS[index % 2]} for index in range(20_000)
    ]
    path = write_dataset(tmp_path / f"big.{suffix}", rows)
    tracemalloc.start()
    try:
        dataset = read_dataset(path, _spec(path), labels=LABELS)
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(dataset) == 20_000
    assert peak - retained < path.stat().st_size
