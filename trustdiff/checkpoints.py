"""Inspect, fingerprint and label-align checkpoint folders without importing torch."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustdiff.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    LabelMismatchError,
    PathOutsideRootError,
    PickledCheckpointError,
    RemoteCodeError,
)

SAFE_WEIGHT_SUFFIXES = (".safetensors",)
# Every one of these is unpickled by torch.load, which can run arbitrary code.
PICKLED_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Files whose content decides how text becomes token ids: all part of the fingerprint.
TOKENIZER_FILE_NAMES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
# Config files that may name custom Python classes through `auto_map`.
CODE_BEARING_CONFIG_NAMES = ("config.json", "tokenizer_config.json", "preprocessor_config.json")
_HASH_CHUNK_BYTES = 1 << 20
# No classifier has more classes than this; a larger count is a broken or hostile config.
MAX_LABELS = 100_000


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint folder holds, read from its files alone (no model is loaded).

    `labels` are the label names in id order (`config.json` `id2label`); `weight_files` and
    `tokenizer_files` are file names relative to `path`, sorted.
    """

    path: Path
    labels: list[str]
    model_type: str | None
    weight_files: list[str]
    tokenizer_files: list[str]
    architectures: list[str]


def _read_json_object(path: Path, *, what: str) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise CheckpointError(f"{what} {path.name!r} is nested too deeply to read") from None
    except (OSError, ValueError) as error:
        # ValueError covers bad JSON, bad UTF-8 and integers past Python's 4,300 digits.
        raise CheckpointError(f"cannot read {what} {path.name!r}: {error}") from error
    if not isinstance(content, dict):
        raise CheckpointError(f"{what} {str(path)!r} is not a JSON object")
    return content


def _labels_from_config(config: Mapping[str, Any], config_path: Path) -> list[str]:
    """Label names in id order; transformers' own default (`LABEL_i`) when none are given."""
    id2label = config.get("id2label")
    if id2label is None:
        num_labels = config.get("num_labels", 2)
        if not isinstance(num_labels, int) or not 1 <= num_labels <= MAX_LABELS:
            raise CheckpointError(f"{str(config_path)!r} has an invalid num_labels {num_labels!r}")
        return [f"LABEL_{index}" for index in range(num_labels)]
    if not isinstance(id2label, dict) or not id2label:
        raise CheckpointError(f"{str(config_path)!r} has an invalid id2label {id2label!r}")
    try:
        by_id = {int(key): str(value) for key, value in id2label.items()}
    except ValueError as error:
        raise CheckpointError(
            f"{str(config_path)!r} id2label has a non-integer id: {sorted(id2label)!r}"
        ) from error
    if sorted(by_id) != list(range(len(by_id))):
        raise CheckpointError(
            f"{str(config_path)!r} id2label ids must be 0..{len(by_id) - 1}, got {sorted(by_id)}"
        )
    labels = [by_id[index] for index in range(len(by_id))]
    if len(set(labels)) != len(labels):
        raise CheckpointError(f"{str(config_path)!r} id2label repeats a label name: {labels}")
    return labels


def _refuse_remote_code(path: Path) -> None:
    for name in CODE_BEARING_CONFIG_NAMES:
        file = path / name
        if not file.is_file():
            continue
        content = _read_json_object(file, what="checkpoint file")
        if "auto_map" in content:
            raise RemoteCodeError(
                f"checkpoint {str(path)!r} needs trust_remote_code ({name} has an auto_map "
                f"naming custom code), which trustdiff never enables",
                details={"path": str(path), "file": name},
            )


def _refuse_files_outside(path: Path, root: Path) -> None:
    # The folder was checked against the root; its files can still be symlinks out of it.
    for child in path.iterdir():
        if not child.resolve().is_relative_to(root):
            raise PathOutsideRootError(
                f"checkpoint file {child.name!r} resolves outside the model root",
                details={"file": child.name},
            )


def inspect_checkpoint(
    path: Path, *, allow_pickle: bool = False, root: Path | None = None
) -> CheckpointInfo:
    """Check that `path` is a loadable, safe Hugging Face classification folder.

    Refuses, with the error naming the folder: a missing folder, a missing `config.json` or
    no weight file (`CheckpointNotFoundError`); any pickled file (`*.bin`, `*.pt`, `*.pth`,
    `*.ckpt`, `*.pkl`) unless `allow_pickle` — even beside safetensors weights, because a
    folder that ships pickles is one a later loader may unpickle (`PickledCheckpointError`);
    an `auto_map` in `config.json`, `tokenizer_config.json` or `preprocessor_config.json`,
    i.e. anything needing `trust_remote_code` (`RemoteCodeError`). With `root` (resolved),
    a file of the folder that resolves outside it is refused (`PathOutsideRootError`).
    """
    if not path.is_dir():
        raise CheckpointNotFoundError(
            f"checkpoint folder {str(path)!r} does not exist", details={"path": str(path)}
        )
    if root is not None:
        _refuse_files_outside(path, root)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointNotFoundError(
            f"checkpoint folder {str(path)!r} has no config.json", details={"path": str(path)}
        )
    config = _read_json_object(config_path, what="checkpoint config")
    _refuse_remote_code(path)
    files = sorted(child.name for child in path.iterdir() if child.is_file())
    pickled = [name for name in files if name.endswith(PICKLED_WEIGHT_SUFFIXES)]
    if pickled and not allow_pickle:
        raise PickledCheckpointError(
            f"checkpoint {str(path)!r} contains pickled files {pickled}; loading pickles can "
            f"run arbitrary code — convert the weights to safetensors and remove them",
            details={"path": str(path), "files": pickled},
        )
    weight_files = [name for name in files if name.endswith(SAFE_WEIGHT_SUFFIXES)]
    if allow_pickle:
        weight_files += pickled
    if not weight_files:
        raise CheckpointNotFoundError(
            f"checkpoint folder {str(path)!r} has no weight file (*.safetensors)",
            details={"path": str(path)},
        )
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    return CheckpointInfo(
        path=path,
        labels=_labels_from_config(config, config_path),
        model_type=str(model_type) if model_type is not None else None,
        weight_files=sorted(weight_files),
        tokenizer_files=[name for name in files if name in TOKENIZER_FILE_NAMES],
        architectures=[str(name) for name in architectures],
    )


def fingerprinted_files(path: Path) -> list[Path]:
    """The files a checkpoint's fingerprint reads: config, tokenizer and weights, by name."""
    if not path.is_dir():
        raise CheckpointNotFoundError(f"checkpoint folder {str(path)!r} does not exist")
    return sorted(
        (
            child
            for child in path.iterdir()
            if child.is_file()
            and (
                child.name == "config.json"
                or child.name in TOKENIZER_FILE_NAMES
                or child.name.endswith(SAFE_WEIGHT_SUFFIXES + PICKLED_WEIGHT_SUFFIXES)
                or child.name.endswith(".safetensors.index.json")
            )
        ),
        key=lambda file: file.name,
    )


def checkpoint_content_sha256(path: Path) -> str:
    """sha256 (hex) over the fingerprinted files, sorted by name: each file's name, size, bytes.

    Renaming or truncating a file changes it; where the folder lives does not. Pickled
    weight files count as weights here: hashing reads bytes, it never unpickles.
    """
    digest = hashlib.sha256()
    for file in fingerprinted_files(path):
        digest.update(f"{file.name}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()


def fingerprint_checkpoint(
    path: Path, transform: str | None, *, content_sha256: str | None = None
) -> str:
    """sha256 (hex) of the folder's content digest and `transform`: what the model computes.

    `content_sha256` is `checkpoint_content_sha256(path)`, computed here unless the caller
    has it (a cache keyed by the files' sizes and modification times, see
    `trustdiff.cache.AuditCache.checkpoint_fingerprint`): the weights are read once per
    folder, however many transforms of it are audited. The transform name (`"none"` when
    None) is hashed in, so a quantized candidate never shares its source folder's fingerprint.
    """
    content = content_sha256 if content_sha256 is not None else checkpoint_content_sha256(path)
    return hashlib.sha256(f"{content}\0transform\0{transform or 'none'}".encode()).hexdigest()


def align_label_spaces(
    reference_labels: Sequence[str],
    candidate_labels: Sequence[str],
    mapping: Mapping[str, str] | None,
) -> list[int]:
    """The candidate column order that puts candidate probabilities in reference label order.

    `mapping` renames candidate labels to reference labels (candidate name → reference name);
    unmapped candidate labels keep their name. After renaming, the candidate label set must be
    exactly the reference label set. Returns `order` with `candidate_proba[:, order]` in
    reference order: `order[j]` is the candidate id of reference label `j`. Labels are matched
    by name, so the same names in another id order are permuted, not refused.

    Raises `LabelMismatchError` naming both label sets when they cannot be aligned, or when
    `mapping` names a candidate label that does not exist or maps two labels onto one.
    """
    details = {
        "reference_labels": list(reference_labels),
        "candidate_labels": list(candidate_labels),
    }
    both = f"reference labels {list(reference_labels)} vs candidate labels {list(candidate_labels)}"
    mapping = dict(mapping or {})
    unknown_keys = sorted(set(mapping) - set(candidate_labels))
    if unknown_keys:
        raise LabelMismatchError(
            f"label mapping names candidate labels {unknown_keys} that the candidate does not "
            f"have ({both})",
            details=details,
        )
    renamed = [mapping.get(label, label) for label in candidate_labels]
    if len(set(renamed)) != len(renamed):
        raise LabelMismatchError(
            f"label mapping maps two candidate labels onto one: {renamed} ({both})",
            details=details,
        )
    if set(renamed) != set(reference_labels) or len(renamed) != len(reference_labels):
        hint = "" if mapping else "; give a label mapping (candidate name -> reference name)"
        raise LabelMismatchError(f"label spaces differ: {both}{hint}", details=details)
    # One dict lookup per label: `renamed.index` per label made this quadratic (16k labels ~2s).
    candidate_id = {label: index for index, label in enumerate(renamed)}
    return [candidate_id[label] for label in reference_labels]
