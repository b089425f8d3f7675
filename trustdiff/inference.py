"""Load checkpoints as model runners and predict probabilities through one batching evaluator."""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from trustdiff.checkpoints import CheckpointInfo, inspect_checkpoint
from trustdiff.config import Transform
from trustdiff.datasets import TextInput
from trustdiff.errors import AuditCancelledError, CheckpointError, ConfigError

TRANSFORMS: tuple[str, ...] = get_args(Transform)
# Models whose position ids start at padding_idx + 1: two positions are never usable.
_POSITION_OFFSET_MODEL_TYPES = frozenset(
    {"roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "data2vec-text", "xmod"}
)
_UNBOUNDED_MODEL_MAX_LENGTH = 1_000_000


def resolve_device(device: str) -> torch.device:
    """`"auto"` is CUDA when available, else CPU; any other torch device string is checked."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise ConfigError(f"invalid device {device!r}: {error}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was requested but CUDA is not available")
    return resolved


@dataclass
class ModelRunner:
    """A loaded checkpoint: model in eval mode on `device`, its tokenizer and label names.

    `labels` are the checkpoint's own label names in id order; the columns of
    `predict_proba` follow them. `max_length` is the effective truncation length: the
    requested one, capped by what the model's position embeddings allow.
    """

    path: Path
    model: nn.Module
    tokenizer: Any
    labels: list[str]
    device: torch.device
    transform: str | None
    max_length: int
    num_parameters: int
    info: CheckpointInfo

    def tokenize(self, inputs: Sequence[TextInput]) -> dict[str, list[list[int]]]:
        """Unpadded token ids (and the other model inputs) of inputs all of one kind.

        `inputs` must be all strings or all (text, text pair) tuples.
        """
        if inputs and isinstance(inputs[0], tuple):
            firsts = [pair[0] for pair in inputs]
            seconds = [pair[1] for pair in inputs]
            encoded = self.tokenizer(
                firsts, seconds, truncation=True, max_length=self.max_length, padding=False
            )
        else:
            encoded = self.tokenizer(
                list(inputs), truncation=True, max_length=self.max_length, padding=False
            )
        names = getattr(self.tokenizer, "model_input_names", None) or list(encoded.keys())
        return {name: encoded[name] for name in names if name in encoded}

    def forward(self, encodings: dict[str, list[list[int]]], rows: Sequence[int]) -> NDArray:
        """Probabilities, shape (len(rows), K) float64, of the encoded rows `rows`.

        The rows are padded to their own longest length only (dynamic padding). Softmax runs
        in float64 so each row sums to 1 to machine precision whatever the model's dtype.
        """
        batch = _pad_batch(
            encodings,
            rows,
            pad_token_id=self.tokenizer.pad_token_id or 0,
            padding_side=getattr(self.tokenizer, "padding_side", "right"),
        )
        tensors = {name: torch.from_numpy(array).to(self.device) for name, array in batch.items()}
        logits = self.model(**tensors).logits
        return torch.softmax(logits.double(), dim=-1).cpu().numpy()

    def predict_proba(self, inputs: Sequence[TextInput]) -> NDArray:
        """Probabilities, shape (n, K), of `inputs` in one padded batch (no cache, no sorting).

        The plain reference computation: `BatchingEvaluator` must agree with it.
        """
        encodings = self.tokenize(inputs)
        with torch.inference_mode():
            return self.forward(encodings, range(len(inputs)))


def _pad_batch(
    encodings: dict[str, list[list[int]]],
    rows: Sequence[int],
    *,
    pad_token_id: int,
    padding_side: str,
) -> dict[str, NDArray[np.int64]]:
    """Pad the selected rows of each encoding to the longest one among them.

    Done with numpy rather than `tokenizer.pad` because it is several times faster on the
    thousands of short perturbed texts an explainer sends.
    """
    lengths = [len(encodings["input_ids"][row]) for row in rows]
    width = max(lengths)
    batch: dict[str, NDArray[np.int64]] = {}
    for name, values in encodings.items():
        fill = pad_token_id if name == "input_ids" else 0
        array = np.full((len(rows), width), fill, dtype=np.int64)
        for position, (row, length) in enumerate(zip(rows, lengths, strict=True)):
            if padding_side == "left":
                array[position, width - length :] = values[row]
            else:
                array[position, :length] = values[row]
        batch[name] = array
    return batch


def _effective_max_length(requested: int, model: nn.Module, tokenizer: Any) -> int:
    limits = [requested]
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < _UNBOUNDED_MODEL_MAX_LENGTH:
        limits.append(tokenizer_limit)
    config = getattr(model, "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        offset = 2 if getattr(config, "model_type", None) in _POSITION_OFFSET_MODEL_TYPES else 0
        limits.append(positions - offset)
    return min(limits)


def _dtype_keyword() -> str:
    # transformers 4.56 renamed `torch_dtype` to `dtype`; 5.x warns on the old name.
    version = metadata.version("transformers")
    major, minor = (int(part) for part in version.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def apply_transform(model: nn.Module, transform: str) -> nn.Module:
    """`model` with a load-time transform applied; the input model is left untouched.

    `int8-dynamic`: dynamic int8 quantization of every `nn.Linear`
    (`torch.ao.quantization.quantize_dynamic`, qint8 weights, activations quantized per batch).
    Its kernels exist only for CPU.
    """
    if transform not in TRANSFORMS:
        raise ConfigError(f"unknown transform {transform!r}; known transforms are {TRANSFORMS}")
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao; it still works and
        # torchao is not a dependency.
        warnings.simplefilter("ignore")
        # inplace=False (the default) quantizes a deep copy.
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def load_model_runner(
    path: Path,
    *,
    transform: str | None,
    device: str = "auto",
    max_length: int = 256,
    allow_pickle: bool = False,
) -> ModelRunner:
    """Load a checkpoint folder as a `ModelRunner`, after `inspect_checkpoint` accepts it.

    Loads with `trust_remote_code=False`, local files only, safetensors only (unless
    `allow_pickle`), in float32, then puts the model in eval mode on the chosen device.

    `transform="int8-dynamic"` applies
    `torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)`. Dynamic
    quantized kernels exist only for CPU, so **that runner always runs on CPU**, whatever
    `device` says (the other runner of an audit may still use the GPU).

    Raises `CheckpointError` subclasses for a refused or unloadable folder, `ConfigError` for
    an unknown transform or an unavailable device.
    """
    if transform is not None and transform not in TRANSFORMS:
        raise ConfigError(f"unknown transform {transform!r}; known transforms are {TRANSFORMS}")
    info = inspect_checkpoint(path, allow_pickle=allow_pickle)
    target = torch.device("cpu") if transform == "int8-dynamic" else resolve_device(device)

    from safetensors import SafetensorError
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    # transformers 5 draws a "Loading weights" bar per model; on a worker's or the CLI's
    # stderr it only buries real progress. Restored afterwards: the setting is global.
    bars_were_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(path), trust_remote_code=False, local_files_only=True
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path),
            trust_remote_code=False,
            local_files_only=True,
            use_safetensors=None if allow_pickle else True,
            **{_dtype_keyword(): torch.float32},
        )
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:
        # e.g. a config whose shapes do not match the weights, an unknown model_type, or a
        # truncated/corrupt safetensors file
        raise CheckpointError(f"cannot load checkpoint {str(path)!r}: {error}") from error
    finally:
        if bars_were_enabled:
            transformers_logging.enable_progress_bar()
    if tokenizer.pad_token_id is None:
        # Decoder-style classifiers (GPT-2, Llama) ship no pad token; their end-of-text token
        # is the conventional stand-in, and the attention mask hides it anyway.
        if tokenizer.eos_token is None:
            raise CheckpointError(f"tokenizer of {str(path)!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    num_parameters = sum(parameter.numel() for parameter in model.parameters())
    if transform is not None:
        model = apply_transform(model, transform)
    model.to(target)
    return ModelRunner(
        path=path,
        model=model,
        tokenizer=tokenizer,
        labels=list(info.labels),
        device=target,
        transform=transform,
        max_length=_effective_max_length(max_length, model, tokenizer),
        num_parameters=num_parameters,
        info=info,
    )


@dataclass
class EvaluatorStats:
    """Counters of a `BatchingEvaluator`, cumulative over its calls.

    `requested_inputs` counts every input asked for; `deduplicated_inputs` those that repeated
    another input of the same call; `cache_hits` distinct inputs answered from the cache;
    `unique_inputs_forwarded` distinct inputs that reached the models; `batches` forward
    passes (all runners); `forward_seconds` time in tokenization and forward passes only.
    """

    calls: int = 0
    requested_inputs: int = 0
    deduplicated_inputs: int = 0
    cache_hits: int = 0
    unique_inputs_forwarded: int = 0
    batches: int = 0
    forward_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {name: float(value) for name, value in self.__dict__.items()}


def _check_input(value: object) -> TextInput:
    if isinstance(value, str):
        return value
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], str)
    ):
        return value
    raise ValueError(f"an input must be a str or a (str, str) tuple, got {value!r:.80}")


class BatchingEvaluator:
    """Probabilities of several models for the same inputs, computed as cheaply as possible.

    `predict_proba(inputs)` returns one (n, K) float64 array per runner, columns in the
    reference label order (`column_orders[r]` selects runner r's columns, see
    `trustdiff.checkpoints.align_label_spaces`; identity when None), each row summing to 1.
    Per call it drops duplicate inputs, answers repeats from a bounded LRU cache
    (`cache_size` distinct inputs; 0 disables it), sorts the rest by token length so each
    batch pads to similar lengths, and runs them under `torch.inference_mode()`. The same
    runner object passed twice is run once. Results equal one-at-a-time evaluation up to
    float rounding (padding is masked).

    `batch_size` is sequences per forward pass on CPU; CUDA runners use `gpu_batch_size`
    (default 4 × `batch_size`), since a GPU is underused by small batches. `autocast_bf16`
    runs CUDA forwards under bfloat16 autocast (ignored on CPU). `should_cancel` is checked
    before every batch and raises `AuditCancelledError` once it answers true.

    Thread-safe: one lock serializes calls, so concurrent explainers share the cache and
    never interleave half-built batches.
    """

    def __init__(
        self,
        runners: Sequence[ModelRunner],
        *,
        column_orders: Sequence[Sequence[int]] | None = None,
        batch_size: int = 64,
        cache_size: int = 200_000,
        autocast_bf16: bool = False,
        gpu_batch_size: int | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> None:
        if not runners:
            raise ValueError("BatchingEvaluator needs at least one runner")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if gpu_batch_size is not None and gpu_batch_size < 1:
            raise ValueError(f"gpu_batch_size must be >= 1, got {gpu_batch_size}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        orders = (
            [list(range(len(runner.labels))) for runner in runners]
            if column_orders is None
            else [list(order) for order in column_orders]
        )
        if len(orders) != len(runners):
            raise ValueError(f"column_orders has {len(orders)} entries for {len(runners)} runners")
        for runner, order in zip(runners, orders, strict=True):
            if sorted(order) != list(range(len(runner.labels))):
                raise ValueError(
                    f"column order {order} is not a permutation of the {len(runner.labels)} "
                    f"columns of {str(runner.path)!r}"
                )
        if len({len(order) for order in orders}) != 1:
            raise ValueError(f"runners have different label counts: {[len(o) for o in orders]}")
        self.runners = list(runners)
        self.column_orders = orders
        self.n_classes = len(orders[0])
        self.batch_size = batch_size
        self.gpu_batch_size = gpu_batch_size or 4 * batch_size
        self.cache_size = cache_size
        self.autocast_bf16 = autocast_bf16
        self.should_cancel = should_cancel
        self.stats = EvaluatorStats()
        self._cache: OrderedDict[TextInput, NDArray] = OrderedDict()
        self._lock = threading.Lock()

    def predict_proba(self, inputs: Sequence[TextInput]) -> list[NDArray]:
        """One (n, K) float64 array per runner, in runner order, reference label columns."""
        keys = [_check_input(value) for value in inputs]
        with self._lock:
            self.stats.calls += 1
            self.stats.requested_inputs += len(keys)
            unique = list(dict.fromkeys(keys))
            self.stats.deduplicated_inputs += len(keys) - len(unique)
            # (u, R, K): every distinct input's row for every runner.
            table = np.empty((len(unique), len(self.runners), self.n_classes), dtype=np.float64)
            missing: list[int] = []
            for position, key in enumerate(unique):
                cached = self._cache.get(key)
                if cached is None:
                    missing.append(position)
                else:
                    self._cache.move_to_end(key)
                    table[position] = cached
            self.stats.cache_hits += len(unique) - len(missing)
            if missing:
                table[missing] = self._forward([unique[position] for position in missing])
                self.stats.unique_inputs_forwarded += len(missing)
                self._remember([unique[position] for position in missing], table[missing])
            positions = {key: position for position, key in enumerate(unique)}
            rows = np.fromiter((positions[key] for key in keys), dtype=np.intp, count=len(keys))
            return [table[rows, index, :] for index in range(len(self.runners))]

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def _remember(self, keys: list[TextInput], rows: NDArray) -> None:
        if self.cache_size == 0:
            return
        for key, row in zip(keys[-self.cache_size :], rows[-self.cache_size :], strict=True):
            self._cache[key] = row
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _forward(self, inputs: list[TextInput]) -> NDArray:
        """(len(inputs), R, K) probabilities of inputs that are not cached."""
        output = np.empty((len(inputs), len(self.runners), self.n_classes), dtype=np.float64)
        # Strings and sentence pairs tokenize through different calls; keep them apart.
        groups = [
            [index for index, value in enumerate(inputs) if isinstance(value, str)],
            [index for index, value in enumerate(inputs) if isinstance(value, tuple)],
        ]
        done: dict[int, NDArray] = {}
        for runner_index, runner in enumerate(self.runners):
            raw = done.get(id(runner))
            if raw is None:
                raw = np.empty((len(inputs), self.n_classes), dtype=np.float64)
                for group in groups:
                    if group:
                        raw[group] = self._forward_runner(runner, [inputs[i] for i in group])
                done[id(runner)] = raw
            output[:, runner_index, :] = raw[:, self.column_orders[runner_index]]
        return output

    def _forward_runner(self, runner: ModelRunner, inputs: list[TextInput]) -> NDArray:
        batch_size = self.gpu_batch_size if runner.device.type == "cuda" else self.batch_size
        started = time.perf_counter()
        encodings = runner.tokenize(inputs)
        self.stats.forward_seconds += time.perf_counter() - started
        lengths = np.fromiter(
            (len(ids) for ids in encodings["input_ids"]), dtype=np.int64, count=len(inputs)
        )
        # Longest first: a batch that does not fit in memory fails at once, not at the end.
        order = np.argsort(-lengths, kind="stable")
        probabilities = np.empty((len(inputs), len(runner.labels)), dtype=np.float64)
        use_autocast = self.autocast_bf16 and runner.device.type == "cuda"
        for start in range(0, len(inputs), batch_size):
            if self.should_cancel is not None and self.should_cancel():
                raise AuditCancelledError("cancelled while predicting")
            rows = order[start : start + batch_size].tolist()
            started = time.perf_counter()
            autocast = (
                torch.autocast("cuda", dtype=torch.bfloat16)
                if use_autocast
                else contextlib.nullcontext()
            )
            with torch.inference_mode(), autocast:
                probabilities[rows] = runner.forward(encodings, rows)
            self.stats.forward_seconds += time.perf_counter() - started
            self.stats.batches += 1
        return probabilities
