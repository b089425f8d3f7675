"""Disagreement exemplars: the rows a person should read before signing off on the candidate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trustdiff.metrics._checks import check_integer, check_probability_pair

DEFAULT_PER_GROUP = 5


@dataclass(frozen=True)
class ExemplarGroup:
    """The rows on which the reference predicts `reference_class` and the candidate
    `candidate_class`: `count` of them, `rows` the (at most per-group) largest shifts first."""

    reference_class: int
    candidate_class: int
    count: int
    rows: tuple[int, ...]
    shifts: tuple[float, ...]


def probability_shift(
    reference_proba: ArrayLike, candidate_proba: ArrayLike
) -> NDArray[np.float64]:
    """Total variation distance `½ Σ_k |p_ik − q_ik|` per instance, shape (n,), in [0, 1].

    `reference_proba`, `candidate_proba`: probability matrices of the same shape (n, K). For
    two classes it is the change of either class's probability.
    """
    reference, candidate = check_probability_pair(reference_proba, candidate_proba)
    return np.clip(0.5 * np.abs(reference - candidate).sum(axis=1), 0.0, 1.0)


def disagreement_exemplars(
    reference_proba: ArrayLike, candidate_proba: ArrayLike, *, per_group: int = DEFAULT_PER_GROUP
) -> list[ExemplarGroup]:
    """The flipped rows (argmax differs) grouped by (reference class → candidate class).

    `reference_proba`, `candidate_proba`: shape (n, K). In each group the `per_group` rows with
    the largest `probability_shift` come first (equal shifts: lower row first). Groups are
    ordered by size, largest first, then by (reference class, candidate class). No flip, no
    group: the list is empty.
    """
    check_integer(per_group, name="per_group", minimum=1)
    shift = probability_shift(reference_proba, candidate_proba)
    reference_pred = np.asarray(reference_proba, dtype=np.float64).argmax(axis=1)
    candidate_pred = np.asarray(candidate_proba, dtype=np.float64).argmax(axis=1)
    flipped = np.flatnonzero(reference_pred != candidate_pred)
    groups: list[ExemplarGroup] = []
    pairs = {(int(reference_pred[row]), int(candidate_pred[row])) for row in flipped}
    for reference_class, candidate_class in pairs:
        members = flipped[
            (reference_pred[flipped] == reference_class)
            & (candidate_pred[flipped] == candidate_class)
        ]
        order = members[np.lexsort((members, -shift[members]))][:per_group]
        groups.append(
            ExemplarGroup(
                reference_class=reference_class,
                candidate_class=candidate_class,
                count=int(members.size),
                rows=tuple(int(row) for row in order),
                shifts=tuple(float(shift[row]) for row in order),
            )
        )
    groups.sort(key=lambda group: (-group.count, group.reference_class, group.candidate_class))
    return groups
