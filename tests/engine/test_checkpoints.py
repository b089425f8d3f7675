"""Checkpoint inspection (refusals before any load), fingerprints and label alignment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import TinyAssets
from trustdiff.checkpoints import (
    align_label_spaces,
    fingerprint_checkpoint,
    inspect_checkpoint,
)
from trustdiff.errors import (
    CheckpointNotFoundError,
    LabelMismatchError,
    PickledCheckpointError,
    RemoteCodeError,
)


@pytest.fixture
def reference_copy(tiny_assets: TinyAssets, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_assets.reference, tmp_path / "copy"))


def test_inspect_reads_labels_in_id_order(tiny_assets: TinyAssets) -> None:
    info = inspect_checkpoint(tiny_assets.reference)
    assert info.labels == ["negative", "positive"]
    assert info.model_type == "bert"
    assert info.weight_files == ["model.safetensors"]
    assert "tokenizer.json" in info.tokenizer_files
    assert inspect_checkpoint(tiny_assets.other_labels).labels == ["neg", "neutral", "pos"]


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        inspect_checkpoint(tmp_path / "nowhere")


def test_a_folder_without_config_is_refused(reference_copy: Path) -> None:
    (reference_copy / "config.json").unlink()
    with pytest.raises(CheckpointNotFoundError, match=r"no config\.json"):
        inspect_checkpoint(reference_copy)


def test_a_folder_without_weights_is_refused(reference_copy: Path) -> None:
    (reference_copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointNotFoundError, match="no weight file"):
        inspect_checkpoint(reference_copy)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.ckpt", "x.pkl"])
def test_pickled_weights_are_refused_unless_allowed(reference_copy: Path, name: str) -> None:
    (reference_copy / name).write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(PickledCheckpointError, match=name):
        inspect_checkpoint(reference_copy)
    assert name in inspect_checkpoint(reference_copy, allow_pickle=True).weight_files


@pytest.mark.parametrize("config_name", ["config.json", "tokenizer_config.json"])
def test_auto_map_is_refused_as_remote_code(reference_copy: Path, config_name: str) -> None:
    path = reference_copy / config_name
    config = json.loads(path.read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    path.write_text(json.dumps(config))
    with pytest.raises(RemoteCodeError, match="trust_remote_code"):
        inspect_checkpoint(reference_copy)


def test_default_labels_when_config_has_no_id2label(reference_copy: Path) -> None:
    path = reference_copy / "config.json"
    config = json.loads(path.read_text())
    del config["id2label"], config["label2id"]
    config["num_labels"] = 3
    path.write_text(json.dumps(config))
    assert inspect_checkpoint(reference_copy).labels == ["LABEL_0", "LABEL_1", "LABEL_2"]


def test_fingerprint_is_stable_and_changes_with_transform(tiny_assets: TinyAssets) -> None:
    plain = fingerprint_checkpoint(tiny_assets.reference, None)
    assert plain == fingerprint_checkpoint(tiny_assets.reference, None)
    assert len(plain) == 64
    assert fingerprint_checkpoint(tiny_assets.reference, "int8-dynamic") != plain


def test_fingerprint_does_not_depend_on_the_folder_location(
    tiny_assets: TinyAssets, reference_copy: Path
) -> None:
    assert fingerprint_checkpoint(reference_copy, None) == fingerprint_checkpoint(
        tiny_assets.reference, None
    )


def test_fingerprint_changes_with_weights_and_tokenizer(
    tiny_assets: TinyAssets, reference_copy: Path
) -> None:
    original = fingerprint_checkpoint(reference_copy, None)
    assert fingerprint_checkpoint(tiny_assets.perturbed, None) != original
    with (reference_copy / "vocab.txt").open("a") as handle:
        handle.write("extra\n")
    assert fingerprint_checkpoint(reference_copy, None) != original


def test_fingerprint_ignores_unrelated_files(reference_copy: Path) -> None:
    original = fingerprint_checkpoint(reference_copy, None)
    (reference_copy / "README.md").write_text("notes")
    assert fingerprint_checkpoint(reference_copy, None) == original


def test_identical_label_spaces_align_to_identity() -> None:
    assert align_label_spaces(["a", "b", "c"], ["a", "b", "c"], None) == [0, 1, 2]


def test_same_names_in_another_order_are_permuted() -> None:
    order = align_label_spaces(["neg", "pos"], ["pos", "neg"], None)
    assert order == [1, 0]


def test_large_label_spaces_are_permuted_by_name() -> None:
    reference = [f"label-{index}" for index in range(20_000)]
    candidate = reference[::-1]
    order = align_label_spaces(reference, candidate, None)
    assert [candidate[index] for index in order] == reference


def test_a_mapping_renames_candidate_labels() -> None:
    order = align_label_spaces(
        ["negative", "positive"], ["POS", "NEG"], {"NEG": "negative", "POS": "positive"}
    )
    assert order == [1, 0]


def test_different_label_sets_raise_naming_both() -> None:
    with pytest.raises(LabelMismatchError) as caught:
        align_label_spaces(["negative", "positive"], ["neg", "neutral", "pos"], None)
    assert "['negative', 'positive']" in caught.value.message
    assert "['neg', 'neutral', 'pos']" in caught.value.message


@pytest.mark.parametrize(
    ("mapping", "match"),
    [
        ({"missing": "a"}, "does not have"),
        ({"x": "a", "y": "a"}, "onto one"),
        ({"x": "a", "y": "c"}, "label spaces differ"),
    ],
)
def test_bad_mappings_raise(mapping: dict[str, str], match: str) -> None:
    with pytest.raises(LabelMismatchError, match=match):
        align_label_spaces(["a", "b"], ["x", "y"], mapping)
