"""The audit cache: stored once, found again under the same key, re-hashed when files change,
and a second candidate against a cached reference runs no reference forward pass."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import TinyAssets
from trustdiff import cache as cache_module
from trustdiff.audit import run_audit
from trustdiff.cache import PREDICTIONS, AuditCache
from trustdiff.checkpoints import fingerprint_checkpoint
from trustdiff.config import AuditConfig, CalibrationSettings, CheckpointSpec, DatasetSpec
from trustdiff.inference import ModelRunner
from trustdiff.result import AuditResult


def test_arrays_and_documents_round_trip_under_their_key(tmp_path: Path) -> None:
    cache = AuditCache(tmp_path)
    key = {"model": "abc", "dataset": {"sha256": "d", "limit": None}}
    assert cache.load_arrays(PREDICTIONS, key) is None
    proba = np.random.default_rng(0).dirichlet(np.ones(3), size=5)
    cache.store_arrays(PREDICTIONS, key, {"proba": proba})
    loaded = cache.load_arrays(PREDICTIONS, key)
    assert loaded is not None
    np.testing.assert_array_equal(loaded["proba"], proba)
    assert cache.load_arrays(PREDICTIONS, {**key, "model": "abd"}) is None
    cache.store_json("twin", key, {"jaccard": 0.5})
    assert cache.load_json("twin", key) == {"jaccard": 0.5}
    assert cache.load_json("twin", {"other": 1}) is None
    assert (cache.hits, cache.misses) == ({PREDICTIONS: 1, "twin": 1}, {PREDICTIONS: 2, "twin": 1})
    # Written atomically: nothing half-written is left behind.
    assert not [path for path in tmp_path.rglob(".partial-*")]


def test_a_corrupt_entry_is_a_miss(tmp_path: Path) -> None:
    cache = AuditCache(tmp_path)
    cache.store_arrays(PREDICTIONS, {"k": 1}, {"proba": np.ones((2, 2))})
    (entry,) = tmp_path.rglob("*.npz")
    entry.write_bytes(b"not an archive")
    assert cache.load_arrays(PREDICTIONS, {"k": 1}) is None


@pytest.fixture
def hashed_folders(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often each checkpoint folder's files were read to hash them."""
    counts: Counter[str] = Counter()
    real = cache_module.checkpoint_content_sha256

    def counting(path: Path) -> str:
        counts[path.name] += 1
        return real(path)

    monkeypatch.setattr(cache_module, "checkpoint_content_sha256", counting)
    return counts


def test_unchanged_folders_are_not_hashed_again(
    tiny_assets: TinyAssets, tmp_path: Path, hashed_folders: Counter[str]
) -> None:
    folder = shutil.copytree(tiny_assets.reference, tmp_path / "model")
    cache = AuditCache(tmp_path / "cache")
    plain = cache.checkpoint_fingerprint(folder, None)
    quantized = cache.checkpoint_fingerprint(folder, "int8-dynamic")
    assert plain == fingerprint_checkpoint(folder, None)
    assert quantized == fingerprint_checkpoint(folder, "int8-dynamic") != plain
    # A second cache object on the same folder: the digest is on disk, not in memory.
    assert AuditCache(tmp_path / "cache").checkpoint_fingerprint(folder, None) == plain
    assert hashed_folders["model"] == 1

    # Any change to a file's modification time (or size) re-hashes; same bytes, same value.
    weights = folder / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cache.checkpoint_fingerprint(folder, None) == plain
    assert hashed_folders["model"] == 2
    with weights.open("ab") as handle:
        handle.write(b"\0")
    assert cache.checkpoint_fingerprint(folder, None) != plain
    assert hashed_folders["model"] == 3


def _config(candidate: CheckpointSpec) -> AuditConfig:
    return AuditConfig(
        reference=CheckpointSpec(path="reference"),
        candidate=candidate,
        dataset=DatasetSpec(path="sentiment.jsonl"),
        calibration=CalibrationSettings(n_bootstrap=20),
        explain={"instances": 0},  # type: ignore[arg-type]
        device="cpu",
    )


@pytest.fixture
def forwarded_rows(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, str | None]]:
    """Rows each model (folder name, transform) ran forward passes on."""
    counts: Counter[tuple[str, str | None]] = Counter()
    real = ModelRunner.forward_tensors

    def counting(self: ModelRunner, tensors: dict[str, Any]) -> Any:
        counts[(self.path.name, self.transform)] += int(tensors["input_ids"].shape[0])
        return real(self, tensors)

    monkeypatch.setattr(ModelRunner, "forward_tensors", counting)
    return counts


def test_a_second_candidate_reuses_the_reference_predictions(
    tiny_assets: TinyAssets,
    tmp_path: Path,
    forwarded_rows: Counter[tuple[str, str | None]],
) -> None:
    def audit(candidate: CheckpointSpec, cache: AuditCache | None) -> AuditResult:
        return run_audit(
            _config(candidate),
            model_root=tiny_assets.model_root,
            data_root=tiny_assets.data_root,
            cache=cache,
        )

    cache = AuditCache(tmp_path / "cache")
    first = audit(CheckpointSpec(path="perturbed"), cache)
    assert forwarded_rows[("reference", None)] == 48
    assert "forward_without_reference" not in first.manifest.timings

    forwarded_rows.clear()
    quantized = CheckpointSpec(path="reference", transform="int8-dynamic")
    second = audit(quantized, cache)
    assert forwarded_rows == {("reference", "int8-dynamic"): 48}  # no reference forward pass
    assert "forward_without_reference" in second.manifest.timings

    # Bit-identical to the same audit without a cache.
    uncached = audit(quantized, None)
    assert second.parity == uncached.parity
    assert second.calibration == uncached.calibration
    assert second.manifest.reference == uncached.manifest.reference
    assert second.rows == uncached.rows
