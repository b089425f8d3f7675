"""The Rust-direct tokenization path equals the transformers call, list for list, on real
tokenizers of three kinds built offline, and falls back where it cannot reproduce it."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TinyAssets
from tests.tiny_models import VOCABULARY
from trustdiff.inference import ModelRunner, load_model_runner
from trustdiff.tokenization import (
    FastEncoder,
    build_fast_encoder,
    fast_path_refusal,
    tokenize_with_transformers,
)

MAX_LENGTH = 16
CORPUS = [
    "The movie was really good, and the acting was great!",
    "Naïve café owners don't serve crème brûlée; they serve jalapeño soup.",
    "Straße, Ångström, façade — résumé… ¿Qué pasa? ¡Olé!",
    "東京 is big; 😀 emoji and ümlauts: Über, Ärger, Öl.",
    "A terrible, boring film: the plot was dull (very dull) & the music awful.",
    "Tokenizers split words into pieces: un-believ-able, re-do, pre-trained.",
    "the story and the cast were wonderful; I love this ending.",
    "Numbers 12345 and 3.14159 and $100 and 50% off.",
] * 4
LONG = " ".join(CORPUS[:5])
STRINGS = [
    "the movie was good",
    "",
    "   ",
    LONG,
    "Naïve café — crème brûlée!",
    "東京 😀 Über… ¿Qué?",
    "good, bad; great: awful!!!",
    "THE MOVIE WAS GOOD",
]
PAIRS = [
    ("the movie was good", "it was great"),
    (LONG, "short hypothesis"),  # only the first side exceeds max_length
    ("short premise", LONG),  # only the second side
    (LONG, LONG),  # both: longest_first trims them in turn
    ("", ""),
    ("", "only a hypothesis"),
    ("only a premise", ""),
    ("Naïve café — crème brûlée!", "東京 😀 Über… ¿Qué?"),
]
SPECIAL_TOKENS = ["<pad>", "<unk>", "[CLS]", "[SEP]"]


def wordpiece(tmp: Path) -> Any:
    """A WordPiece tokenizer (BERT's normalizer: lowercase, strip accents) trained here."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    trainer = BertWordPieceTokenizer(lowercase=True, strip_accents=True)
    trainer.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1)
    trainer.save_model(str(tmp))
    return BertTokenizerFast.from_pretrained(str(tmp))


def byte_level_bpe(tmp: Path) -> Any:
    """RoBERTa's byte-level BPE (leading-space tokens, `<s> A </s></s> B </s>`), trained here."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        CORPUS,
        vocab_size=400,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    trainer.save_model(str(tmp))
    return RobertaTokenizerFast.from_pretrained(str(tmp))


def unigram(tmp: Path) -> Any:
    """A SentencePiece-style Unigram model with the Metaspace pre-tokenizer, trained here, with
    ALBERT's template (`[CLS] A [SEP] B [SEP]`, second segment type 1)."""
    from tokenizers import SentencePieceUnigramTokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    trainer = SentencePieceUnigramTokenizer()
    trainer.train_from_iterator(
        CORPUS, vocab_size=200, special_tokens=SPECIAL_TOKENS, unk_token="<unk>"
    )
    backend = trainer._tokenizer
    backend.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[
            ("[CLS]", backend.token_to_id("[CLS]")),
            ("[SEP]", backend.token_to_id("[SEP]")),
        ],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        pad_token="<pad>",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


BUILDERS: dict[str, Callable[[Path], Any]] = {
    "wordpiece": wordpiece,
    "byte-level-bpe": byte_level_bpe,
    "unigram-metaspace": unigram,
}


@pytest.fixture(scope="module", params=list(BUILDERS))
def tokenizer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import transformers

    if request.param == "byte-level-bpe" and int(transformers.__version__.split(".")[0]) < 5:
        # There RobertaTokenizerFast overrides _batch_encode_plus, so it is refused and
        # tokenized by its own call (fast_path_refusal).
        pytest.skip("transformers 4's byte-level BPE classes are left to their own call")
    return BUILDERS[request.param](tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def runner(tiny_assets: TinyAssets) -> ModelRunner:
    return load_model_runner(tiny_assets.reference, transform=None, device="cpu")


def assert_same(fast: dict[str, list[list[int]]], plain: dict[str, list[list[int]]]) -> None:
    assert list(fast) == list(plain)  # same keys, same order
    for name in plain:
        assert fast[name] == plain[name], name
        assert all(type(value) is int for row in fast[name] for value in row)


def encoder_for(tokenizer: Any, max_length: int = MAX_LENGTH) -> FastEncoder:
    encoder = build_fast_encoder(tokenizer, max_length=max_length)
    assert encoder is not None, fast_path_refusal(tokenizer)
    return encoder


@pytest.mark.parametrize("inputs", [STRINGS, PAIRS], ids=["strings", "pairs"])
def test_fast_path_equals_the_transformers_call(tokenizer: Any, inputs: list) -> None:
    plain = tokenize_with_transformers(tokenizer, inputs, max_length=MAX_LENGTH)
    assert_same(encoder_for(tokenizer)(inputs), plain)
    # the long inputs really were truncated, so truncation itself was compared
    assert max(len(ids) for ids in plain["input_ids"]) == MAX_LENGTH


def test_each_input_alone_equals_its_row_of_the_batch(tokenizer: Any) -> None:
    encoder = encoder_for(tokenizer)
    for inputs in (STRINGS, PAIRS):
        batch = encoder(inputs)
        for row, value in enumerate(inputs):
            alone = tokenize_with_transformers(tokenizer, [value], max_length=MAX_LENGTH)
            assert_same({name: [rows[row]] for name, rows in batch.items()}, alone)


@pytest.mark.parametrize("max_length", [5, 9, 40])
def test_longest_first_truncation_of_pairs_at_several_lengths(
    tokenizer: Any, max_length: int
) -> None:
    plain = tokenize_with_transformers(tokenizer, PAIRS, max_length=max_length)
    assert_same(encoder_for(tokenizer, max_length)(PAIRS), plain)


def test_left_truncation_and_split_special_tokens_are_reproduced(tmp_path: Path) -> None:
    tokenizer = unigram(tmp_path)
    inputs = [f"[CLS] {LONG} [SEP]", "<pad> literal [SEP] tokens <unk>"]
    for side, split in (("left", False), ("right", True), ("left", True)):
        tokenizer.truncation_side = side
        tokenizer.split_special_tokens = split
        for batch in (inputs, list(zip(inputs, reversed(inputs), strict=True))):
            plain = tokenize_with_transformers(tokenizer, batch, max_length=MAX_LENGTH)
            assert_same(encoder_for(tokenizer)(batch), plain)


def test_the_encoder_owns_its_backend(tokenizer: Any) -> None:
    """transformers' own calls (other lengths, padding) never reach the copy, nor it theirs."""
    encoder = encoder_for(tokenizer)
    assert encoder.backend is not tokenizer.backend_tokenizer
    before = tokenize_with_transformers(tokenizer, PAIRS, max_length=MAX_LENGTH)
    tokenizer(STRINGS, truncation=True, max_length=4, padding="max_length")
    tokenizer(STRINGS, padding=True)
    assert_same(encoder(PAIRS), before)
    assert_same(tokenize_with_transformers(tokenizer, PAIRS, max_length=MAX_LENGTH), before)


def slow_bert(tmp: Path) -> Any:
    """BERT's pure-Python WordPiece tokenizer (`BertTokenizerLegacy` in transformers 5)."""
    try:
        from transformers.models.bert.tokenization_bert_legacy import (
            BertTokenizerLegacy as SlowBertTokenizer,
        )
    except ImportError:  # transformers 4: the plain class is the slow one
        from transformers import BertTokenizer as SlowBertTokenizer
    vocab_file = tmp / "vocab.txt"
    vocab_file.write_text("\n".join(VOCABULARY) + "\n", encoding="utf-8")
    return SlowBertTokenizer(vocab_file=str(vocab_file))


def test_runner_uses_the_fast_path_and_equals_the_transformers_call(runner: ModelRunner) -> None:
    assert runner.fast_encoder is not None
    assert runner.fast_encoder.backend is not runner.tokenizer.backend_tokenizer
    assert runner.fast_encoder is runner.fast_encoder  # built once
    for inputs in (STRINGS, PAIRS):
        plain = tokenize_with_transformers(runner.tokenizer, inputs, max_length=runner.max_length)
        assert_same(runner.tokenize(inputs), plain)


def test_a_slow_tokenizer_falls_back(runner: ModelRunner, tmp_path: Path) -> None:
    slow = slow_bert(tmp_path)
    assert not slow.is_fast
    assert "not a fast" in (fast_path_refusal(slow) or "")
    slow_runner = dataclasses.replace(runner, tokenizer=slow)
    assert slow_runner.fast_encoder is None
    for inputs in (STRINGS, PAIRS):
        through_runner = slow_runner.tokenize(inputs)
        assert_same(through_runner, tokenize_with_transformers(slow, inputs, max_length=64))
    # Python and Rust WordPiece agree on single texts; on long pairs their longest_first
    # trims the two sides differently, one more reason the slow call is kept for slow ones.
    assert slow_runner.tokenize(STRINGS)["input_ids"] == runner.tokenize(STRINGS)["input_ids"]


def test_an_unmappable_model_input_falls_back(runner: ModelRunner) -> None:
    tokenizer = copy.deepcopy(runner.tokenizer)
    other = dataclasses.replace(runner, tokenizer=tokenizer)
    assert other.fast_encoder is not None
    tokenizer.model_input_names = ["input_ids", "attention_mask", "special_tokens_mask"]
    assert "special_tokens_mask" in (fast_path_refusal(tokenizer) or "")
    assert other.fast_encoder is None  # the settings changed: built again, and refused
    for inputs in (STRINGS, PAIRS):
        plain = tokenize_with_transformers(tokenizer, inputs, max_length=other.max_length)
        assert list(plain) == ["input_ids", "attention_mask"]
        assert_same(other.tokenize(inputs), plain)


def test_changed_call_settings_rebuild_the_encoder(runner: ModelRunner) -> None:
    shorter = dataclasses.replace(runner, tokenizer=copy.deepcopy(runner.tokenizer))
    first = shorter.fast_encoder
    shorter.max_length = 8
    shorter.tokenizer.truncation_side = "left"
    assert shorter.fast_encoder is not first
    plain = tokenize_with_transformers(shorter.tokenizer, PAIRS, max_length=8)
    assert_same(shorter.tokenize(PAIRS), plain)
