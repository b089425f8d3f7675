"""Explanation blocks in several processes: the same audit to the bit at equal thread counts,
with progress, cancellation and a block's error reaching the caller. Real spawned processes,
real models."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import TinyAssets
from tests.documents import comparable
from trustdiff.audit import plan_audit, run_audit
from trustdiff.block_processes import explain_blocks_in_processes
from trustdiff.config import (
    AuditConfig,
    CalibrationSettings,
    CheckpointSpec,
    DatasetSpec,
    ExplainSettings,
)
from trustdiff.errors import AuditCancelledError, TrustdiffError
from trustdiff.result import dump_result
from trustdiff.threads import DEFAULTED_ENV

# Three blocks of 4 (the plan rounds blocks to whole waves of 4 instances).
EXPLAIN = ExplainSettings(instances=10, lime_samples=40, shap_max_evals=40, top_k=3)


def _config() -> AuditConfig:
    return AuditConfig(
        reference=CheckpointSpec(path="reference"),
        candidate=CheckpointSpec(path="perturbed"),
        dataset=DatasetSpec(path="sentiment.jsonl"),
        calibration=CalibrationSettings(n_bootstrap=50),
        explain=EXPLAIN,
        device="cpu",
    )


def _run(assets: TinyAssets, **options: Any) -> str:
    result = run_audit(
        _config(),
        model_root=assets.model_root,
        data_root=assets.data_root,
        block_instances=4,
        **options,
    )
    return dump_result(result)


def test_blocks_in_two_processes_give_the_audit_of_one_process(
    tiny_assets: TinyAssets, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The processes keep this process's thread count (as a user's OMP_NUM_THREADS), so float
    # sums run in the same order; cores ÷ processes would move figures at float32 rounding.
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    monkeypatch.delenv(DEFAULTED_ENV, raising=False)
    calls: list[tuple[str, int, int]] = []
    in_processes = _run(tiny_assets, explain_processes=2, progress=lambda *c: calls.append(c))
    in_one = _run(tiny_assets)
    assert comparable(in_processes) == comparable(in_one)
    document = comparable(in_processes)
    assert len(document["instances"]) == 10
    assert any(instance["explanations"] for instance in document["instances"])
    explain = [(done, total) for stage, done, total in calls if stage == "explain"]
    assert explain[0] == (0, 10)
    assert explain[-1] == (10, 10)
    assert [done for done, _ in explain] == sorted(done for done, _ in explain)


def test_cancelling_drops_the_blocks_not_started(tiny_assets: TinyAssets) -> None:
    plan = plan_audit(
        _config(), model_root=tiny_assets.model_root, data_root=tiny_assets.data_root,
        block_instances=4,
    )  # fmt: skip
    assert len(plan.blocks) == 3
    explained: list[int] = []

    def progress(stage: str, done: int, total: int) -> None:
        explained.append(done)

    # One process takes the blocks one after another; cancelled once the first is done.
    with pytest.raises(AuditCancelledError):
        explain_blocks_in_processes(
            plan,
            _probabilities(plan),
            processes=1,
            progress=progress,
            should_cancel=lambda: explained[-1] > 0,
        )
    assert explained == [0, 4]


def test_a_block_error_is_raised_in_the_caller(tiny_assets: TinyAssets, tmp_path: Path) -> None:
    model_root = tmp_path / "models"
    shutil.copytree(tiny_assets.model_root, model_root)
    plan = plan_audit(
        _config(), model_root=model_root, data_root=tiny_assets.data_root, block_instances=4
    )
    probabilities = _probabilities(plan)
    # The candidate vanishes after planning: each process fails to load it.
    shutil.rmtree(model_root / "perturbed")
    with pytest.raises(TrustdiffError, match="perturbed"):
        explain_blocks_in_processes(plan, probabilities, processes=2)


def _probabilities(plan: Any) -> Any:
    from trustdiff.runner_cache import RunnerCache
    from trustdiff.shards import Probabilities, predict_shard

    runners = RunnerCache()
    shards = [predict_shard(plan, index, runners=runners) for index in range(len(plan.shards))]
    return Probabilities.of_shards(plan, shards)
