"""Load checkpoints as model runners and predict probabilities through one batching evaluator."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, cast, get_args

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from trustdiff.batching import BATCH_OVERHEAD_TOKENS, TOKEN_BUDGET, pad_batch, plan_batches
from trustdiff.checkpoints import CheckpointInfo, inspect_checkpoint
from trustdiff.config import Dtype
from trustdiff.datasets import TextInput
from trustdiff.errors import AuditCancelledError, CheckpointError, ConfigError
from trustdiff.tokenization import (
    FastEncoder,
    build_fast_encoder,
    call_settings,
    tokenize_with_transformers,
)
from trustdiff.transforms import TORCH_DTYPES, TRANSFORMS, apply_transform

DTYPES: tuple[str, ...] = get_args(Dtype)
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


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`"auto"` is bfloat16 on CUDA and float32 elsewhere; otherwise the named dtype."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in TORCH_DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; known dtypes are {DTYPES}")
    return TORCH_DTYPES[dtype]


def resolve_placement(device: str, dtype: str) -> tuple[str, str]:
    """What `device` and `dtype` ("auto" included) stand for on this machine, as names that
    `load_model_runner` accepts: e.g. ("cuda", "bfloat16") or ("cpu", "float32")."""
    target = resolve_device(device)
    compute = resolve_dtype(dtype, target)
    name = next(name for name, value in TORCH_DTYPES.items() if value == compute)
    return str(target), name


def runner_placement(transform: str | None, *, device: str, dtype: str) -> tuple[str, str]:
    """The device and dtype, as `str(torch.device)` and `str(torch.dtype)`, of the runner that
    `load_model_runner` would make with these arguments; no model is loaded."""
    target, compute_dtype = _placement(transform, device=device, dtype=dtype)
    return str(target), str(compute_dtype)


@dataclass
class ModelRunner:
    """A loaded checkpoint: model in eval mode on `device`, its tokenizer and label names.

    `labels` are the checkpoint's own label names in id order; the columns of
    `predict_proba` follow them. `max_length` is the effective truncation length: the
    requested one, capped by what the model's position embeddings allow. `dtype` is the
    dtype the model computes in. `tokenizer_key` identifies what turns text into model
    inputs (tokenizer files, truncation, padding): runners with equal keys share one
    tokenization in the evaluator. `compiled`: forwards run through `torch.compile(model)`,
    built at the first forward (`compiles` says which runners may be).
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
    dtype: torch.dtype = torch.float32
    tokenizer_key: str = ""
    compiled: bool = False
    _compiled_model: nn.Module | None = field(default=None, init=False, repr=False, compare=False)
    _warm: bool = field(default=False, init=False, repr=False, compare=False)
    # (call settings, encoder or None) of `fast_encoder`, built at first use.
    _fast_encoder: tuple[tuple[object, ...], FastEncoder | None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id or 0)

    @property
    def padding_side(self) -> str:
        return str(getattr(self.tokenizer, "padding_side", "right"))

    @property
    def fast_encoder(self) -> FastEncoder | None:
        """The encoder `tokenize` calls the Rust tokenizer through, or None when `tokenize`
        falls back to the tokenizer's own call (see `trustdiff.tokenization`).

        Built at first use and again whenever `call_settings` change (`max_length`, the
        truncation side, special-token splitting, the model input names); the backend itself
        is copied once, so a tokenizer is not to be edited after its first use, as
        `tokenizer_key` already assumes.
        """
        settings = call_settings(self.tokenizer, self.max_length)
        built = self._fast_encoder
        if built is None or built[0] != settings:
            built = (settings, build_fast_encoder(self.tokenizer, max_length=self.max_length))
            self._fast_encoder = built
        return built[1]

    def tokenize(self, inputs: Sequence[TextInput]) -> dict[str, list[list[int]]]:
        """Unpadded token ids (and the other model inputs) of inputs all of one kind.

        `inputs` must be all strings or all (text, text pair) tuples. Equal, list for list, to
        `tokenize_with_transformers`; through `fast_encoder` when there is one. No inputs go
        to the tokenizer's own call, which decides what that means.
        """
        encoder = self.fast_encoder
        if encoder is None or not inputs:
            return tokenize_with_transformers(self.tokenizer, inputs, max_length=self.max_length)
        return encoder(inputs)

    def to_device(self, batch: dict[str, NDArray[np.int64]]) -> dict[str, torch.Tensor]:
        """Host arrays as tensors on this runner's device.

        To CUDA they go from pinned memory without blocking, so the host can prepare the next
        batch while the copy and the forward pass run.
        """
        if self.device.type != "cuda":
            return {name: torch.from_numpy(array) for name, array in batch.items()}
        return {
            name: torch.from_numpy(array).pin_memory().to(self.device, non_blocking=True)
            for name, array in batch.items()
        }

    def forward_tensors(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Probabilities, shape (rows, K) float64, left on the device (no synchronisation).

        Softmax runs in float64 so each row sums to 1 to machine precision whatever the
        model's dtype. Call under `torch.inference_mode()`.
        """
        logits = self.network(**tensors).logits
        return torch.softmax(logits.double(), dim=-1)

    def warm_up(self, inputs: Sequence[TextInput]) -> None:
        """Compile now, when `compiled` and not yet done, by forwarding `inputs` as a batch
        and the first alone (a batch of one row is a graph of its own), so that the audit's
        first forwards do not wait for the compiler; nothing when not `compiled`."""
        if not self.compiled or self._warm or not inputs:
            return
        self.predict_proba(list(inputs[:2]))
        self.predict_proba(list(inputs[:1]))
        self._warm = True

    @property
    def network(self) -> nn.Module:
        """What the forwards call: the model, or its compiled form when `compiled` (made
        here, once; it compiles at its first call). Shapes are dynamic from the start:
        batches vary in rows and width, and one graph serves them."""
        if not self.compiled:
            return self.model
        if self._compiled_model is None:
            # A module given to torch.compile comes back as a module (OptimizedModule).
            self._compiled_model = cast(nn.Module, torch.compile(self.model, dynamic=True))
        return self._compiled_model

    def forward(self, encodings: dict[str, list[list[int]]], rows: Sequence[int]) -> NDArray:
        """Probabilities, shape (len(rows), K) float64, of the encoded rows `rows`.

        The rows are padded to their own longest length only (dynamic padding).
        """
        batch = pad_batch(
            encodings, rows, pad_token_id=self.pad_token_id, padding_side=self.padding_side
        )
        return self.forward_tensors(self.to_device(batch)).cpu().numpy()

    def predict_proba(self, inputs: Sequence[TextInput]) -> NDArray:
        """Probabilities, shape (n, K), of `inputs` in one padded batch (no cache, no sorting).

        The plain reference computation: `BatchingEvaluator` must agree with it.
        """
        encodings = self.tokenize(inputs)
        with torch.inference_mode():
            return self.forward(encodings, range(len(inputs)))


def compiles(transform: str | None, requested: bool) -> bool:
    """Whether a runner with this transform is compiled when the audit's `compile` option is
    `requested`: every one but `int8-dynamic`, whose quantized CPU kernels TorchInductor does
    not fuse."""
    return requested and transform != "int8-dynamic"


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


def _tokenizer_key(info: CheckpointInfo, tokenizer: Any, max_length: int) -> str:
    """sha256 over the tokenizer files' bytes and the settings that shape model inputs.

    Two runners with equal keys produce identical encodings for every input (an int8 or
    half-precision candidate made from the reference shares its tokenizer files).
    """
    digest = hashlib.sha256()
    for name in info.tokenizer_files:
        digest.update(f"{name}\0".encode())
        digest.update((info.path / name).read_bytes())
    names = getattr(tokenizer, "model_input_names", None) or []
    settings = (
        type(tokenizer).__name__,
        max_length,
        tokenizer.pad_token_id,
        getattr(tokenizer, "padding_side", "right"),
        getattr(tokenizer, "truncation_side", "right"),
        tuple(names),
    )
    digest.update(repr(settings).encode())
    return digest.hexdigest()


def _dtype_keyword() -> str:
    # transformers 4.56 renamed `torch_dtype` to `dtype`; 5.x warns on the old name.
    version = metadata.version("transformers")
    major, minor = (int(part) for part in version.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def load_model_runner(
    path: Path,
    *,
    transform: str | None,
    device: str = "auto",
    dtype: str = "auto",
    max_length: int = 256,
    allow_pickle: bool = False,
    compile: bool = False,
) -> ModelRunner:
    """Load a checkpoint folder as a `ModelRunner`, after `inspect_checkpoint` accepts it.

    Loads with `trust_remote_code=False`, local files only, safetensors only (unless
    `allow_pickle`), then puts the model in eval mode on the chosen device, computing in
    `dtype` (`"auto"`: bfloat16 on CUDA, float32 on CPU; float32 on CUDA may use TF32
    matmuls).

    Transforms (see `apply_transform`): `float16` and `bfloat16` set the compute dtype
    themselves, whatever `dtype` says. `int8-weight` casts the model to `dtype` first and
    then quantizes its linear layers' weights. `int8-dynamic` quantized kernels exist only
    for CPU, so **that runner always runs on CPU in float32**, whatever `device` and `dtype`
    say (the other runner of an audit may still use the GPU).

    `compile`: forwards run through `torch.compile` (TorchInductor; see `compiles`), compiled
    at the first forward or `ModelRunner.warm_up`, which then takes tens of seconds; on the
    CPU it needs a C++ compiler.

    Raises `CheckpointError` subclasses for a refused or unloadable folder, `ConfigError` for
    an unknown transform or dtype or an unavailable device.
    """
    if transform is not None and transform not in TRANSFORMS:
        raise ConfigError(f"unknown transform {transform!r}; known transforms are {TRANSFORMS}")
    info = inspect_checkpoint(path, allow_pickle=allow_pickle)
    target, compute_dtype = _placement(transform, device=device, dtype=dtype)
    tokenizer, model = _load_pretrained(path, allow_pickle=allow_pickle)
    _ensure_pad_token(tokenizer, model, path)
    model.eval()
    num_parameters = sum(parameter.numel() for parameter in model.parameters())
    model = _transformed(model, transform, compute_dtype).to(target)
    effective_max_length = _effective_max_length(max_length, model, tokenizer)
    return ModelRunner(
        path=path,
        model=model,
        tokenizer=tokenizer,
        labels=list(info.labels),
        device=target,
        transform=transform,
        max_length=effective_max_length,
        num_parameters=num_parameters,
        info=info,
        dtype=compute_dtype,
        tokenizer_key=_tokenizer_key(info, tokenizer, effective_max_length),
        compiled=compiles(transform, compile),
    )


def _placement(
    transform: str | None, *, device: str, dtype: str
) -> tuple[torch.device, torch.dtype]:
    """The device and compute dtype of a runner (see `load_model_runner`); float32 on CUDA
    allows TF32 matmuls."""
    target = torch.device("cpu") if transform == "int8-dynamic" else resolve_device(device)
    compute_dtype = resolve_dtype(dtype, target)
    if transform == "int8-dynamic":
        compute_dtype = torch.float32
    elif transform in TORCH_DTYPES:
        compute_dtype = TORCH_DTYPES[transform]
    if target.type == "cuda" and compute_dtype == torch.float32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return target, compute_dtype


def _transformed(model: nn.Module, transform: str | None, compute_dtype: torch.dtype) -> nn.Module:
    """The float32 `model` computing in `compute_dtype`, `transform` applied (`int8-weight`
    quantizes the already cast weights)."""
    if transform == "int8-weight" and compute_dtype != torch.float32:
        model = model.to(compute_dtype)
    if transform is not None:
        return apply_transform(model, transform)
    if compute_dtype != torch.float32:
        return model.to(compute_dtype)
    return model


class _ProgressBarsSilenced:
    """Owner of transformers' global progress-bar switch while checkpoints load.

    transformers 5 draws a "Loading weights" bar per model; on a worker's or the CLI's stderr
    it only buries real progress. The switch is process-wide, so loads on several threads at
    once must not each save and restore it: the first to enter (under the lock) saves the
    setting and turns bars off, the last to leave puts the saved setting back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._were_enabled = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        from transformers.utils import logging as transformers_logging

        with self._lock:
            if self._holders == 0:
                self._were_enabled = transformers_logging.is_progress_bar_enabled()
                transformers_logging.disable_progress_bar()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._were_enabled:
                    transformers_logging.enable_progress_bar()


progress_bars_silenced = _ProgressBarsSilenced()


def _load_pretrained(path: Path, *, allow_pickle: bool) -> tuple[Any, Any]:
    """Tokenizer and model of a checkpoint folder; `CheckpointError` when they will not load."""
    from safetensors import SafetensorError
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        with progress_bars_silenced():
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
    return tokenizer, model


def _ensure_pad_token(tokenizer: Any, model: Any, path: Path) -> None:
    if tokenizer.pad_token_id is not None:
        return
    # Decoder-style classifiers (GPT-2, Llama) ship no pad token; their end-of-text token is
    # the conventional stand-in, and the attention mask hides it anyway.
    if tokenizer.eos_token is None:
        raise CheckpointError(f"tokenizer of {str(path)!r} has neither a pad nor an eos token")
    tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id


@dataclass
class EvaluatorStats:
    """Counters of a `BatchingEvaluator`, cumulative over its calls.

    `requested_inputs` counts every input asked for; `deduplicated_inputs` those that repeated
    another input of the same call; `cache_hits` distinct inputs answered from the cache;
    `unique_inputs_forwarded` distinct inputs that reached the models; `tokenizations` inputs
    tokenized (once per distinct tokenizer, not per runner); `batches` forward passes (all
    runners); `real_tokens` and `padded_tokens` the tokens those passes carried without and
    with padding (summed over runners, so `padded / real − 1` is the padding overhead);
    `forward_seconds` time in tokenization, forward passes and the copy back, of which
    `tokenize_seconds` in tokenization.
    """

    calls: int = 0
    requested_inputs: int = 0
    deduplicated_inputs: int = 0
    cache_hits: int = 0
    unique_inputs_forwarded: int = 0
    tokenizations: int = 0
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    forward_seconds: float = 0.0
    tokenize_seconds: float = 0.0

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
    (`cache_size` distinct inputs; 0 disables it), tokenizes the rest once per distinct
    tokenizer (`ModelRunner.tokenizer_key`), sorts them by token length once and cuts them
    into length-homogeneous batches (`plan_batches`), and runs every runner sharing that
    tokenizer on the same padded batches under `torch.inference_mode()`. The same runner
    object passed twice is run once. Results equal one-at-a-time evaluation up to float
    rounding (padding is masked).

    Batches are bounded by a token budget (`token_budget`, default 4096 tokens on CPU and
    65536 on CUDA) and a row cap (`batch_size` on CPU, `gpu_batch_size` on CUDA, default
    16 × `batch_size`), and close early at a width jump (`batch_overhead_tokens`, default 64
    on CPU and 4096 on CUDA: what one forward pass costs, in tokens). On CUDA, inputs go from
    pinned memory with non-blocking copies and results stay on the device until the call's
    end: one synchronisation per call, and the host pads the next batch while the device
    runs the previous one. `should_cancel` is checked before every batch and raises
    `AuditCancelledError` once it answers true.

    Thread-safe: one lock serializes calls, so concurrent explainers share the cache and
    never interleave half-built batches.
    """

    def __init__(
        self,
        runners: Sequence[ModelRunner],
        *,
        column_orders: Sequence[Sequence[int]] | None = None,
        batch_size: int = 64,
        gpu_batch_size: int | None = None,
        token_budget: int | None = None,
        batch_overhead_tokens: int | None = None,
        cache_size: int = 200_000,
        should_cancel: Callable[[], bool] | None = None,
    ) -> None:
        if not runners:
            raise ValueError("BatchingEvaluator needs at least one runner")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if gpu_batch_size is not None and gpu_batch_size < 1:
            raise ValueError(f"gpu_batch_size must be >= 1, got {gpu_batch_size}")
        if token_budget is not None and token_budget < 1:
            raise ValueError(f"token_budget must be >= 1, got {token_budget}")
        if batch_overhead_tokens is not None and batch_overhead_tokens < 0:
            raise ValueError(f"batch_overhead_tokens must be >= 0, got {batch_overhead_tokens}")
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
        self.gpu_batch_size = gpu_batch_size or 16 * batch_size
        self.token_budget = token_budget
        self.batch_overhead_tokens = batch_overhead_tokens
        self.cache_size = cache_size
        self.should_cancel = should_cancel
        self.stats = EvaluatorStats()
        self._cache: OrderedDict[TextInput, NDArray] = OrderedDict()
        self._lock = threading.Lock()
        # Distinct runners grouped by (tokenizer, device type): one tokenization, one batch
        # plan and one padded batch per group.
        distinct = list({id(runner): runner for runner in self.runners}.values())
        self._runner_groups: dict[tuple[str, str], list[ModelRunner]] = {}
        for runner in distinct:
            key = (runner.tokenizer_key or f"runner-{id(runner)}", runner.device.type)
            self._runner_groups.setdefault(key, []).append(runner)

    def predict_proba(
        self, inputs: Sequence[TextInput], *, runners: Sequence[int] | None = None
    ) -> list[NDArray]:
        """One (n, K) float64 array per runner, in runner order, reference label columns.

        `runners` selects runner indices (in the order given) and only those are forwarded:
        the noise floor's re-run needs the reference alone. A cached input lacking a selected
        runner's row is forwarded for the missing runners only; rows already cached are kept.
        """
        keys = [_check_input(value) for value in inputs]
        selected = list(range(len(self.runners))) if runners is None else list(runners)
        for index in selected:
            if not 0 <= index < len(self.runners):
                raise ValueError(f"runner index {index} out of range for {len(self.runners)}")
        with self._lock:
            self.stats.calls += 1
            self.stats.requested_inputs += len(keys)
            unique = list(dict.fromkeys(keys))
            self.stats.deduplicated_inputs += len(keys) - len(unique)
            # (u, R, K): every distinct input's row for every runner; NaN where not computed.
            table = np.full((len(unique), len(self.runners), self.n_classes), np.nan)
            missing: list[int] = []
            for position, key in enumerate(unique):
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
                    table[position] = cached
                if cached is None or np.isnan(cached[selected, 0]).any():
                    missing.append(position)
            self.stats.cache_hits += len(unique) - len(missing)
            if missing:
                wanted = [index for index in selected if np.isnan(table[missing, index, 0]).any()]
                computed = self._forward([unique[position] for position in missing], wanted)
                known = ~np.isnan(table[missing])
                table[missing] = np.where(known, table[missing], computed)
                self.stats.unique_inputs_forwarded += len(missing)
                self._remember([unique[position] for position in missing], table[missing])
            positions = {key: position for position, key in enumerate(unique)}
            rows = np.fromiter((positions[key] for key in keys), dtype=np.intp, count=len(keys))
            return [table[rows, index, :] for index in selected]

    def with_runners(self, indices: Sequence[int]) -> BatchingEvaluator:
        """A fresh evaluator (empty cache, zeroed stats) over the runners at `indices`, in
        that order, with their column orders and every batching, cache and cancellation
        setting of this one."""
        return BatchingEvaluator(
            [self.runners[index] for index in indices],
            column_orders=[self.column_orders[index] for index in indices],
            batch_size=self.batch_size,
            gpu_batch_size=self.gpu_batch_size,
            token_budget=self.token_budget,
            batch_overhead_tokens=self.batch_overhead_tokens,
            cache_size=self.cache_size,
            should_cancel=self.should_cancel,
        )

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

    def _plan(self, lengths: NDArray[np.int64], device_type: str) -> list[NDArray[np.intp]]:
        cuda = device_type == "cuda"
        return plan_batches(
            lengths,
            token_budget=self.token_budget or TOKEN_BUDGET["cuda" if cuda else "cpu"],
            max_rows=self.gpu_batch_size if cuda else self.batch_size,
            batch_overhead_tokens=(
                self.batch_overhead_tokens
                if self.batch_overhead_tokens is not None
                else BATCH_OVERHEAD_TOKENS["cuda" if cuda else "cpu"]
            ),
        )

    def _forward(self, inputs: list[TextInput], selected: Sequence[int]) -> NDArray:
        """(len(inputs), R, K) probabilities of inputs that are not cached; only the runners
        at indices `selected` are run, the others' rows are NaN."""
        wanted_ids = {id(self.runners[index]) for index in selected}
        started = time.perf_counter()
        # Strings and sentence pairs tokenize through different calls; keep them apart.
        kinds = [
            np.array([i for i, value in enumerate(inputs) if isinstance(value, str)], np.intp),
            np.array([i for i, value in enumerate(inputs) if isinstance(value, tuple)], np.intp),
        ]
        # Per distinct runner: (input rows, probabilities still on the device) per batch.
        parts: dict[int, list[tuple[NDArray[np.intp], torch.Tensor]]] = {}
        with torch.inference_mode():
            for rows_of_kind in (kind for kind in kinds if len(kind)):
                texts = [inputs[i] for i in rows_of_kind]
                for (_, device_type), group in self._runner_groups.items():
                    wanted = [runner for runner in group if id(runner) in wanted_ids]
                    if wanted:
                        self._forward_group(wanted, device_type, texts, rows_of_kind, parts)
            # The one synchronisation of this call: every result comes back to the host here.
            done = {
                runner_id: (
                    np.concatenate([rows for rows, _ in batches]),
                    torch.cat([proba for _, proba in batches]).cpu().numpy(),
                )
                for runner_id, batches in parts.items()
            }
        output = np.full((len(inputs), len(self.runners), self.n_classes), np.nan)
        for runner_index, runner in enumerate(self.runners):
            if id(runner) not in done:
                continue
            rows, proba = done[id(runner)]
            output[rows, runner_index, :] = proba[:, self.column_orders[runner_index]]
        self.stats.forward_seconds += time.perf_counter() - started
        return output

    def _forward_group(
        self,
        group: list[ModelRunner],
        device_type: str,
        texts: list[TextInput],
        input_rows: NDArray[np.intp],
        parts: dict[int, list[tuple[NDArray[np.intp], torch.Tensor]]],
    ) -> None:
        """Tokenize `texts` once, plan batches once, run each runner of `group` on each."""
        started = time.perf_counter()
        encodings = group[0].tokenize(texts)
        self.stats.tokenize_seconds += time.perf_counter() - started
        self.stats.tokenizations += len(texts)
        lengths = np.fromiter(
            (len(ids) for ids in encodings["input_ids"]), dtype=np.int64, count=len(texts)
        )
        for rows in self._plan(lengths, device_type):
            if self.should_cancel is not None and self.should_cancel():
                raise AuditCancelledError("cancelled while predicting")
            batch = pad_batch(
                encodings,
                rows.tolist(),
                pad_token_id=group[0].pad_token_id,
                padding_side=group[0].padding_side,
            )
            on_device: dict[torch.device, dict[str, torch.Tensor]] = {}
            for runner in group:
                if runner.device not in on_device:
                    on_device[runner.device] = runner.to_device(batch)
                proba = runner.forward_tensors(on_device[runner.device])
                parts.setdefault(id(runner), []).append((input_rows[rows], proba))
                self.stats.batches += 1
                self.stats.real_tokens += int(lengths[rows].sum())
                self.stats.padded_tokens += int(batch["input_ids"].size)
