"""Tests for the demo's compressions: a layer-dropped student and magnitude pruning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from demo.build import load_classifier
from demo.compression import (
    encoder_linear_sparsity,
    make_pruning_permanent,
    make_student,
    prune_encoder_linears,
)
from tests.tiny_models import build_tiny_bert


def test_make_student_copies_the_chosen_layers(tmp_path: Path) -> None:
    reference, _ = load_classifier(build_tiny_bert(tmp_path / "ref", train_steps=0))

    student = make_student(reference, [1])

    assert student.config.num_hidden_layers == 1
    assert reference.config.num_hidden_layers == 2
    ref_state, student_state = reference.state_dict(), student.state_dict()
    assert len(student_state) < len(ref_state)
    for key, value in student_state.items():
        source = key.replace("encoder.layer.0.", "encoder.layer.1.")
        assert torch.equal(value, ref_state[source]), key
    with pytest.raises(ValueError, match="distinct indices"):
        make_student(reference, [0, 2])


def test_pruning_reaches_the_amount_and_becomes_permanent(tmp_path: Path) -> None:
    model, _ = load_classifier(build_tiny_bert(tmp_path / "ref", train_steps=0))
    embeddings_before = model.base_model.embeddings.word_embeddings.weight.clone()

    pruned = prune_encoder_linears(model, 0.5)
    make_pruning_permanent(pruned)

    assert encoder_linear_sparsity(model) == pytest.approx(0.5, abs=0.01)
    assert not any(name.endswith("_orig") for name, _ in model.named_parameters())
    assert torch.equal(model.base_model.embeddings.word_embeddings.weight, embeddings_before)
