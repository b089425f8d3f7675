"""What every explainer returns: word attributions for each explained output, shape-checked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


def _read_only(values: ArrayLike, *, name: str) -> NDArray[np.float64]:
    # A C-ordered copy: the container owns its data, and each row is a contiguous vector (a
    # strided one can take another summation path in BLAS and differ in the last bit).
    array = np.array(values, dtype=np.float64, order="C")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class WordAttributions:
    """One explanation of one input: a score per word for each explained output column.

    The explainers (`trustdiff.explain.registry.EXPLAINERS`) explain several output columns
    of one prediction function at once — one per model — so both models are explained on the
    same perturbed inputs. Shapes, with d words and c explained columns:

    - `words`: (d,), d >= 1, the features by position;
    - `targets`: (c,), c >= 1, distinct output columns of the prediction function;
    - `scores`: (c, d), `scores[i]` attributes output `targets[i]` to the words;
    - `base_values`: (c,), the output with no word present as the method sees it (SHAP's
      base value; LIME's intercept).

    Construction validates the shapes and finiteness and raises `ValueError` naming the bad
    value; the arrays are read-only copies.
    """

    words: tuple[str, ...]
    targets: tuple[int, ...]
    scores: NDArray[np.float64]
    base_values: NDArray[np.float64]

    def __post_init__(self) -> None:
        words = tuple(self.words)
        if not words:
            raise ValueError("words is empty: an explanation needs at least one word")
        if not all(isinstance(word, str) for word in words):
            raise ValueError(f"words must be strings, got {words!r:.80}")
        targets = _checked_targets(self.targets)
        scores = _read_only(self.scores, name="scores")
        if scores.shape != (len(targets), len(words)):
            raise ValueError(
                f"scores has shape {scores.shape}, expected {(len(targets), len(words))} "
                f"(one row per target, one column per word)"
            )
        base_values = _read_only(self.base_values, name="base_values")
        if base_values.shape != (len(targets),):
            raise ValueError(
                f"base_values has shape {base_values.shape}, expected ({len(targets)},)"
            )
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "targets", targets)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "base_values", base_values)

    def scores_of(self, target: int) -> NDArray[np.float64]:
        """The (d,) word scores of output column `target`."""
        return self.scores[self._row(target)]

    def base_value_of(self, target: int) -> float:
        """The base value (intercept) of output column `target`."""
        return float(self.base_values[self._row(target)])

    def _row(self, target: int) -> int:
        if target not in self.targets:
            raise ValueError(f"target {target!r} was not explained; targets are {self.targets}")
        return self.targets.index(target)


def _checked_targets(targets: Sequence[int]) -> tuple[int, ...]:
    checked = tuple(targets)
    if not checked:
        raise ValueError("targets is empty: an explanation explains at least one output")
    for target in checked:
        if isinstance(target, bool) or not isinstance(target, int | np.integer) or target < 0:
            raise ValueError(f"targets must be non-negative column indices, got {target!r}")
    if len(set(checked)) != len(checked):
        raise ValueError(f"targets repeat a column: {checked}")
    return tuple(int(target) for target in checked)
