"""Tiny, real Hugging Face checkpoints and datasets the tests build offline in seconds."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from pathlib import Path

POSITIVE_WORDS = ("good", "great", "excellent", "wonderful", "love", "fun")
NEGATIVE_WORDS = ("bad", "awful", "terrible", "boring", "hate", "dull")
NEUTRAL_WORDS = (
    "the", "movie", "film", "plot", "acting", "was", "is", "a", "very", "and", "this",
    "story", "cast", "ending", "music", "really",
)  # fmt: skip
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VOCABULARY = SPECIAL_TOKENS + NEUTRAL_WORDS + POSITIVE_WORDS + NEGATIVE_WORDS
BINARY_LABELS = ("negative", "positive")


def sentiment_rows(n: int, *, seed: int = 0, label_noise: float = 0.1) -> list[dict[str, str]]:
    """`n` short sentences whose label follows their one or two sentiment words.

    A fraction `label_noise` of gold labels is flipped so that no model is perfect and
    calibration has something to measure.
    """
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(BINARY_LABELS)
        cue_words = POSITIVE_WORDS if label == "positive" else NEGATIVE_WORDS
        words = rng.sample(NEUTRAL_WORDS, rng.randint(3, 6))
        for cue in rng.sample(cue_words, rng.randint(1, 2)):
            words.insert(rng.randint(0, len(words)), cue)
        if rng.random() < label_noise:
            label = BINARY_LABELS[1 - BINARY_LABELS.index(label)]
        rows.append({"text": " ".join(words), "label": label})
    return rows


def write_dataset(path: Path, rows: Sequence[dict[str, str]]) -> Path:
    """Write rows as JSONL, CSV or TSV, chosen by the file suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        return path
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def build_tiny_bert(
    path: Path,
    *,
    labels: Sequence[str] = BINARY_LABELS,
    seed: int = 0,
    train_steps: int = 60,
    weight_noise: float = 0.0,
) -> Path:
    """Save a 2-layer BERT with a WordPiece vocabulary written here, briefly trained.

    It is trained on `sentiment_rows` so its predictions depend on the sentiment words (which
    gives explainers something real to find). `weight_noise` adds Gaussian noise of that
    standard deviation to every weight after training: a "compressed" variant that predicts
    differently. Saved with `save_pretrained` (safetensors), loadable by any HF loader.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(VOCABULARY) + "\n", encoding="utf-8")
    # transformers 5 takes the vocabulary itself; 4.x took `vocab_file`. Passing the mapping
    # works on both and keeps the WordPiece vocabulary exactly the one written above.
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(VOCABULARY)})
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(VOCABULARY),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
    )
    model = BertForSequenceClassification(config)
    if train_steps:
        rows = sentiment_rows(256, seed=seed + 1000, label_noise=0.0)
        targets = [
            BINARY_LABELS.index(row["label"]) % len(labels) for row in rows
        ]  # a 3-label model learns the binary task on its first two classes
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()
        generator = random.Random(seed)
        for _ in range(train_steps):
            batch = generator.sample(range(len(rows)), 32)
            encoded = tokenizer([rows[i]["text"] for i in batch], padding=True, return_tensors="pt")
            loss = model(**encoded, labels=torch.tensor([targets[i] for i in batch])).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
    if weight_noise:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * weight_noise)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
