"""Word features of a text (or text pair) and the texts their keep-masks stand for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from trustdiff.config import Masking

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import NDArray

    from trustdiff.inference import TextInput

    # What the explainers call: inputs -> (n, C) probabilities, C columns of all models.
    PredictFunction = Callable[[list[TextInput]], NDArray[np.float64]]


@dataclass(frozen=True)
class WordFeatures:
    """The explained features of one input: its whitespace-separated words, by position.

    For a text pair the words of both segments are features and `segments` says which
    segment each belongs to (0 text, 1 text pair). The boundary between the segments is not
    a feature: every reconstructed input is again a (text, pair) tuple, so no perturbation
    can remove it and no "[SEP]" word can ever appear among the features.
    """

    words: tuple[str, ...]
    segments: tuple[int, ...]
    is_pair: bool

    @classmethod
    def from_input(cls, text_input: TextInput) -> WordFeatures:
        if isinstance(text_input, str):
            words = text_input.split()
            return cls(words=tuple(words), segments=(0,) * len(words), is_pair=False)
        if isinstance(text_input, tuple) and len(text_input) == 2:
            first, second = text_input[0].split(), text_input[1].split()
            return cls(
                words=tuple(first) + tuple(second),
                segments=(0,) * len(first) + (1,) * len(second),
                is_pair=True,
            )
        raise ValueError(
            f"an input must be a string or a (text, text_pair) tuple, got {text_input!r}"
        )

    def __len__(self) -> int:
        return len(self.words)

    def compose(
        self, keep: ArrayLike, *, masking: Masking = "remove", mask_token: str | None = None
    ) -> TextInput:
        """The input in which the words with `keep[i] == False` are removed or masked.

        `keep` has shape (d,). Kept words are joined by single spaces, so the same mask
        always gives the same string (which is what lets the evaluator's cache recognise it).
        With `masking="mask_token"` each hidden word becomes one `mask_token`.
        """
        mask = np.asarray(keep, dtype=bool)
        if mask.shape != (len(self),):
            raise ValueError(f"keep mask has shape {mask.shape}, expected ({len(self)},)")
        if masking == "mask_token":
            if not mask_token:
                raise ValueError('masking="mask_token" needs a non-empty mask_token')
            hidden: str | None = mask_token
        elif masking == "remove":
            hidden = None
        else:
            raise ValueError(f'masking must be "remove" or "mask_token", got {masking!r}')
        segments: tuple[list[str], list[str]] = ([], [])
        for word, segment, kept in zip(self.words, self.segments, mask.tolist(), strict=True):
            if kept:
                segments[segment].append(word)
            elif hidden is not None:
                segments[segment].append(hidden)
        if not self.is_pair:
            return " ".join(segments[0])
        return (" ".join(segments[0]), " ".join(segments[1]))

    def compose_many(
        self,
        keep_masks: ArrayLike,
        *,
        masking: Masking = "remove",
        mask_token: str | None = None,
    ) -> list[TextInput]:
        """`compose` for each row of `keep_masks`, shape (n, d)."""
        masks = np.asarray(keep_masks, dtype=bool)
        if masks.ndim != 2 or masks.shape[1] != len(self):
            raise ValueError(f"keep masks have shape {masks.shape}, expected (n, {len(self)})")
        return [self.compose(row, masking=masking, mask_token=mask_token) for row in masks]

    def original(self) -> TextInput:
        """The input with every word kept (whitespace normalised)."""
        return self.compose(np.ones(len(self), dtype=bool))
