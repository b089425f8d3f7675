"""Explain sampled instances for both models at once, with the noise floor, and align them."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from trustdiff.config import ExplainMethod, ExplainSettings
from trustdiff.errors import AuditCancelledError, ConfigError
from trustdiff.explain.lime_explainer import explain_lime
from trustdiff.explain.shap_explainer import explain_shap
from trustdiff.explain.words import WordFeatures
from trustdiff.metrics.alignment import ALIGNMENT_METRICS, alignment_metrics, summarize_metric
from trustdiff.result import AlignmentMetrics, Attributions, Explanation, MethodAlignment

if TYPE_CHECKING:
    from trustdiff.explain.words import PredictFunction
    from trustdiff.inference import TextInput

# Bootstrap settings of the per-metric summaries (the explain settings carry none).
SUMMARY_RESAMPLES = 1000
SUMMARY_CONFIDENCE = 0.95
HISTOGRAM_BINS = 10
# Instances explained at once, each on its own thread, their model requests merged step by
# step into one evaluator call (`LockstepBatcher`), so the evaluator batches across instances
# (SHAP's Partition rounds alone are small) and results stay reproducible. On the 2-core CPU
# 1, 2 and 4 workers measured within noise of each other (bench/README.md); merged calls
# matter more on a GPU.
DEFAULT_WORKERS = 4

_METHOD_IDS: dict[str, int] = {"lime": 0, "shap": 1}


class Evaluator(Protocol):
    """What the explainers need of `trustdiff.inference.BatchingEvaluator`."""

    @property
    def runners(self) -> Sequence[Any]: ...

    def predict_proba(self, inputs: Sequence[TextInput]) -> list[NDArray[np.float64]]: ...


class ExplainedDataset(Protocol):
    """What is read of `trustdiff.datasets.Dataset`: model inputs and gold label ids."""

    @property
    def inputs(self) -> list[TextInput]: ...

    @property
    def labels(self) -> list[int]: ...


@dataclass(frozen=True)
class InstanceAttributions:
    """One method's attributions for one instance, each of shape (d,)."""

    reference: NDArray[np.float64]
    candidate: NDArray[np.float64]
    reference_rerun: NDArray[np.float64] | None


def instance_seed(seed: int, index: int, method: ExplainMethod, run: int) -> int:
    """The explainer seed of (audit seed, dataset row, method, run); run 1 is the noise floor."""
    sequence = np.random.SeedSequence([seed, index, _METHOD_IDS[method], run])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


def joint_predict(evaluator: Evaluator) -> PredictFunction:
    """Inputs -> (n, 2K): the reference's K columns, then the candidate's, same inputs."""

    def predict(inputs: list[TextInput]) -> NDArray[np.float64]:
        reference, candidate = evaluator.predict_proba(inputs)[:2]
        return np.hstack([reference, candidate])

    return predict


def explain_instance(
    features: WordFeatures,
    predict: PredictFunction,
    *,
    method: ExplainMethod,
    settings: ExplainSettings,
    n_classes: int,
    reference_target: int,
    candidate_target: int,
    seed: int,
    rerun_seed: int | None,
    mask_token: str | None,
) -> InstanceAttributions:
    """Explain one instance for both models with one method; optionally re-run the reference.

    `predict` returns (n, 2K) probabilities: reference columns 0..K−1, candidate K..2K−1.
    The re-run repeats the same joint explanation with `rerun_seed`; repeated perturbations
    are answered by the evaluator's cache, so only new ones cost a forward pass.
    """
    columns = (reference_target, n_classes + candidate_target)

    def run(run_seed: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        if method == "lime":
            lime = explain_lime(
                features,
                predict,
                columns=columns,
                num_samples=settings.lime_samples,
                seed=run_seed,
                masking=settings.masking,
                mask_token=mask_token,
            )
            return lime.weights[columns[0]], lime.weights[columns[1]]
        if method == "shap":
            shap = explain_shap(
                features,
                predict,
                columns=columns,
                algorithm=settings.shap_algorithm,
                max_evals=settings.shap_max_evals,
                seed=run_seed,
                masking=settings.masking,
                mask_token=mask_token,
            )
            return shap.values[columns[0]], shap.values[columns[1]]
        raise ValueError(f"unknown explanation method {method!r}")

    reference, candidate = run(seed)
    rerun = None if rerun_seed is None else run(rerun_seed)[0]
    return InstanceAttributions(reference=reference, candidate=candidate, reference_rerun=rerun)


def select_instances(inputs: Sequence[TextInput], *, count: int, seed: int) -> list[int]:
    """A seeded sample of `count` row indices (sorted) among the rows that have any word."""
    eligible = [index for index, value in enumerate(inputs) if len(WordFeatures.from_input(value))]
    if count >= len(eligible):
        return eligible
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E1EC7]))
    return sorted(int(index) for index in rng.choice(eligible, size=count, replace=False))


def explained_targets(
    settings: ExplainSettings,
    *,
    reference_proba: NDArray[np.float64],
    candidate_proba: NDArray[np.float64],
    gold: Sequence[int],
    index: int,
) -> tuple[int, int]:
    """The (reference, candidate) class explained for row `index` under `settings.target`."""
    reference_prediction = int(np.argmax(reference_proba[index]))
    if settings.target == "reference_prediction":
        return reference_prediction, reference_prediction
    if settings.target == "gold":
        return int(gold[index]), int(gold[index])
    if settings.target == "own_prediction":
        return reference_prediction, int(np.argmax(candidate_proba[index]))
    raise ValueError(f"unknown explained target {settings.target!r}")


def reference_mask_token(evaluator: Evaluator) -> str:
    """The reference tokenizer's mask token, for `masking="mask_token"`."""
    tokenizer = getattr(evaluator.runners[0], "tokenizer", None)
    token = getattr(tokenizer, "mask_token", None)
    if not isinstance(token, str) or not token:
        raise ConfigError(
            'masking="mask_token" needs a reference tokenizer with a mask token; this one has '
            'none: use masking="remove"'
        )
    return token


def _summaries(rows: Sequence[dict[str, float]], *, seed: int) -> dict[str, Any]:
    return {
        name: summarize_metric(
            [row[name] for row in rows],
            n_resamples=SUMMARY_RESAMPLES,
            confidence_level=SUMMARY_CONFIDENCE,
            seed=seed,
            bins=HISTOGRAM_BINS,
            value_range=value_range,
        )
        for name, (_, value_range) in ALIGNMENT_METRICS.items()
    }


def _method_settings(method: ExplainMethod, settings: ExplainSettings) -> dict[str, object]:
    common: dict[str, object] = {
        "method": method,
        "masking": settings.masking,
        "target": settings.target,
        "top_k": settings.top_k,
        "features": "words",
        "noise_floor": "reference re-explained with another seed" if settings.noise_floor else None,
    }
    if method == "lime":
        return {**common, "samples": settings.lime_samples}
    return {**common, "algorithm": settings.shap_algorithm, "max_evals": settings.shap_max_evals}


def explain_and_align(
    evaluator: Evaluator,
    dataset: ExplainedDataset,
    *,
    reference_proba: ArrayLike,
    candidate_proba: ArrayLike,
    settings: ExplainSettings,
    labels: list[str],
    seed: int,
    progress: Callable[[str, int, int], None] | None,
    should_cancel: Callable[[], bool] | None,
    workers: int = DEFAULT_WORKERS,
) -> tuple[dict[str, MethodAlignment], dict[int, Explanation]]:
    """Explain a seeded sample of instances with every method; align reference and candidate.

    `reference_proba` and `candidate_proba` are (n, K) over all dataset rows, in the order of
    `labels` (the audit's label space; the evaluator returns the candidate in that order too).
    Each sampled instance is explained once per method for both models (one prediction
    function returning both models' probabilities), and, when `settings.noise_floor`, the
    reference again with another seed. Returns the per-method summaries (between models, with
    the noise floor beside them) and, keyed by dataset row, each instance's explanation.
    `progress("explain", done, total)` reports instances; `should_cancel` is checked between
    instances and raises `AuditCancelledError`. Up to `workers` instances run at once.
    """
    reference = np.asarray(reference_proba, dtype=np.float64)
    candidate = np.asarray(candidate_proba, dtype=np.float64)
    inputs = dataset.inputs
    n_classes = len(labels)
    expected_shape = (len(inputs), n_classes)
    if reference.shape != expected_shape or candidate.shape != expected_shape:
        raise ValueError(
            f"probabilities must have shape {expected_shape}, got {reference.shape} and "
            f"{candidate.shape}"
        )
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    methods: list[ExplainMethod] = list(dict.fromkeys(settings.methods))
    indices = select_instances(inputs, count=settings.instances, seed=seed) if methods else []
    total = len(indices)
    if progress is not None:
        progress("explain", 0, total)
    if not indices:
        return {}, {}
    mask_token = reference_mask_token(evaluator) if settings.masking == "mask_token" else None
    targets = {
        index: explained_targets(
            settings,
            reference_proba=reference,
            candidate_proba=candidate,
            gold=dataset.labels,
            index=index,
        )
        for index in indices
    }

    def explain_row(predict: PredictFunction, index: int) -> dict[str, InstanceAttributions]:
        features = WordFeatures.from_input(inputs[index])
        return {
            method: explain_instance(
                features,
                predict,
                method=method,
                settings=settings,
                n_classes=n_classes,
                reference_target=targets[index][0],
                candidate_target=targets[index][1],
                seed=instance_seed(seed, index, method, 0),
                rerun_seed=instance_seed(seed, index, method, 1) if settings.noise_floor else None,
                mask_token=mask_token,
            )
            for method in methods
        }

    results = _run_in_lockstep(
        explain_row,
        indices,
        joint_predict(evaluator),
        workers=workers,
        progress=progress,
        should_cancel=should_cancel,
    )

    explanations: dict[int, Explanation] = {}
    between: dict[str, list[dict[str, float]]] = {method: [] for method in methods}
    floor: dict[str, list[dict[str, float]]] = {method: [] for method in methods}
    for index in indices:
        features = WordFeatures.from_input(inputs[index])
        per_method: dict[str, Attributions] = {}
        instance_alignment: dict[str, dict[str, float | None]] = {}
        for method, attributions in results[index].items():
            metrics = alignment_metrics(
                attributions.reference, attributions.candidate, top_k=settings.top_k
            )
            between[method].append(metrics)
            instance_alignment[method] = dict(metrics)
            rerun = attributions.reference_rerun
            if rerun is not None:
                floor[method].append(
                    alignment_metrics(attributions.reference, rerun, top_k=settings.top_k)
                )
            per_method[method] = Attributions(
                reference=attributions.reference.tolist(),
                candidate=attributions.candidate.tolist(),
                reference_rerun=None if rerun is None else rerun.tolist(),
            )
        explanations[index] = Explanation(
            words=list(features.words),
            segments=list(features.segments),
            # With target="own_prediction" the candidate's class may differ; this names the
            # reference's (the document has one field).
            target=labels[targets[index][0]],
            lime=per_method.get("lime"),
            shap=per_method.get("shap"),
            alignment=instance_alignment,
        )

    alignment: dict[str, MethodAlignment] = {
        method: MethodAlignment(
            **_summaries(between[method], seed=seed),
            top_k=settings.top_k,
            n_instances=total,
            settings=_method_settings(method, settings),
            noise_floor=AlignmentMetrics(**_summaries(floor[method], seed=seed))
            if floor[method]
            else None,
        )
        for method in methods
    }
    return alignment, explanations


class LockstepBatcher:
    """Merges the requests of several explaining threads into one evaluator call per step.

    Each of `slots` threads explains its own instances and sends its requests through
    `predict(slot, inputs)`, which blocks until every still-active slot has sent one; the
    last to arrive then makes a single call with all requests concatenated in slot order and
    hands each its rows. Bigger calls let the evaluator sort and batch across instances, and
    because every step merges exactly one request per active slot, in slot order, the
    sequence of calls — and so every result, even of a model whose outputs depend on batch
    composition — is the same on every run. A slot with no more work calls `retire(slot)`.
    """

    def __init__(self, predict: PredictFunction, *, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self._predict = predict
        self._active = slots
        self._condition = threading.Condition()
        self._requests: dict[int, list[TextInput]] = {}
        self._results: dict[int, NDArray[np.float64] | BaseException] = {}
        self._step = 0

    def predict(self, slot: int, inputs: list[TextInput]) -> NDArray[np.float64]:
        with self._condition:
            if slot in self._requests:
                raise RuntimeError(f"slot {slot} sent a second request in one step")
            self._requests[slot] = list(inputs)
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
        merged = [value for slot in slots for value in self._requests[slot]]
        try:
            outputs = self._predict(merged)
            start = 0
            for slot in slots:
                stop = start + len(self._requests[slot])
                self._results[slot] = outputs[start:stop]
                start = stop
        except BaseException as error:  # every waiting slot must learn of it, not just one
            for slot in slots:
                self._results[slot] = error
        self._requests.clear()
        self._step += 1
        self._condition.notify_all()


_SLOT_DONE = object()


def _run_in_lockstep(
    task: Callable[[PredictFunction, int], dict[str, InstanceAttributions]],
    indices: Sequence[int],
    predict: PredictFunction,
    *,
    workers: int,
    progress: Callable[[str, int, int], None] | None,
    should_cancel: Callable[[], bool] | None,
) -> dict[int, dict[str, InstanceAttributions]]:
    """Run `task(predict, index)` over `indices` on `workers` threads merged by a batcher.

    Slot s takes `indices[s::workers]`, in order, so which requests meet in a step never
    depends on timing. Progress and `should_cancel` run on the calling thread only, after each
    finished instance; on cancellation the slots finish their current instance and stop.
    """
    if should_cancel is not None and should_cancel():
        raise AuditCancelledError("audit cancelled before explaining instances")
    slots = min(workers, len(indices))
    batcher = LockstepBatcher(predict, slots=slots)
    events: queue.Queue[tuple[int, object]] = queue.Queue()
    stop = threading.Event()

    def work(slot: int) -> None:
        def slot_predict(inputs: list[TextInput]) -> NDArray[np.float64]:
            return batcher.predict(slot, inputs)

        try:
            for index in indices[slot::slots]:
                if stop.is_set():
                    break
                try:
                    events.put((index, task(slot_predict, index)))
                except BaseException as error:
                    events.put((index, error))
                    break
        finally:
            batcher.retire(slot)
            events.put((-1, _SLOT_DONE))

    threads = [
        threading.Thread(target=work, args=(slot,), name=f"explain-{slot}", daemon=True)
        for slot in range(slots)
    ]
    for thread in threads:
        thread.start()
    results: dict[int, dict[str, InstanceAttributions]] = {}
    failure: BaseException | None = None
    cancelled = False
    finished = 0
    while finished < slots:
        index, payload = events.get()
        if payload is _SLOT_DONE:
            finished += 1
        elif isinstance(payload, BaseException):
            failure = failure or payload
            stop.set()
        elif failure is None:
            results[index] = cast(dict[str, InstanceAttributions], payload)
            try:
                if progress is not None:
                    progress("explain", len(results), len(indices))
                if not stop.is_set() and should_cancel is not None and should_cancel():
                    cancelled = True
                    stop.set()
            except BaseException as error:  # a failing callback still lets the slots wind down
                failure = error
                stop.set()
    for thread in threads:
        thread.join()
    if failure is not None:
        raise failure
    if cancelled:
        raise AuditCancelledError("audit cancelled while explaining instances")
    return results
