"""Tokenize inputs as a transformers tokenizer call does, straight through its Rust backend,
or from the tokens of their words where that gives the same."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


# Pipeline components that tokenize words joined by single spaces word by word: normalizers
# that map characters (or collapse runs of spaces, which joined words never have), pre-
# tokenizers that split at whitespace and never join across it, and models that see one
# pre-token at a time. `word_assembly_refusal` reads the backend's JSON against them.
_WORD_LOCAL_NORMALIZERS = frozenset(
    {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents", "Nmt"}
)
_WHITESPACE_SPLITTERS = frozenset(
    {"BertPreTokenizer", "Whitespace", "WhitespaceSplit", "ByteLevel", "Metaspace"}
)
_WORD_LOCAL_PRE_TOKENIZERS = _WHITESPACE_SPLITTERS | {"Punctuation", "Digits"}
_WORD_LOCAL_MODELS = frozenset({"WordPiece", "BPE", "Unigram", "WordLevel"})
_POST_PROCESSORS = frozenset(
    {"TemplateProcessing", "BertProcessing", "RobertaProcessing", "ByteLevel"}
)
# A `WordAssembler` forgets the words it learnt when it holds more (about 100 MB of them).
MAX_LEARNT_WORDS = 500_000
# Words the template is read from and checked on; short, common, and in every vocabulary's
# alphabet or its unknown token.
_PROBE_WORDS = ("a", "the", "is", "1")


def _components(node: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
    """A normalizer, pre-tokenizer or post-processor and, for a `Sequence`, its members."""
    if node is None:
        return []
    if node.get("type") == "Sequence":
        return [member for child in node[key] for member in _components(child, key)]
    return [node]


def word_assembly_refusal(backend_json: str) -> str | None:
    """Why a tokenizers backend (its `to_str()`) may not tokenize space-joined words word by
    word, or None when it may: every component is word-local (see `_WORD_LOCAL_*`), and no
    added token reaches across a space (one holding whitespace, or stripping the space after
    it: `rstrip`)."""
    import json

    document = json.loads(backend_json)
    for normalizer in _components(document.get("normalizer"), "normalizers"):
        kind = normalizer.get("type")
        collapse = (
            kind == "Replace"
            and normalizer.get("pattern") == {"Regex": " {2,}"}
            and normalizer.get("content") == " "
        )
        if kind not in _WORD_LOCAL_NORMALIZERS and not collapse:
            return f"normalizer {kind} is not known to act within words"
    pre_tokenizers = _components(document.get("pre_tokenizer"), "pretokenizers")
    for pre_tokenizer in pre_tokenizers:
        kind = pre_tokenizer.get("type")
        if kind not in _WORD_LOCAL_PRE_TOKENIZERS:
            return f"pre-tokenizer {kind} is not known to split at whitespace"
        if kind == "ByteLevel" and not pre_tokenizer.get("use_regex", True):
            return "ByteLevel without its regex does not split at whitespace"
        if kind == "Metaspace" and not pre_tokenizer.get("split", True):
            return "Metaspace without split does not split at whitespace"
    if not any(
        pre_tokenizer.get("type") in _WHITESPACE_SPLITTERS for pre_tokenizer in pre_tokenizers
    ):
        return "no pre-tokenizer splits at whitespace"
    model = document.get("model") or {}
    if model.get("type") not in _WORD_LOCAL_MODELS:
        return f"model {model.get('type')} is not known to tokenize pre-tokens alone"
    if model.get("dropout"):
        return "BPE dropout makes tokenization random"
    for post_processor in _components(document.get("post_processor"), "processors"):
        if post_processor.get("type") not in _POST_PROCESSORS:
            kind = post_processor.get("type")
            return f"post-processor {kind} is not known to add tokens around segments only"
    for token in document.get("added_tokens") or []:
        content = token.get("content", "")
        if token.get("rstrip") or any(character.isspace() for character in content):
            return f"added token {content!r} reaches across a space"
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
    reconfigured, so concurrent calls are safe. Where the backend tokenizes word by word, its
    `assembler` puts inputs together from each word's tokens, to the same lists.
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
        # Why the words of an input are not assembled from each word's tokens, or None.
        self.assembly_refusal = word_assembly_refusal(serialized)
        self.assembler: WordAssembler | None = None
        if self.assembly_refusal is None:
            try:
                self.assembler = WordAssembler(backend, max_length=max_length, encode=self._encode)
            except ValueError as error:
                self.assembly_refusal = str(error)

    def __call__(self, inputs: Sequence[TextInput]) -> dict[str, list[list[int]]]:
        """Unpadded model inputs of `inputs`, all strings or all (text, text pair) tuples."""
        if inputs and isinstance(inputs[0], tuple):
            batch: list[Any] = [(pair[0], pair[1]) for pair in inputs]
        else:
            batch = list(inputs)
        if self.assembler is None:
            encodings = self._encode(batch)
            return {
                name: [getattr(encoding, attribute) for encoding in encodings]
                for name, attribute in self.fields
            }
        ids, types = self.assembler(batch)
        columns = {
            "ids": ids,
            "type_ids": types,
            "attention_mask": [[1] * len(row) for row in ids],
        }
        return {name: columns[attribute] for name, attribute in self.fields}

    def _encode(self, batch: list[Any]) -> list[Any]:
        """The backend's encodings of `batch`, special tokens added."""
        return self._encode_batch(batch, add_special_tokens=True)


@dataclass(frozen=True)
class _Template:
    """Where a post-processor puts its special tokens around one or two segments' tokens:
    `prefix`, segment 0, `middle`, segment 1, `suffix`, each with its token type ids."""

    prefix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    middle: tuple[int, ...]
    middle_types: tuple[int, ...]
    suffix: tuple[int, ...]
    suffix_types: tuple[int, ...]
    segment_types: tuple[int, ...]


class WordAssembler:
    """A `FastEncoder`'s output for inputs whose segments are words joined by single spaces,
    assembled from each distinct word's token ids instead of tokenizing every input again:
    what an explainer sends is the same few words, kept or dropped, thousands of times.

    Exact where it applies, and it applies only where that is known: the backend tokenizes
    space-joined words word by word (`word_assembly_refusal`); a word is assembled when the
    normalizer leaves it non-empty and free of whitespace (no space can appear or vanish at
    its edges), from its tokens as the first word of a segment and, for the others, of the
    word after a space (byte-level BPE's and SentencePiece's leading-space tokens); the
    special tokens and type ids around the segments are read from the backend's own
    encodings of probe words and checked on probe inputs before use. Anything else — a word
    that does not qualify, an empty word (two spaces in a row), an input longer than
    `max_length`, which the backend would truncate — is encoded by `encode`, the backend's
    own call, so every row equals it.
    """

    def __init__(
        self, backend: Any, *, max_length: int, encode: Callable[[list[Any]], list[Any]]
    ) -> None:
        from tokenizers import Tokenizer

        words = Tokenizer.from_str(backend.to_str())
        words.no_truncation()
        words.no_padding()
        words.encode_special_tokens = backend.encode_special_tokens
        self._normalizer = words.normalizer
        self._encode_words = getattr(words, "encode_batch_fast", words.encode_batch)
        self._encode = encode
        self.max_length = max_length
        # word -> (its token ids first in a segment, after a space), or None: not assembled.
        self._pieces: dict[str, tuple[list[int], list[int]] | None] = {}
        self._templates = self._read_templates()

    def __call__(self, batch: list[Any]) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids and type ids of `batch`: all strings or all (text, text pair) tuples."""
        is_pair = bool(batch) and isinstance(batch[0], tuple)
        template = self._templates[1 if is_pair else 0]
        values = batch if is_pair else [(value,) for value in batch]
        # Words are split again per input below rather than kept: fewer live lists for the
        # cyclic garbage collector to walk again and again.
        self._learn({word for value in values for segment in value for word in segment.split(" ")})
        ids: list[list[int]] = []
        types: list[list[int]] = []
        missing: list[int] = []
        for position, value in enumerate(values):
            assembled = self._assemble(value, template)
            if assembled is None:
                missing.append(position)
                assembled = ([], [])
            ids.append(assembled[0])
            types.append(assembled[1])
        if missing:
            for position, encoding in zip(
                missing, self._encode([batch[position] for position in missing]), strict=True
            ):
                ids[position] = encoding.ids
                types[position] = encoding.type_ids
        return ids, types

    def _assemble(
        self, segments: tuple[str, ...], template: _Template
    ) -> tuple[list[int], list[int]] | None:
        """One input's ids and type ids from its segments' words, or None: not assembled."""
        pieces = self._pieces
        ids = list(template.prefix)
        types = list(template.prefix_types)
        for index, segment in enumerate(segments):
            if index:
                ids += template.middle
                types += template.middle_types
            start = len(ids)
            if segment:
                words = segment.split(" ")
                piece = pieces.get(words[0])
                if piece is None:
                    return None
                ids += piece[0]
                for word in words[1:]:
                    piece = pieces.get(word)
                    if piece is None:
                        return None
                    ids += piece[1]
            types += [template.segment_types[index]] * (len(ids) - start)
        ids += template.suffix
        types += template.suffix_types
        if len(ids) > self.max_length:
            return None
        return ids, types

    def _learn(self, words: set[str]) -> None:
        """Tokenize the words not seen before, both forms of each in one backend call."""
        if len(self._pieces) + len(words) > MAX_LEARNT_WORDS:
            self._pieces = {}
        new = [word for word in words if word not in self._pieces]
        qualified = [word for word in new if self._qualifies(word)]
        encodings = self._encode_words(
            [form for word in qualified for form in (word, " " + word)], add_special_tokens=False
        )
        # Each entry is written once, whole: a concurrent call reads a word as learnt or not.
        learnt = {
            word: (encodings[2 * index].ids, encodings[2 * index + 1].ids)
            for index, word in enumerate(qualified)
        }
        for word in new:
            self._pieces[word] = learnt.get(word)

    def _qualifies(self, word: str) -> bool:
        if not word or any(character.isspace() for character in word):
            return False
        normalized = word if self._normalizer is None else self._normalizer.normalize_str(word)
        return bool(normalized) and not any(character.isspace() for character in normalized)

    def _read_templates(self) -> tuple[_Template, _Template]:
        """The single-segment and pair templates, read from the backend's encodings of a
        probe word and checked on probe inputs; ValueError when they cannot be read or do
        not reproduce the backend."""
        self._learn(set(_PROBE_WORDS))
        learnt = [(word, self._pieces[word]) for word in _PROBE_WORDS]
        probe, tokens = next(
            ((word, piece[0]) for word, piece in learnt if piece and piece[0]), ("", [])
        )
        if not probe:
            raise ValueError("no probe word can be assembled")
        single, pair = self._encode([probe])[0], self._encode([(probe, probe)])[0]
        templates = (_split_template(single, tokens, 1), _split_template(pair, tokens, 2))
        checks: list[Any] = ["", " ".join(_PROBE_WORDS), "the a", probe]
        checks += [("", ""), (probe, ""), ("", "is 1 a"), ("a the", "1 is the a")]
        for value in checks:
            encoding = self._encode([value])[0]
            is_pair = isinstance(value, tuple)
            assembled = self._assemble(
                value if is_pair else (value,), templates[1 if is_pair else 0]
            )
            if len(encoding.ids) < self.max_length and assembled != (
                encoding.ids,
                encoding.type_ids,
            ):
                raise ValueError(f"assembling {value!r} does not reproduce the tokenizer")
        return templates


def _split_template(encoding: Any, tokens: list[int], segments: int) -> _Template:
    """The template around `segments` copies of `tokens` in `encoding` (ids and type ids)."""
    ids, types = list(encoding.ids), list(encoding.type_ids)
    width = len(tokens)
    starts = [
        start for start in range(len(ids) - width + 1) if ids[start : start + width] == tokens
    ]
    if len(starts) < segments:
        raise ValueError("the probe's tokens are not in its encoding (truncated?)")
    first, last = starts[0], starts[-1]
    if segments == 2 and last < first + width:
        raise ValueError("the probe's tokens overlap in the pair's encoding")
    places = [first] if segments == 1 else [first, last]
    segment_types = []
    for start in places:
        region = set(types[start : start + width])
        if len(region) != 1:
            raise ValueError("a segment's tokens carry several type ids")
        segment_types.append(region.pop())
    end = places[-1] + width
    middle = slice(first + width, last) if segments == 2 else slice(0, 0)
    return _Template(
        prefix=tuple(ids[:first]),
        prefix_types=tuple(types[:first]),
        middle=tuple(ids[middle]),
        middle_types=tuple(types[middle]),
        suffix=tuple(ids[end:]),
        suffix_types=tuple(types[end:]),
        segment_types=tuple(segment_types),
    )


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
