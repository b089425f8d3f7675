"""A process's dataset cache: an unchanged file is read once for every step of an audit, a
changed one is read again, and at most `capacity` datasets are held."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import trustdiff.datasets
from tests.conftest import TinyAssets
from tests.tiny_models import sentiment_rows, write_dataset
from trustdiff.audit import explain_block, finish_audit, plan_audit, predict_shard, run_audit
from trustdiff.config import (
    AuditConfig,
    CalibrationSettings,
    CheckpointSpec,
    DatasetSpec,
    ExplainSettings,
)
from trustdiff.dataset_cache import DatasetCache
from trustdiff.errors import ConfigError, DatasetNotFoundError
from trustdiff.runner_cache import RunnerCache
from trustdiff.shards import Probabilities

LABELS = ["negative", "positive"]


@pytest.fixture
def parsed_files(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files whose rows were parsed, one entry per read (every reader goes through it)."""
    parsed: list[str] = []
    parse: Callable[..., Any] = trustdiff.datasets._raw_rows

    def counting(source: Any, *args: Any, **kwargs: Any) -> Any:
        parsed.append(str(source.name))
        return parse(source, *args, **kwargs)

    monkeypatch.setattr(trustdiff.datasets, "_raw_rows", counting)
    return parsed


def _dataset(path: Path, rows: int, *, seed: int = 0) -> Path:
    return write_dataset(path, sentiment_rows(rows, seed=seed))


def test_an_unchanged_file_is_read_once_and_a_rewritten_one_again(
    tmp_path: Path, parsed_files: list[str]
) -> None:
    path = _dataset(tmp_path / "d.jsonl", 20)
    cache, spec = DatasetCache(), DatasetSpec(path="d.jsonl")

    first = cache.read(path, spec, labels=LABELS, seed=0)
    assert cache.read(path, spec, labels=LABELS, seed=0) is first
    assert (cache.reads, len(parsed_files)) == (1, 1)

    _dataset(path, 21, seed=1)  # written in place: same inode, other size and times
    changed = cache.read(path, spec, labels=LABELS, seed=0)
    assert len(changed) == 21 and changed.fingerprint != first.fingerprint
    # Replaced by a file of exactly the same size (an atomic rename: another inode).
    replacement = tmp_path / "other.jsonl"
    swapped = path.read_text().replace("positive", "POSITIVE").replace("negative", "positive")
    replacement.write_text(swapped.replace("POSITIVE", "negative"))
    assert replacement.stat().st_size == path.stat().st_size
    replacement.replace(path)
    replaced = cache.read(path, spec, labels=LABELS, seed=0)
    assert replaced.fingerprint not in {first.fingerprint, changed.fingerprint}
    assert (cache.reads, len(parsed_files)) == (3, 3)


def test_what_the_read_depends_on_is_part_of_the_key(
    tmp_path: Path, parsed_files: list[str]
) -> None:
    path = _dataset(tmp_path / "d.jsonl", 30)
    cache = DatasetCache(capacity=4)
    head = cache.read(path, DatasetSpec(path="d.jsonl", limit=10), labels=LABELS, seed=0)
    sampled = cache.read(
        path, DatasetSpec(path="d.jsonl", limit=10, sampling="random"), labels=LABELS, seed=0
    )
    reseeded = cache.read(
        path, DatasetSpec(path="d.jsonl", limit=10, sampling="random"), labels=LABELS, seed=1
    )
    inferred = cache.read(path, DatasetSpec(path="d.jsonl", limit=10), labels=None, seed=0)
    assert head.row_numbers == list(range(1, 11))
    assert sampled.row_numbers != head.row_numbers != reseeded.row_numbers
    assert inferred.label_names == ["negative", "positive"]
    assert cache.reads == len(parsed_files) == 4


def test_capacity_bounds_what_is_held_least_recently_used_out_first(tmp_path: Path) -> None:
    paths = [_dataset(tmp_path / f"d{index}.jsonl", 10, seed=index) for index in range(3)]
    spec = DatasetSpec(path="any.jsonl")
    cache = DatasetCache(capacity=2)
    a = cache.read(paths[0], spec, labels=LABELS, seed=0)
    cache.read(paths[1], spec, labels=LABELS, seed=0)
    assert cache.read(paths[0], spec, labels=LABELS, seed=0) is a  # now the most recent
    cache.read(paths[2], spec, labels=LABELS, seed=0)  # drops paths[1]
    assert cache.read(paths[0], spec, labels=LABELS, seed=0) is a and cache.reads == 3
    cache.read(paths[1], spec, labels=LABELS, seed=0)
    assert cache.reads == 4
    with pytest.raises(ValueError, match="capacity"):
        DatasetCache(capacity=0)


def test_a_missing_file_raises_as_an_uncached_read_does(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError):
        DatasetCache().read(
            tmp_path / "gone.jsonl", DatasetSpec(path="gone.jsonl"), labels=None, seed=0
        )


# --- the steps of an audit ------------------------------------------------------------------


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    # Three prediction shards of 512 rows, two explanation blocks.
    _dataset(tmp_path / "data" / "many.jsonl", 1100, seed=11)
    return tmp_path / "data"


def _config() -> AuditConfig:
    return AuditConfig(
        reference=CheckpointSpec(path="reference"),
        candidate=CheckpointSpec(path="perturbed"),
        dataset=DatasetSpec(path="many.jsonl"),
        calibration=CalibrationSettings(n_bootstrap=10),
        explain=ExplainSettings(
            instances=6,
            lime_samples=20,
            shap_max_evals=20,
            top_k=3,
            noise_floor=False,
            faithfulness=False,
        ),
        device="cpu",
    )


def test_the_steps_of_one_audit_in_one_process_read_the_dataset_once(
    tiny_assets: TinyAssets, data_root: Path, parsed_files: list[str]
) -> None:
    datasets, runners = DatasetCache(), RunnerCache()
    plan = plan_audit(
        _config(),
        model_root=tiny_assets.model_root,
        data_root=data_root,
        shard_rows=512,
        block_instances=4,
        datasets=datasets,
    )
    assert (len(plan.shards), len(plan.blocks)) == (3, 2)
    shards = [
        predict_shard(plan, index, runners=runners, datasets=datasets)
        for index in range(len(plan.shards))
    ]
    probabilities = Probabilities.of_shards(plan, shards)
    blocks = [
        explain_block(plan, probabilities, index, runners=runners, datasets=datasets)
        for index in range(len(plan.blocks))
    ]
    result = finish_audit(plan, shards, blocks, datasets=datasets)
    assert len(parsed_files) == datasets.reads == 1
    assert result.rows.count == 1100

    # Without a cache, each of the 6 steps reads the whole file again.
    predict_shard(plan, 0, runners=runners)
    assert len(parsed_files) == 2

    # A file written since is read again: here it no longer has the planned bytes.
    _dataset(data_root / "many.jsonl", 1100, seed=12)
    with pytest.raises(ConfigError, match="changed while the audit ran"):
        predict_shard(plan, 1, runners=runners, datasets=datasets)
    assert len(parsed_files) == datasets.reads + 1 == 3


def test_run_audit_reads_the_dataset_once_for_the_plan_and_all_its_steps(
    tiny_assets: TinyAssets, data_root: Path, parsed_files: list[str]
) -> None:
    run_audit(
        _config(),
        model_root=tiny_assets.model_root,
        data_root=data_root,
        shard_rows=512,
        block_instances=4,
    )
    assert parsed_files == [str(data_root / "many.jsonl")]


def test_a_copied_dataset_with_the_same_bytes_is_its_own_entry(
    tmp_path: Path, parsed_files: list[str]
) -> None:
    path = _dataset(tmp_path / "d.jsonl", 10)
    copy = Path(shutil.copy(path, tmp_path / "e.jsonl"))
    os.utime(copy, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
    cache, spec = DatasetCache(capacity=2), DatasetSpec(path="d.jsonl")
    assert cache.read(path, spec, labels=LABELS, seed=0).path == path
    assert cache.read(copy, spec, labels=LABELS, seed=0).path == copy
    assert cache.reads == 2
