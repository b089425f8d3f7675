"""Model runners and the batching evaluator on the tiny real checkpoints."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TinyAssets
from trustdiff.config import DatasetSpec
from trustdiff.datasets import read_dataset
from trustdiff.errors import AuditCancelledError, ConfigError, PickledCheckpointError
from trustdiff.inference import (
    BatchingEvaluator,
    ModelRunner,
    load_model_runner,
    progress_bars_silenced,
    resolve_device,
    resolve_dtype,
)
from trustdiff.transforms import Int8WeightLinear

# Lengths vary from 0 words to past max_length (64 positions), with repeats.
INPUTS = [
    "good film",
    "the movie was really awful and boring",
    "",
    "good film",
    "love",
    " ".join(["the plot was dull"] * 30),
    "excellent acting and a wonderful story",
    "terrible",
    "love",
]
PAIRS = [("the film", "was great"), ("acting", "awful and dull"), ("the film", "was great")]


@pytest.fixture(scope="module")
def reference(tiny_assets: TinyAssets) -> ModelRunner:
    return load_model_runner(tiny_assets.reference, transform=None, device="cpu")


@pytest.fixture(scope="module")
def quantized(tiny_assets: TinyAssets) -> ModelRunner:
    return load_model_runner(tiny_assets.reference, transform="int8-dynamic", device="auto")


def _one_at_a_time(runner: ModelRunner, inputs: list) -> np.ndarray:
    return np.concatenate([runner.predict_proba([value]) for value in inputs])


def test_runner_reads_labels_and_caps_length_at_the_position_embeddings(
    reference: ModelRunner,
) -> None:
    assert reference.labels == ["negative", "positive"]
    assert reference.device == torch.device("cpu")
    assert reference.max_length == 64
    assert not reference.model.training
    assert reference.num_parameters > 0


def test_evaluator_equals_unbatched_evaluation(reference: ModelRunner) -> None:
    evaluator = BatchingEvaluator([reference], batch_size=3)
    (batched,) = evaluator.predict_proba(INPUTS)
    assert batched.shape == (len(INPUTS), 2)
    assert batched.dtype == np.float64
    np.testing.assert_allclose(batched, _one_at_a_time(reference, INPUTS), atol=1e-6)
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, atol=1e-12)


def test_evaluator_handles_sentence_pairs_and_mixed_calls(reference: ModelRunner) -> None:
    evaluator = BatchingEvaluator([reference], batch_size=2)
    mixed = [*PAIRS, "good film", *PAIRS[:1]]
    (batched,) = evaluator.predict_proba(mixed)
    np.testing.assert_allclose(batched, _one_at_a_time(reference, mixed), atol=1e-6)
    # A pair is not the concatenated string: the segment boundary is real.
    assert not np.allclose(batched[0], reference.predict_proba(["the film was great"])[0])


def test_evaluator_deduplicates_and_caches(reference: ModelRunner) -> None:
    evaluator = BatchingEvaluator([reference], batch_size=4)
    first = evaluator.predict_proba(INPUTS)[0]
    unique = len(set(INPUTS))
    assert evaluator.stats.requested_inputs == len(INPUTS)
    assert evaluator.stats.deduplicated_inputs == len(INPUTS) - unique
    assert evaluator.stats.unique_inputs_forwarded == unique
    # Token lengths 64, 9, 8, 4, 3, 3, 2 (longest first), at most 4 rows a batch: the
    # 64-token text goes alone (the jump to 9 would pad 3 rows by 55 tokens each, more than
    # a pass costs), then [9, 8, 4, 3] (full) and [3, 2].
    assert evaluator.stats.batches == 3
    assert evaluator.stats.real_tokens == 64 + 9 + 8 + 4 + 3 + 3 + 2
    assert evaluator.stats.padded_tokens == 64 + 4 * 9 + 2 * 3
    assert evaluator.stats.tokenizations == unique
    assert evaluator.stats.forward_seconds > 0
    again = evaluator.predict_proba([*INPUTS, "a new text"])[0]
    assert evaluator.stats.cache_hits == unique
    assert evaluator.stats.unique_inputs_forwarded == unique + 1
    np.testing.assert_array_equal(again[: len(INPUTS)], first)
    again[0] = -1.0  # callers own their arrays: the cache must not change
    np.testing.assert_array_equal(evaluator.predict_proba(INPUTS[:1])[0][0], first[0])


def test_cache_is_bounded_least_recently_used(reference: ModelRunner) -> None:
    evaluator = BatchingEvaluator([reference], cache_size=2)
    evaluator.predict_proba(["good", "bad", "dull"])
    evaluator.predict_proba(["bad"])  # cached: "bad", "dull" -> hit
    evaluator.predict_proba(["good"])  # evicted -> forwarded again
    assert evaluator.stats.cache_hits == 1
    assert evaluator.stats.unique_inputs_forwarded == 4


def test_cache_can_be_disabled(reference: ModelRunner) -> None:
    evaluator = BatchingEvaluator([reference], cache_size=0)
    evaluator.predict_proba(["good"])
    evaluator.predict_proba(["good"])
    assert evaluator.stats.cache_hits == 0
    assert evaluator.stats.unique_inputs_forwarded == 2


def test_the_same_runner_twice_runs_once_and_columns_follow_the_order(
    reference: ModelRunner,
) -> None:
    evaluator = BatchingEvaluator([reference, reference], column_orders=[[0, 1], [1, 0]])
    straight, swapped = evaluator.predict_proba(INPUTS)
    np.testing.assert_array_equal(swapped, straight[:, ::-1])
    single = BatchingEvaluator([reference])
    single.predict_proba(INPUTS)
    assert evaluator.stats.batches == single.stats.batches
    assert evaluator.stats.tokenizations == single.stats.tokenizations == len(set(INPUTS))


def test_with_runners_keeps_every_setting_and_starts_empty(reference: ModelRunner) -> None:
    def never() -> bool:
        return False

    evaluator = BatchingEvaluator(
        [reference, reference],
        column_orders=[[0, 1], [1, 0]],
        batch_size=3,
        gpu_batch_size=5,
        token_budget=100,
        batch_overhead_tokens=7,
        cache_size=11,
        should_cancel=never,
    )
    evaluator.predict_proba(INPUTS)
    second = evaluator.with_runners([1])
    assert second.runners == [reference] and second.column_orders == [[1, 0]]
    settings = ("batch_size", "gpu_batch_size", "token_budget", "batch_overhead_tokens")
    for name in (*settings, "cache_size", "should_cancel"):
        assert getattr(second, name) == getattr(evaluator, name), name
    assert second.stats.calls == 0
    (swapped,) = second.predict_proba(INPUTS)
    np.testing.assert_array_equal(swapped, evaluator.predict_proba(INPUTS)[1])
    assert second.stats.cache_hits == 0


def test_cancellation_is_checked_between_batches(reference: ModelRunner) -> None:
    calls = []

    def should_cancel() -> bool:
        calls.append(1)
        return len(calls) > 1

    evaluator = BatchingEvaluator([reference], batch_size=2, should_cancel=should_cancel)
    with pytest.raises(AuditCancelledError):
        evaluator.predict_proba(INPUTS)
    assert evaluator.stats.batches == 1


def test_concurrent_callers_get_the_sequential_results(reference: ModelRunner) -> None:
    expected = BatchingEvaluator([reference]).predict_proba(INPUTS)[0]
    evaluator = BatchingEvaluator([reference], batch_size=2)
    results: dict[int, np.ndarray] = {}

    def work(worker: int) -> None:
        order = np.random.default_rng(worker).permutation(len(INPUTS))
        (proba,) = evaluator.predict_proba([INPUTS[index] for index in order])
        restored = np.empty_like(proba)
        restored[order] = proba
        results[worker] = restored

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for proba in results.values():
        np.testing.assert_allclose(proba, expected, atol=1e-6)


def test_bad_arguments_raise(reference: ModelRunner) -> None:
    with pytest.raises(ValueError, match="str or a"):
        BatchingEvaluator([reference]).predict_proba([("only one",)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="permutation"):
        BatchingEvaluator([reference], column_orders=[[0, 0]])
    with pytest.raises(ValueError, match="column_orders"):
        BatchingEvaluator([reference], column_orders=[[0, 1], [1, 0]])


def test_int8_dynamic_runs_on_cpu_and_predicts_close_to_the_original(
    tiny_assets: TinyAssets, reference: ModelRunner, quantized: ModelRunner
) -> None:
    assert quantized.device == torch.device("cpu")
    assert quantized.transform == "int8-dynamic"
    quantized_layers = [
        module
        for module in quantized.model.modules()
        if type(module).__module__.startswith("torch.ao.nn.quantized")
    ]
    assert quantized_layers
    texts = read_dataset(
        tiny_assets.dataset, DatasetSpec(path="d.jsonl"), labels=reference.labels
    ).inputs
    original, compressed = BatchingEvaluator([reference, quantized]).predict_proba(texts)
    assert np.abs(original - compressed).max() < 0.05
    assert np.mean(original.argmax(axis=1) == compressed.argmax(axis=1)) >= 0.95


def test_runners_of_one_tokenizer_share_its_tokenization(
    reference: ModelRunner, quantized: ModelRunner
) -> None:
    assert reference.tokenizer_key == quantized.tokenizer_key
    evaluator = BatchingEvaluator([reference, quantized])
    original, compressed = evaluator.predict_proba(INPUTS)
    unique = len(set(INPUTS))
    assert evaluator.stats.tokenizations == unique  # not once per runner
    np.testing.assert_allclose(original, _one_at_a_time(reference, INPUTS), atol=1e-6)
    assert np.abs(original - compressed).max() < 0.05
    # Each runner still sees every batch: two forward passes per planned batch.
    assert evaluator.stats.batches % 2 == 0
    assert evaluator.stats.real_tokens == 2 * (64 + 9 + 8 + 4 + 3 + 3 + 2)


def test_runners_of_different_tokenizers_tokenize_separately(
    tiny_assets: TinyAssets, reference: ModelRunner, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(tiny_assets.reference, tmp_path / "copy"))
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config["model_max_length"] = 16
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    shorter = load_model_runner(copy, transform=None, device="cpu")
    assert shorter.max_length == 16
    assert shorter.tokenizer_key != reference.tokenizer_key
    evaluator = BatchingEvaluator([reference, shorter])
    full, truncated = evaluator.predict_proba(INPUTS)
    assert evaluator.stats.tokenizations == 2 * len(set(INPUTS))
    np.testing.assert_allclose(full, _one_at_a_time(reference, INPUTS), atol=1e-6)
    np.testing.assert_allclose(truncated, _one_at_a_time(shorter, INPUTS), atol=1e-6)
    long_text = INPUTS.index(" ".join(["the plot was dull"] * 30))
    assert not np.allclose(full[long_text], truncated[long_text])


def test_dtype_auto_is_float32_on_cpu_and_bfloat16_on_cuda(
    tiny_assets: TinyAssets, reference: ModelRunner
) -> None:
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16
    assert reference.dtype == torch.float32
    with pytest.raises(ConfigError, match="unknown dtype"):
        resolve_dtype("float8", torch.device("cpu"))
    with pytest.raises(ConfigError, match="unknown dtype"):
        load_model_runner(tiny_assets.reference, transform=None, device="cpu", dtype="float8")


def test_bfloat16_dtype_predicts_close_to_float32(
    tiny_assets: TinyAssets, reference: ModelRunner
) -> None:
    runner = load_model_runner(
        tiny_assets.reference, transform=None, device="cpu", dtype="bfloat16"
    )
    assert runner.dtype == torch.bfloat16
    assert {parameter.dtype for parameter in runner.model.parameters()} == {torch.bfloat16}
    (half,) = BatchingEvaluator([runner]).predict_proba(INPUTS)
    np.testing.assert_allclose(half.sum(axis=1), 1.0, atol=1e-12)
    assert np.abs(half - _one_at_a_time(reference, INPUTS)).max() < 0.05


@pytest.mark.parametrize(
    ("transform", "dtype"),
    [("float16", torch.float16), ("bfloat16", torch.bfloat16), ("int8-weight", torch.float32)],
)
def test_compression_transforms_predict_close_to_the_original(
    tiny_assets: TinyAssets, reference: ModelRunner, transform: str, dtype: torch.dtype
) -> None:
    runner = load_model_runner(tiny_assets.reference, transform=transform, device="cpu")
    assert runner.transform == transform
    assert runner.dtype == dtype
    assert runner.device == torch.device("cpu")
    assert runner.num_parameters == reference.num_parameters  # counted before the transform
    if transform == "int8-weight":
        assert not any(isinstance(m, torch.nn.Linear) for m in runner.model.modules())
        assert any(isinstance(m, Int8WeightLinear) for m in runner.model.modules())
    else:
        assert {parameter.dtype for parameter in runner.model.parameters()} == {dtype}
    # The reference runner is untouched by the transform of another one.
    assert {parameter.dtype for parameter in reference.model.parameters()} == {torch.float32}
    texts = read_dataset(
        tiny_assets.dataset, DatasetSpec(path="d.jsonl"), labels=reference.labels
    ).inputs
    original, compressed = BatchingEvaluator([reference, runner]).predict_proba(texts)
    np.testing.assert_allclose(compressed.sum(axis=1), 1.0, atol=1e-12)
    assert 0 < np.abs(original - compressed).max() < 0.05
    assert np.mean(original.argmax(axis=1) == compressed.argmax(axis=1)) >= 0.95


def test_a_compiled_runner_predicts_what_the_eager_one_does(
    tiny_assets: TinyAssets, reference: ModelRunner
) -> None:
    compiled = load_model_runner(tiny_assets.reference, transform=None, device="cpu", compile=True)
    assert compiled.compiled and not reference.compiled
    assert isinstance(compiled.model, torch.nn.Module) and not hasattr(compiled.model, "_orig_mod")
    assert reference.network is reference.model
    assert compiled.network is not compiled.model and compiled.network is compiled.network
    compiled.warm_up(INPUTS)  # the audit's load stage compiles here
    # Batches of at most 3 rows: the one graph meets several row counts and widths, a
    # single row included, and sentence pairs' token types.
    evaluator = BatchingEvaluator([reference, compiled], batch_size=3)
    for inputs in (INPUTS, PAIRS):
        eager, fused = evaluator.predict_proba(inputs)
        np.testing.assert_allclose(fused, eager, rtol=0, atol=1e-5)
    assert evaluator.stats.batches == 2 * 4  # four batches of each runner
    # int8-dynamic's quantized CPU kernels are never compiled; the runner says so.
    quantized = load_model_runner(
        tiny_assets.reference, transform="int8-dynamic", device="cpu", compile=True
    )
    assert not quantized.compiled


def test_loader_refuses_pickled_weights_before_loading(
    tiny_assets: TinyAssets, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(tiny_assets.reference, tmp_path / "copy"))
    (copy / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(PickledCheckpointError):
        load_model_runner(copy, transform=None)


def test_unknown_transform_and_unavailable_device_raise(tiny_assets: TinyAssets) -> None:
    with pytest.raises(ConfigError, match="unknown transform"):
        load_model_runner(tiny_assets.reference, transform="int4-magic")
    with pytest.raises(ConfigError, match="invalid device"):
        resolve_device("gpu-please")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_progress_bars_are_silenced_until_the_last_concurrent_load_ends() -> None:
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.enable_progress_bar()
    try:
        # Two loads that overlap: the first to finish must not turn bars back on.
        first, second = progress_bars_silenced(), progress_bars_silenced()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert not transformers_logging.is_progress_bar_enabled()
        second.__exit__(None, None, None)
        assert transformers_logging.is_progress_bar_enabled()
        # Many threads at once leave the setting as they found it.
        barrier = threading.Barrier(8)
        seen_while_loading: list[bool] = []

        def load() -> None:
            with progress_bars_silenced():
                barrier.wait(timeout=10)
                seen_while_loading.append(transformers_logging.is_progress_bar_enabled())

        threads = [threading.Thread(target=load) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert seen_while_loading == [False] * 8
        assert transformers_logging.is_progress_bar_enabled()
        # Bars the user turned off stay off.
        transformers_logging.disable_progress_bar()
        with progress_bars_silenced():
            pass
        assert not transformers_logging.is_progress_bar_enabled()
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()
        else:
            transformers_logging.disable_progress_bar()
