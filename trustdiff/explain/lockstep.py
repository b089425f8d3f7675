"""Several explaining threads whose model requests are merged, step by step, into one call."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from trustdiff.errors import AuditCancelledError

if TYPE_CHECKING:
    from trustdiff.inference import TextInput

Result = TypeVar("Result")
# Which models a request needs, as evaluator runner indices; None is every model.
Models = tuple[int, ...] | None
# inputs, models -> (n, len(models) × K): the selected models' probabilities side by side.
ModelsPredict = Callable[[list["TextInput"], Models], NDArray[np.float64]]


class LockstepBatcher:
    """Merges the requests of several explaining threads into one evaluator call per step.

    Each of `slots` threads explains its own instances and sends its requests through
    `predict(slot, inputs, models)`, which blocks until every still-active slot has sent
    one; the last to arrive then makes one call per distinct `models` (in the order of the
    lowest slot asking for it) with those requests concatenated in slot order, and hands
    each its rows. Requests for fewer models (the reference's re-run) forward only those.
    Bigger calls let the evaluator sort and batch across instances, and because every step
    merges exactly one request per active slot, in slot order, the sequence of calls — and
    so every result, even of a model whose outputs depend on batch composition — is the
    same on every run. A slot with no more work calls `retire(slot)`.
    """

    def __init__(self, predict: ModelsPredict, *, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self._predict = predict
        self._active = slots
        self._condition = threading.Condition()
        self._requests: dict[int, tuple[list[TextInput], Models]] = {}
        self._results: dict[int, NDArray[np.float64] | BaseException] = {}
        self._step = 0

    def predict(
        self, slot: int, inputs: list[TextInput], models: Models = None
    ) -> NDArray[np.float64]:
        with self._condition:
            if slot in self._requests:
                raise RuntimeError(f"slot {slot} sent a second request in one step")
            self._requests[slot] = (list(inputs), models)
            if len(self._requests) == self._active:
                self._flush()
            else:
                step = self._step
                while self._step == step:
                    self._condition.wait()
            result = self._results.pop(slot)
        if isinstance(result, BaseException):
            raise result
        return result

    def retire(self, slot: int) -> None:
        with self._condition:
            self._active -= 1
            if self._requests and len(self._requests) == self._active:
                self._flush()

    def _flush(self) -> None:
        # Runs with the condition held: every active slot is waiting for this call anyway.
        slots = sorted(self._requests)
        groups: dict[Models, list[int]] = {}
        for slot in slots:
            groups.setdefault(self._requests[slot][1], []).append(slot)
        try:
            for models, group in groups.items():
                merged = [value for slot in group for value in self._requests[slot][0]]
                outputs = self._predict(merged, models)
                start = 0
                for slot in group:
                    stop = start + len(self._requests[slot][0])
                    self._results[slot] = outputs[start:stop]
                    start = stop
        except BaseException as error:  # every waiting slot must learn of it, not just one
            for slot in slots:
                self._results[slot] = error
        self._requests.clear()
        self._step += 1
        self._condition.notify_all()


_SLOT_DONE = object()


def run_in_lockstep(
    task: Callable[[ModelsPredict, int], Result],
    indices: Sequence[int],
    predict: ModelsPredict,
    *,
    workers: int,
    progress: Callable[[str, int, int], None] | None,
    should_cancel: Callable[[], bool] | None,
) -> dict[int, Result]:
    """Run `task(predict, index)` over `indices` on `workers` threads merged by a batcher.

    Slot s takes `indices[s::workers]`, in order, so which requests meet in a step never
    depends on timing. Progress and `should_cancel` run on the calling thread only, after each
    finished instance; on cancellation the slots finish their current instance and stop.
    """
    if should_cancel is not None and should_cancel():
        raise AuditCancelledError("audit cancelled before explaining instances")
    slots = min(workers, len(indices))
    run = _LockstepRun(task, indices, LockstepBatcher(predict, slots=slots), slots=slots)
    threads = [
        threading.Thread(target=run.work, args=(slot,), name=f"explain-{slot}", daemon=True)
        for slot in range(slots)
    ]
    for thread in threads:
        thread.start()
    try:
        return run.collect(progress=progress, should_cancel=should_cancel)
    finally:
        for thread in threads:
            thread.join()


class _LockstepRun(Generic[Result]):
    """The slots' shared state: the work loop each thread runs, and the caller's collection."""

    def __init__(
        self,
        task: Callable[[ModelsPredict, int], Result],
        indices: Sequence[int],
        batcher: LockstepBatcher,
        *,
        slots: int,
    ) -> None:
        self.task = task
        self.indices = indices
        self.batcher = batcher
        self.slots = slots
        self.events: queue.Queue[tuple[int, object]] = queue.Queue()
        self.stop = threading.Event()

    def work(self, slot: int) -> None:
        def slot_predict(inputs: list[TextInput], models: Models = None) -> NDArray[np.float64]:
            return self.batcher.predict(slot, inputs, models)

        try:
            for index in self.indices[slot :: self.slots]:
                if self.stop.is_set():
                    break
                try:
                    self.events.put((index, self.task(slot_predict, index)))
                except BaseException as error:
                    self.events.put((index, error))
                    break
        finally:
            self.batcher.retire(slot)
            self.events.put((-1, _SLOT_DONE))

    def collect(
        self,
        *,
        progress: Callable[[str, int, int], None] | None,
        should_cancel: Callable[[], bool] | None,
    ) -> dict[int, Result]:
        """Wait for every slot; report progress, poll cancellation, re-raise the first failure."""
        results: dict[int, Result] = {}
        failure: BaseException | None = None
        cancelled = False
        finished = 0
        while finished < self.slots:
            index, payload = self.events.get()
            if payload is _SLOT_DONE:
                finished += 1
            elif isinstance(payload, BaseException):
                failure = failure or payload
                self.stop.set()
            elif failure is None:
                results[index] = cast(Result, payload)
                try:
                    if progress is not None:
                        progress("explain", len(results), len(self.indices))
                    if not self.stop.is_set() and should_cancel is not None and should_cancel():
                        cancelled = True
                        self.stop.set()
                except BaseException as error:  # a failing callback still lets slots wind down
                    failure = error
                    self.stop.set()
        if failure is not None:
            raise failure
        if cancelled:
            raise AuditCancelledError("audit cancelled while explaining instances")
        return results
