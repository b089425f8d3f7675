"""The benchmark's shared forward thread: every arm's forwards on one thread, counted exactly."""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_explain.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_explain", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered first: its dataclasses look their module up while being created.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Probe(torch.nn.Module):
    """Records, per call, the thread it ran on and whether inference mode was on."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bool]] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: Any = None) -> torch.Tensor:
        self.calls.append((threading.current_thread().name, torch.is_inference_mode_enabled()))
        return input_ids.float().sum(-1)


def test_forwards_from_any_thread_run_on_the_one_forward_thread(bench: ModuleType) -> None:
    probe, forwards = Probe(), bench.ForwardThread()
    forwards.attach("reference", probe)
    input_ids = torch.tensor([[5, 6, 7], [5, 6, 0]])
    attention_mask = torch.tensor([[1, 1, 1], [1, 1, 0]])

    with torch.inference_mode():
        output = probe(input_ids=input_ids, attention_mask=attention_mask)
    worker = threading.Thread(target=lambda: probe(input_ids=input_ids[:1]), name="explain-0")
    worker.start()
    worker.join()
    summaries = forwards.summaries()
    forwards.close()

    assert output.tolist() == [18.0, 11.0]
    assert [name for name, _ in probe.calls] == ["bench-forward_0"] * 2
    assert [inference for _, inference in probe.calls] == [True, False]
    assert summaries["reference"] == {
        "forwards": 2,
        "rows": 3,
        "real_tokens": 5 + 3,  # the second call has no mask: every token is real
        "padded_tokens": 6 + 3,
        "distinct_token_sequences": 2,  # [5, 6, 7] twice and [5, 6]
    }
    assert summaries["total"]["forwards"] == 2


def test_pure_forward_sends_each_model_exactly_what_the_engine_asked_of_it(
    bench: ModuleType, tiny_assets: Any
) -> None:
    from trustdiff.inference import BatchingEvaluator, load_model_runner

    runners = [
        load_model_runner(path, transform=None, device="cpu")
        for path in (tiny_assets.reference, tiny_assets.perturbed)
    ]
    recording = bench.RecordingEvaluator(BatchingEvaluator(runners))
    recording.predict_proba(["a good film", "a bad film"])
    recording.predict_proba(["a bad film", "dull"], runners=[0])  # a re-run: reference only
    assert recording.asked_of == [
        dict.fromkeys(["a good film", "a bad film", "dull"]),
        dict.fromkeys(["a good film", "a bad film"]),
    ]

    workload = bench.Workload(
        runners=(runners[0], runners[1]),
        dataset=bench.BenchDataset(inputs=[], labels=[]),
        probabilities=(None, None),
        targets=[],
        settings=None,
        seed=0,
        batch_size=8,
    )
    output = bench.run_pure_forward(workload, [list(asked) for asked in recording.asked_of])
    assert output["unique_inputs"] == ["a good film", "a bad film", "dull"]
    assert output["evaluator"]["unique_inputs_forwarded"] == 3 + 2
    assert output["evaluator"]["cache_hits"] == 0
