"""The lockstep batcher: one merged evaluator call per step, in slot order; failures reach all."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from trustdiff.errors import AuditCancelledError
from trustdiff.explain.lockstep import LockstepBatcher, run_in_lockstep
from trustdiff.inference import TextInput


def test_lockstep_batcher_merges_one_request_per_slot_in_slot_order() -> None:
    calls: list[list[TextInput]] = []

    def predict(inputs: list[TextInput], models: tuple[int, ...] | None) -> np.ndarray:
        calls.append(list(inputs))
        return np.array([[float(len(str(value)))] for value in inputs])

    batcher = LockstepBatcher(predict, slots=3)
    results: dict[int, list[np.ndarray]] = {0: [], 1: [], 2: []}

    def work(slot: int, requests: list[list[TextInput]]) -> None:
        for request in requests:
            results[slot].append(batcher.predict(slot, request))
        batcher.retire(slot)

    plans = {
        0: [["a"], ["bb", "c"]],
        1: [["ddd"]],
        2: [["eeee", "f"], ["g"], ["hh"]],
    }
    threads = [threading.Thread(target=work, args=item) for item in plans.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert calls == [["a", "ddd", "eeee", "f"], ["bb", "c", "g"], ["hh"]]
    assert [r.ravel().tolist() for r in results[2]] == [[4.0, 1.0], [1.0], [2.0]]


def test_lockstep_batcher_makes_one_call_per_model_selection_in_a_step() -> None:
    calls: list[tuple[list[TextInput], tuple[int, ...] | None]] = []

    def predict(inputs: list[TextInput], models: tuple[int, ...] | None) -> np.ndarray:
        calls.append((list(inputs), models))
        width = 2 if models is None else len(models)
        return np.array([[float(len(str(value)))] * width for value in inputs])

    batcher = LockstepBatcher(predict, slots=3)
    plans: dict[int, tuple[list[TextInput], tuple[int, ...] | None]] = {
        0: (["a"], (0,)),
        1: (["bb"], None),
        2: (["ccc"], (0,)),
    }
    shapes: dict[int, tuple[int, ...]] = {}

    def work(slot: int) -> None:
        inputs, models = plans[slot]
        shapes[slot] = batcher.predict(slot, inputs, models).shape
        batcher.retire(slot)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert calls == [(["a", "ccc"], (0,)), (["bb"], None)]
    assert shapes == {0: (1, 1), 1: (1, 2), 2: (1, 1)}


def test_lockstep_batcher_reports_a_failure_to_every_waiting_slot() -> None:
    def failing(inputs: list[TextInput], models: tuple[int, ...] | None) -> np.ndarray:
        raise AuditCancelledError("stop")

    batcher = LockstepBatcher(failing, slots=2)
    errors: list[BaseException] = []

    def work(slot: int) -> None:
        try:
            batcher.predict(slot, ["x"])
        except AuditCancelledError as error:
            errors.append(error)
        finally:
            batcher.retire(slot)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(errors) == 2


def test_run_in_lockstep_returns_every_result_and_reraises_the_first_failure() -> None:
    def predict(inputs: list[TextInput], models: tuple[int, ...] | None) -> np.ndarray:
        return np.array([[float(len(str(value)))] for value in inputs])

    def task(slot_predict: object, index: int) -> float:
        assert callable(slot_predict)
        return float(slot_predict(["x" * index])[0, 0])

    progress: list[tuple[int, int]] = []
    results = run_in_lockstep(
        task,
        [1, 2, 3, 4, 5],
        predict,
        workers=2,
        progress=lambda _, done, total: progress.append((done, total)),
        should_cancel=None,
    )
    assert results == {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0, 5: 5.0}
    assert progress[-1] == (5, 5)

    def failing(slot_predict: object, index: int) -> float:
        if index == 3:
            raise ValueError("instance 3 failed")
        return 0.0

    with pytest.raises(ValueError, match="instance 3"):
        run_in_lockstep(
            failing, [1, 2, 3, 4], predict, workers=2, progress=None, should_cancel=None
        )
    with pytest.raises(AuditCancelledError):
        run_in_lockstep(task, [1, 2], predict, workers=2, progress=None, should_cancel=lambda: True)
