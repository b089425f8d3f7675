"""The GPU path on a real CUDA device: dtypes, compression transforms, mixed placements.

Skipped without CUDA (CI has none); run on a GPU machine with `pytest tests/engine/test_cuda.py`.
Each figure is checked against the float32 model on the CPU, the plain reference computation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import TinyAssets
from trustdiff.config import DatasetSpec
from trustdiff.datasets import read_dataset
from trustdiff.inference import BatchingEvaluator, ModelRunner, load_model_runner
from trustdiff.transforms import Int8WeightLinear

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# Largest probability difference from the float32 CPU model: TF32 matmuls land near 1e-3 of
# a logit, half precision near 1e-2; int8 weights add their rounding.
TOLERANCE = {"float32": 5e-3, "bfloat16": 5e-2, "float16": 2e-2, "int8-weight": 5e-2}


@pytest.fixture(scope="module")
def texts(tiny_assets: TinyAssets) -> list[str]:
    reference = load_model_runner(tiny_assets.reference, transform=None, device="cpu")
    spec = DatasetSpec(path="d.jsonl")
    inputs = read_dataset(tiny_assets.dataset, spec, labels=reference.labels).inputs
    return [value for value in inputs if isinstance(value, str)]


@pytest.fixture(scope="module")
def on_cpu(tiny_assets: TinyAssets, texts: list[str]) -> np.ndarray:
    reference = load_model_runner(tiny_assets.reference, transform=None, device="cpu")
    return reference.predict_proba(texts)


def _assert_close_to_cpu(proba: np.ndarray, on_cpu: np.ndarray, tolerance: float) -> None:
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert np.abs(proba - on_cpu).max() < tolerance
    assert np.mean(proba.argmax(axis=1) == on_cpu.argmax(axis=1)) >= 0.95


@pytest.mark.parametrize(
    ("transform", "dtype", "computes_in"),
    [
        (None, "auto", torch.bfloat16),
        (None, "float32", torch.float32),
        (None, "float16", torch.float16),
        ("bfloat16", "float32", torch.bfloat16),
        ("float16", "auto", torch.float16),
        ("int8-weight", "auto", torch.bfloat16),
    ],
)
def test_runner_on_cuda_predicts_like_the_float32_cpu_model(
    tiny_assets: TinyAssets,
    texts: list[str],
    on_cpu: np.ndarray,
    transform: str | None,
    dtype: str,
    computes_in: torch.dtype,
) -> None:
    runner = load_model_runner(
        tiny_assets.reference, transform=transform, device="cuda", dtype=dtype
    )
    assert runner.device.type == "cuda"
    assert runner.dtype == computes_in
    assert all(parameter.is_cuda for parameter in runner.model.parameters())
    if transform == "int8-weight":
        layers = [m for m in runner.model.modules() if isinstance(m, Int8WeightLinear)]
        assert layers and all(layer.weight_int8.is_cuda for layer in layers)
    (evaluated,) = BatchingEvaluator([runner]).predict_proba(texts)
    name = transform or str(computes_in).removeprefix("torch.")
    _assert_close_to_cpu(evaluated, on_cpu, TOLERANCE[name])
    # The evaluator's sorted, pinned, non-blocking batches equal one plain padded batch.
    np.testing.assert_allclose(evaluated, runner.predict_proba(texts), atol=TOLERANCE[name] / 5)


def test_evaluator_mixes_a_cuda_reference_with_a_cpu_int8_dynamic_candidate(
    tiny_assets: TinyAssets, texts: list[str], on_cpu: np.ndarray
) -> None:
    reference = load_model_runner(tiny_assets.reference, transform=None, device="auto")
    candidate = load_model_runner(tiny_assets.reference, transform="int8-dynamic", device="auto")
    assert reference.device.type == "cuda"
    assert candidate.device == torch.device("cpu")
    evaluator = BatchingEvaluator([reference, candidate])
    on_gpu, quantized = evaluator.predict_proba(texts)
    _assert_close_to_cpu(on_gpu, on_cpu, TOLERANCE["bfloat16"])
    _assert_close_to_cpu(quantized, on_cpu, 0.05)
    # The reference alone (the noise floor's re-run) and then both again, from the cache.
    (again,) = evaluator.predict_proba(texts, runners=[0])
    np.testing.assert_array_equal(again, on_gpu)
    assert evaluator.stats.cache_hits == len(set(texts))


def test_two_gpu_runners_share_one_tokenization_and_batch_plan(
    tiny_assets: TinyAssets, texts: list[str]
) -> None:
    reference: ModelRunner = load_model_runner(tiny_assets.reference, transform=None, device="cuda")
    compressed = load_model_runner(tiny_assets.reference, transform="float16", device="cuda")
    evaluator = BatchingEvaluator([reference, compressed])
    first, second = evaluator.predict_proba(texts)
    assert evaluator.stats.tokenizations == len(set(texts))
    assert np.abs(first - second).max() < TOLERANCE["bfloat16"] + TOLERANCE["float16"]


@pytest.mark.parametrize("transform", [None, "int8-weight"])
def test_a_compiled_cuda_runner_predicts_like_the_eager_one(
    tiny_assets: TinyAssets, texts: list[str], on_cpu: np.ndarray, transform: str | None
) -> None:
    eager = load_model_runner(tiny_assets.reference, transform=transform, device="cuda")
    compiled = load_model_runner(
        tiny_assets.reference, transform=transform, device="cuda", compile=True
    )
    assert compiled.compiled and compiled.dtype == torch.bfloat16
    # Small batches: the graph meets several row counts and widths.
    evaluator = BatchingEvaluator([eager, compiled], gpu_batch_size=7)
    plain, fused = evaluator.predict_proba(texts)
    _assert_close_to_cpu(fused, on_cpu, TOLERANCE[transform or "bfloat16"])
    assert np.abs(fused - plain).max() < TOLERANCE["bfloat16"]
