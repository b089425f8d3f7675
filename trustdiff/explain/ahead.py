"""Explain instances in waves, each wave's output-independent inputs evaluated ahead of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from trustdiff.errors import AuditCancelledError
from trustdiff.explain.instance import InstanceAttributions, RowExplainer
from trustdiff.explain.lockstep import ModelsPredict, run_in_lockstep

if TYPE_CHECKING:
    from trustdiff.inference import TextInput

# Inputs by the model selection that will ask for them.
Requests = dict[tuple[int, ...], list["TextInput"]]


def explain_in_waves(
    explain_row: RowExplainer,
    indices: Sequence[int],
    predict: ModelsPredict,
    *,
    cache_size: int,
    workers: int,
    progress: Callable[[str, int, int], None] | None,
    should_cancel: Callable[[], bool] | None,
) -> dict[int, dict[str, InstanceAttributions]]:
    """`run_in_lockstep(explain_row, ...)` over `indices`, with the inputs no output decides
    sent ahead.

    Every input an explainer will send regardless of the models' outputs (all of LIME's
    samples, for the first run and the re-run, and Partition SHAP's rounds that the limit does
    not cut short) is evaluated before the explainers start, in one `predict` call per set of
    models asking for it, so the explainers' own calls are answered by the
    evaluator's cache and the evaluator batches the whole lot by length at once. To keep
    them in the cache until used, instances are taken in waves whose inputs sent ahead fill
    at most half of `cache_size` (the rest is for the inputs the explainers pick as they
    go); with `cache_size` 0 nothing is sent ahead. Results equal those of one
    `run_in_lockstep` call up to the models' batch dependence (int8-dynamic).
    """
    results: dict[int, dict[str, InstanceAttributions]] = {}

    def wave_progress(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(stage, len(results) + done, len(indices))

    for wave, requests in _waves(explain_row, indices, budget=cache_size // 2):
        if should_cancel is not None and should_cancel():
            raise AuditCancelledError("audit cancelled before explaining instances")
        for models, inputs in requests.items():
            predict(inputs, models)
        results.update(
            run_in_lockstep(
                explain_row,
                wave,
                predict,
                workers=workers,
                progress=None if progress is None else wave_progress,
                should_cancel=should_cancel,
            )
        )
    return results


def _waves(
    explain_row: RowExplainer, indices: Sequence[int], *, budget: int
) -> Iterator[tuple[list[int], Requests]]:
    """Consecutive runs of `indices` and their requests, at most `budget` distinct inputs sent
    ahead per wave (a single instance over budget is a wave of its own); with `budget` 0,
    one wave and no requests."""
    if budget <= 0:
        yield list(indices), {}
        return
    wave: list[int] = []
    requests: Requests = {}
    distinct: set[TextInput] = set()
    for index in indices:
        own = explain_row.inputs_ahead(index)
        own_distinct = {value for inputs in own.values() for value in inputs}
        if wave and len(distinct) + len(own_distinct - distinct) > budget:
            yield wave, requests
            wave, requests, distinct = [], {}, set()
        wave.append(index)
        distinct |= own_distinct
        for models, inputs in own.items():
            requests.setdefault(models, []).extend(inputs)
    if wave:
        yield wave, requests
