"""Tests for the demo's training helpers."""

from __future__ import annotations

from pathlib import Path

import torch

from demo.build import load_classifier
from demo.settings import FineTuneSettings
from demo.training import Distillation, predict_logits, shuffled_batches, training_loss
from tests.tiny_models import build_tiny_bert


def test_predict_logits_returns_input_order(tmp_path: Path) -> None:
    model, tokenizer = load_classifier(build_tiny_bert(tmp_path / "ref", train_steps=0))
    texts = ["good film and the plot was great really", "bad", "the great film", "dull"]

    batched = predict_logits(
        model, tokenizer, texts, batch_size=2, max_length=32, description="test"
    )
    one_by_one = torch.cat(
        [
            predict_logits(model, tokenizer, [t], batch_size=1, max_length=32, description="t")
            for t in texts
        ]
    )

    assert batched.shape == (4, 2)
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-5)


def test_training_loss_is_cross_entropy_without_distillation_and_blends_with_it() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-1.0, 3.0]])
    labels = torch.tensor([0, 1, 1])
    index = torch.tensor([2, 0, 1])
    cross_entropy = torch.nn.functional.cross_entropy(logits, labels)

    assert torch.equal(training_loss(logits, labels, index, None), cross_entropy)
    # A teacher whose selected rows equal the student's logits adds no KL term.
    teacher = torch.empty_like(logits)
    teacher[index] = logits
    same = Distillation(teacher, temperature=2.0, weight=0.7)
    torch.testing.assert_close(training_loss(logits, labels, index, same), 0.3 * cross_entropy)
    # Only the KL term, by hand: T² · KL(p_teacher ‖ p_student) at temperature T, batch mean.
    other = Distillation(torch.zeros(3, 2), temperature=2.0, weight=1.0)
    student = torch.log_softmax(logits / 2.0, dim=-1)
    expected = 4.0 * (0.5 * (torch.log(torch.tensor(0.5)) - student)).sum(-1).mean()
    torch.testing.assert_close(training_loss(logits, labels, index, other), expected)


def test_shuffled_batches_cover_every_example_once_per_epoch() -> None:
    settings = FineTuneSettings(epochs=2, batch_size=4)

    batches = [batch.tolist() for batch in shuffled_batches(10, settings, seed=1)]

    assert [len(batch) for batch in batches] == [4, 4, 2, 4, 4, 2]
    first = [i for batch in batches[:3] for i in batch]
    second = [i for batch in batches[3:] for i in batch]
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second  # reshuffled between epochs
    assert batches == [b.tolist() for b in shuffled_batches(10, settings, seed=1)]
