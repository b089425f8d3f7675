"""A planned audit's steps run in any order, in fresh processes' stead (fresh runner caches,
outputs through their serialised form), finish into run_audit's document to the bit."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TinyAssets
from tests.documents import comparable
from tests.tiny_models import sentiment_rows, write_dataset
from trustdiff.audit import (
    AuditPlan,
    ExplainedBlock,
    ShardPredictions,
    explain_block,
    finish_audit,
    plan_audit,
    predict_shard,
    run_audit,
)
from trustdiff.config import (
    AuditConfig,
    CalibrationSettings,
    CheckpointSpec,
    DatasetSpec,
    ExplainSettings,
)
from trustdiff.result import dump_result
from trustdiff.runner_cache import RunnerCache
from trustdiff.shards import Probabilities

# 1,100 rows: three prediction shards of 512 rows (the smallest, one prediction chunk).
ROWS = 1100
SHARD_ROWS = 512
BLOCK_INSTANCES = 4


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shard-data")
    write_dataset(root / "many.jsonl", sentiment_rows(ROWS, seed=11))
    return root


def _config(**options: Any) -> AuditConfig:
    settings: dict[str, Any] = {
        "reference": CheckpointSpec(path="reference"),
        "candidate": CheckpointSpec(path="perturbed"),
        "twin": CheckpointSpec(path="twin"),
        "dataset": DatasetSpec(path="many.jsonl"),
        "calibration": CalibrationSettings(n_bootstrap=30),
        "explain": ExplainSettings(
            instances=6, lime_samples=40, shap_max_evals=40, top_k=3, faithfulness=True
        ),
        "device": "cpu",
        **options,
    }
    return AuditConfig(**settings)


def _plan(assets: TinyAssets, data_root: Path, config: AuditConfig) -> AuditPlan:
    return plan_audit(
        config,
        model_root=assets.model_root,
        data_root=data_root,
        shard_rows=SHARD_ROWS,
        block_instances=BLOCK_INSTANCES,
    )


def test_the_plan_fixes_row_ranges_and_instance_blocks_as_json(
    tiny_assets: TinyAssets, data_root: Path
) -> None:
    plan = _plan(tiny_assets, data_root, _config())
    assert [(rows.start, rows.stop) for rows in plan.shards] == [
        (0, 512),
        (512, 1024),
        (1024, 1100),
    ]
    assert [len(block) for block in plan.blocks] == [4, 2]
    assert plan.explained == sorted(plan.explained)
    assert (plan.device, plan.dtype, plan.load_twin) == ("cpu", "float32", True)
    assert AuditPlan.model_validate_json(plan.model_dump_json()) == plan
    # A shard size that is not whole prediction chunks is rounded up to them.
    rounded = plan_audit(
        _config(), model_root=tiny_assets.model_root, data_root=data_root, shard_rows=600
    )
    assert [(rows.start, rows.stop) for rows in rounded.shards] == [(0, 1024), (1024, 1100)]


def test_steps_in_any_order_on_fresh_runners_finish_into_run_audits_document(
    tiny_assets: TinyAssets, data_root: Path
) -> None:
    config = _config()
    in_sequence = run_audit(
        config,
        model_root=tiny_assets.model_root,
        data_root=data_root,
        shard_rows=SHARD_ROWS,
        block_instances=BLOCK_INSTANCES,
    )
    plan = AuditPlan.model_validate_json(_plan(tiny_assets, data_root, config).model_dump_json())
    order = random.Random(3)

    shard_order = list(range(len(plan.shards)))
    order.shuffle(shard_order)
    shards = [
        ShardPredictions.from_bytes(predict_shard(plan, index, runners=RunnerCache()).to_bytes())
        for index in shard_order
    ]
    probabilities = Probabilities.of_shards(plan, shards)
    block_order = list(range(len(plan.blocks)))
    order.shuffle(block_order)
    blocks = [
        ExplainedBlock.from_json(
            explain_block(plan, probabilities, index, runners=RunnerCache()).to_json()
        )
        for index in block_order
    ]
    spread = finish_audit(plan, shards, blocks)

    assert len(in_sequence.instances) == 6
    assert in_sequence.alignment["lime"].faithfulness is not None
    assert in_sequence.calibration.twin is not None
    assert comparable(dump_result(spread)) == comparable(dump_result(in_sequence))


def test_a_runner_cache_loads_each_checkpoint_once(tiny_assets: TinyAssets) -> None:
    runners = RunnerCache(capacity=2)

    def get(name: str, transform: str | None = None) -> Any:
        return runners.get(
            tiny_assets.model_root / name,
            fingerprint=f"{name}-{transform}",
            transform=transform,
            device="cpu",
            dtype="float32",
            max_length=64,
        )

    reference = get("reference")
    assert get("reference") is reference and runners.loads == 1
    get("perturbed")
    get("reference", "int8-dynamic")  # the least recently used (the reference) makes room
    assert runners.loads == 3
    assert get("reference") is not reference and runners.loads == 4
