"""Tokenize inputs as a transformers tokenizer call does, straight through its Rust backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trustdiff.datasets import TextInput

# Model input name -> the `tokenizers.Encoding` attribute transformers reads it from
# (`_convert_encoding`). Any other name is not reproduced and makes the runner fall back.
ENCODING_ATTRIBUTES = {
    "input_ids": "ids",
    "token_type_ids": "type_ids",
    "attention_mask": "attention_mask",
}

# The methods a fast tokenizer's `__call__` runs through, in transformers 4.50+ and 5.x
# (only those the installed base class defines are checked). A class that overrides any of
# them may do something the Rust backend alone does not (LayoutLM's boxes, Marian's language
# codes), so it is not reproduced.
_CALL_PATH_METHODS = (
    "__call__",
    "_call_one",
    "encode_plus",
    "batch_encode_plus",
    "_encode_plus",
    "_batch_encode_plus",
    "_get_padding_truncation_strategies",
    "set_truncation_and_padding",
    "_convert_encoding",
)


def tokenize_with_transformers(
    tokenizer: Any, inputs: Sequence[TextInput], *, max_length: int
) -> dict[str, list[list[int]]]:
    """Unpadded model inputs of `inputs` (all strings or all (text, text pair) tuples) from
    the tokenizer's own call, truncated to `max_length`, keyed by `model_input_names`.

    The reference `FastEncoder` must equal, and the fallback for tokenizers it refuses.
    """
    if inputs and isinstance(inputs[0], tuple):
        firsts = [pair[0] for pair in inputs]
        seconds = [pair[1] for pair in inputs]
        encoded = tokenizer(firsts, seconds, truncation=True, max_length=max_length, padding=False)
    else:
        encoded = tokenizer(list(inputs), truncation=True, max_length=max_length, padding=False)
    names = getattr(tokenizer, "model_input_names", None) or list(encoded.keys())
    return {name: encoded[name] for name in names if name in encoded}


def call_settings(tokenizer: Any, max_length: int) -> tuple[object, ...]:
    """What the tokenizer's call reads from the Python object on every call, besides its
    backend: a `FastEncoder` built for other settings no longer reproduces the call."""
    return (
        max_length,
        getattr(tokenizer, "truncation_side", None),
        getattr(tokenizer, "split_special_tokens", None),
        tuple(getattr(tokenizer, "model_input_names", None) or ()),
    )


def fast_path_refusal(tokenizer: Any) -> str | None:
    """Why `FastEncoder` would not reproduce `tokenize_with_transformers` for `tokenizer`,
    or None when it does. Conservative: anything not known to be reproduced refuses."""
    from transformers import PreTrainedTokenizerFast

    if not isinstance(tokenizer, PreTrainedTokenizerFast) or not getattr(
        tokenizer, "is_fast", False
    ):
        return f"{type(tokenizer).__name__} is not a fast (Rust-backed) tokenizer"
    for name in _CALL_PATH_METHODS:
        base = getattr(PreTrainedTokenizerFast, name, None)
        if base is not None and getattr(type(tokenizer), name, None) is not base:
            return f"{type(tokenizer).__name__} overrides {name}"
    if hasattr(tokenizer, "_switch_to_input_mode") or hasattr(tokenizer, "_switch_to_target_mode"):
        # its call re-points the backend's special tokens (source/target language) first
        return f"{type(tokenizer).__name__} switches input and target modes"
    names = getattr(tokenizer, "model_input_names", None)
    if not names:
        return "the tokenizer names no model inputs"
    unknown = [name for name in names if name not in ENCODING_ATTRIBUTES]
    if unknown:
        return f"model inputs {unknown} have no tokenizers.Encoding counterpart"
    if tokenizer.truncation_side not in ("right", "left"):
        return f"unknown truncation side {tokenizer.truncation_side!r}"
    if not isinstance(tokenizer.split_special_tokens, bool):
        return f"split_special_tokens is {tokenizer.split_special_tokens!r}, not a bool"
    return None


class FastEncoder:
    """`tokenize_with_transformers(tokenizer, inputs, max_length=max_length)` without the
    per-input Python wrapping of transformers: a private copy of the tokenizer's Rust backend,
    set up once as that call sets up the original, encodes whole batches.

    The call sets up its backend as: truncation `longest_first` to `max_length`, stride 0,
    direction `truncation_side`; no padding; special tokens split iff `split_special_tokens`;
    special tokens added. Encodings give `ids`, `type_ids` and `attention_mask` for
    `input_ids`, `token_type_ids` and `attention_mask`, keyed in `model_input_names` order.

    The copy is a snapshot of the backend when built (transformers' own calls on the original
    never reach it, nor it theirs); `settings` are the `call_settings` it reproduces. Build it
    with `build_fast_encoder`, which refuses what it cannot reproduce. Once built it is never
    reconfigured, so concurrent calls are safe.
    """

    def __init__(self, tokenizer: Any, *, max_length: int) -> None:
        refusal = fast_path_refusal(tokenizer)
        if refusal is not None:
            raise ValueError(refusal)
        from tokenizers import Tokenizer

        serialized = tokenizer.backend_tokenizer.to_str()
        backend = Tokenizer.from_str(serialized)
        if backend.to_str() != serialized:
            raise ValueError("the tokenizer's backend does not survive a copy unchanged")
        backend.enable_truncation(
            max_length, stride=0, strategy="longest_first", direction=tokenizer.truncation_side
        )
        backend.no_padding()
        backend.encode_special_tokens = tokenizer.split_special_tokens
        self.backend = backend
        self.settings = call_settings(tokenizer, max_length)
        names = dict.fromkeys(tokenizer.model_input_names)
        self.fields = [(name, ENCODING_ATTRIBUTES[name]) for name in names]
        # `encode_batch_fast` (tokenizers 0.21+) skips the character offsets nobody reads here.
        self._encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)

    def __call__(self, inputs: Sequence[TextInput]) -> dict[str, list[list[int]]]:
        """Unpadded model inputs of `inputs`, all strings or all (text, text pair) tuples."""
        if inputs and isinstance(inputs[0], tuple):
            batch: list[Any] = [(pair[0], pair[1]) for pair in inputs]
        else:
            batch = list(inputs)
        encodings = self._encode_batch(batch, add_special_tokens=True)
        return {
            name: [getattr(encoding, attribute) for encoding in encodings]
            for name, attribute in self.fields
        }


def build_fast_encoder(tokenizer: Any, *, max_length: int) -> FastEncoder | None:
    """A `FastEncoder` for `tokenizer`, or None where it would not reproduce the tokenizer's
    call: `fast_path_refusal` names a reason, or the backend cannot be copied unchanged."""
    if fast_path_refusal(tokenizer) is not None:
        return None
    try:
        return FastEncoder(tokenizer, max_length=max_length)
    except Exception:
        # tokenizers raises plain `Exception` for a backend it cannot serialize (a custom
        # Python component); such a tokenizer is left to its own call.
        return None
