"""The demo's compressions of the reference: a layer-dropped student and magnitude pruning."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import prune
from transformers import PreTrainedModel

_LAYER_KEY = re.compile(r"((?:^|\.)encoder\.layer\.)(\d+)(\.)")


def make_student(reference: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """A copy of `reference` keeping only the encoder layers `layers`, in that order.

    Embeddings, pooler and classification head are copied unchanged; student layer j starts
    as reference layer `layers[j]`. Initialising from the teacher's own layers (as
    DistilBERT does) converges far faster than a random student.
    """
    n_layers = reference.config.num_hidden_layers
    if not layers or len(set(layers)) != len(layers) or not all(0 <= i < n_layers for i in layers):
        raise ValueError(f"layers must be distinct indices in [0, {n_layers}), got {list(layers)}")
    config = copy.deepcopy(reference.config)
    config.num_hidden_layers = len(layers)
    student = type(reference)(config)
    new_index = {old: new for new, old in enumerate(layers)}
    state: dict[str, torch.Tensor] = {}
    for key, value in reference.state_dict().items():
        match = _LAYER_KEY.search(key)
        if match is None:
            state[key] = value.clone()
        elif int(match.group(2)) in new_index:
            renamed = f"{match.group(1)}{new_index[int(match.group(2))]}{match.group(3)}"
            state[key[: match.start()] + renamed + key[match.end() :]] = value.clone()
    student.load_state_dict(state, strict=True)
    student.eval()
    return student


def encoder_linears(model: PreTrainedModel) -> list[nn.Linear]:
    """The Linear layers inside the transformer encoder (not embeddings, pooler or head)."""
    encoder = model.base_model.get_submodule("encoder")
    return [module for module in encoder.modules() if isinstance(module, nn.Linear)]


def prune_encoder_linears(model: PreTrainedModel, amount: float) -> list[tuple[nn.Module, str]]:
    """Zero the `amount` fraction of smallest-|w| encoder Linear weights, ranked globally.

    Returns the pruned (module, "weight") pairs; the masks stay attached (so a fine-tune keeps
    pruned weights at zero) until `make_pruning_permanent`.
    """
    if not 0 < amount < 1:
        raise ValueError(f"amount must be in (0, 1), got {amount}")
    parameters: list[tuple[nn.Module, str]] = [
        (module, "weight") for module in encoder_linears(model)
    ]
    prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=amount)
    return parameters


def make_pruning_permanent(parameters: Sequence[tuple[nn.Module, str]]) -> None:
    for module, name in parameters:
        prune.remove(module, name)


def encoder_linear_sparsity(model: PreTrainedModel) -> float:
    """Fraction of exactly-zero weights over the encoder's Linear layers."""
    weights = [module.weight for module in encoder_linears(model)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)
