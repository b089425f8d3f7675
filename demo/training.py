"""Fine-tuning (plain or distilled) and batched prediction for the demo's classifiers."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

from demo.assets import LabelledText
from demo.settings import FineTuneSettings


@dataclass(frozen=True)
class Distillation:
    """Soft targets for knowledge distillation: teacher logits aligned with the examples."""

    teacher_logits: torch.Tensor
    temperature: float
    weight: float


def gold_label_ids(model: PreTrainedModel, examples: Sequence[LabelledText]) -> torch.Tensor:
    """Class ids of the examples' label names under the model's `label2id`."""
    label2id = model.config.label2id or {}
    unknown = sorted({e.label for e in examples} - set(label2id))
    if unknown:
        raise ValueError(f"labels {unknown} are not in the model's label2id {label2id}")
    return torch.tensor([int(label2id[example.label]) for example in examples])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> dict[str, torch.Tensor]:
    # Padding to the longest text of each batch (not to max_length) is what keeps CPU
    # training affordable: movie snippets average ~25 tokens.
    encoded = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return dict(encoded)


def training_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    index: torch.Tensor,
    distillation: Distillation | None,
) -> torch.Tensor:
    """Cross-entropy on the gold labels, blended with the distillation loss when given.

    With `distillation`: `weight · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) +
    (1 − weight) · CE`; the T² factor keeps the soft-target gradients on the same scale as
    CE's (Hinton et al. 2015). `index` selects the batch's rows of the teacher's logits.
    """
    loss = nn.functional.cross_entropy(logits, labels)
    if distillation is None:
        return loss
    temperature = distillation.temperature
    soft_loss = nn.functional.kl_div(
        nn.functional.log_softmax(logits / temperature, dim=-1),
        nn.functional.log_softmax(distillation.teacher_logits[index] / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return distillation.weight * temperature**2 * soft_loss + (1 - distillation.weight) * loss


def shuffled_batches(
    n_examples: int, settings: FineTuneSettings, *, seed: int
) -> Iterator[torch.Tensor]:
    """Example indices, batch by batch, reshuffled every epoch under `seed`."""
    order_rng = random.Random(seed)
    for _ in range(settings.epochs):
        order = list(range(n_examples))
        order_rng.shuffle(order)
        for start in range(0, len(order), settings.batch_size):
            yield torch.tensor(order[start : start + settings.batch_size])


def fine_tune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[LabelledText],
    settings: FineTuneSettings,
    *,
    seed: int,
    description: str,
    distillation: Distillation | None = None,
) -> float:
    """Train `model` in place with AdamW and a linear warmup/decay schedule; return last loss.

    Without `distillation` the loss is cross-entropy on the gold labels; with it, see
    `training_loss`.
    """
    labels = gold_label_ids(model, examples)
    texts = [example.text for example in examples]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    total_steps = -(-len(examples) // settings.batch_size) * settings.epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(total_steps * settings.warmup_fraction), total_steps
    )
    model.train()
    last_loss = float("nan")
    with tqdm(total=total_steps, desc=description, unit="batch") as progress:
        for index in shuffled_batches(len(examples), settings, seed=seed):
            batch = encode(tokenizer, [texts[i] for i in index], settings.max_length)
            loss = training_loss(model(**batch).logits, labels[index], index, distillation)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            last_loss = loss.item()
            progress.set_postfix(loss=f"{last_loss:.3f}")
            progress.update()
    model.eval()
    return last_loss


def predict_logits(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int,
    max_length: int,
    description: str,
) -> torch.Tensor:
    """Logits of shape (len(texts), num_labels), in the order of `texts`."""
    # Batches of similar length waste little compute on padding; results are put back in
    # input order at the end.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    outputs: list[torch.Tensor] = []
    model.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc=description, unit="batch"):
            chunk = [texts[i] for i in order[start : start + batch_size]]
            outputs.append(model(**encode(tokenizer, chunk, max_length)).logits.float())
    logits = torch.cat(outputs)
    restored = torch.empty_like(logits)
    restored[torch.tensor(order)] = logits
    return restored
