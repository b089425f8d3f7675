"""The steps of a planned audit that load models: prediction shards and explanation blocks.

Each step starts from nothing but the plan (and, for a block, the probabilities the shards
computed) and returns a serialisable output, so it may run in another process than the step
before it. What a step computes never depends on where or after what it runs: each shard and
each block gets an evaluator of its own (no cache carried over from other rows), a shard's
prediction chunks start at the shard's first row, and every explained instance's seeds depend
on the audit seed and its row only.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from trustdiff.cache import PREDICTIONS, AuditCache
from trustdiff.dataset_cache import DatasetCache
from trustdiff.explain.instance import InstanceAttributions
from trustdiff.manifest import LoadedModel
from trustdiff.plan import AuditPlan, prediction_chunk_rows
from trustdiff.runner_cache import RunnerCache
from trustdiff.stages import CancelCheck, ProgressCallback, Stages
from trustdiff.validation import ValidatedAudit

if TYPE_CHECKING:
    from trustdiff.config import ExplainSettings
    from trustdiff.datasets import TextInput
    from trustdiff.explain.faithfulness import FaithfulnessByRow
    from trustdiff.inference import BatchingEvaluator, ModelRunner

MODELS = ("reference", "candidate", "twin")


@dataclass(frozen=True)
class ShardPredictions:
    """A prediction shard's output: every model's probabilities (rows, K) for the rows
    `[start, stop)`, reference label order; the twin's only when the plan loads the twin."""

    start: int
    stop: int
    reference: NDArray[np.float64]
    candidate: NDArray[np.float64]
    twin: NDArray[np.float64] | None
    # What the manifest says of each loaded model, by name in `MODELS`.
    models: dict[str, LoadedModel]
    timings: dict[str, float] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """An .npz archive (no pickle): the arrays, and the rest as a JSON string."""
        meta = {
            "start": self.start,
            "stop": self.stop,
            "models": {name: asdict(model) for name, model in self.models.items()},
            "timings": self.timings,
        }
        arrays: dict[str, Any] = {
            "meta": np.array(json.dumps(meta)),
            "reference": self.reference,
            "candidate": self.candidate,
        }
        if self.twin is not None:
            arrays["twin"] = self.twin
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ShardPredictions:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"]))
            return cls(
                start=meta["start"],
                stop=meta["stop"],
                reference=archive["reference"],
                candidate=archive["candidate"],
                twin=archive["twin"] if "twin" in archive.files else None,
                models={name: LoadedModel(**model) for name, model in meta["models"].items()},
                timings=meta["timings"],
            )


@dataclass(frozen=True)
class Probabilities:
    """Every dataset row's probabilities (n, K) per model, from all of a plan's shards."""

    reference: NDArray[np.float64]
    candidate: NDArray[np.float64]
    twin: NDArray[np.float64] | None

    @classmethod
    def of_shards(cls, plan: AuditPlan, shards: Sequence[ShardPredictions]) -> Probabilities:
        """The shards' rows joined in row order; `ValueError` unless they are the plan's."""
        ordered = sorted(shards, key=lambda shard: shard.start)
        ranges = [(shard.start, shard.stop) for shard in ordered]
        if ranges != [(rows.start, rows.stop) for rows in plan.shards]:
            raise ValueError(f"shards {ranges} are not the plan's {plan.shards}")

        def joined(name: str) -> NDArray[np.float64]:
            parts = [getattr(shard, name) for shard in ordered]
            return np.concatenate(parts).astype(np.float64, copy=False)

        twin = joined("twin") if plan.load_twin else None
        return cls(reference=joined("reference"), candidate=joined("candidate"), twin=twin)

    def targets(
        self, indices: Sequence[int], gold: Sequence[int], settings: ExplainSettings
    ) -> dict[int, tuple[int, int, int | None]]:
        """The (reference, candidate, twin) class explained at each row of `indices`."""
        from trustdiff.explain.runner import targets_by_row

        return targets_by_row(indices, self.reference, self.candidate, self.twin, gold, settings)


@dataclass(frozen=True)
class ExplainedBlock:
    """An explanation block's output: each explained row's attributions by method, and its
    faithfulness scores (empty unless the audit measures them)."""

    attributions: dict[int, dict[str, InstanceAttributions]]
    faithfulness: FaithfulnessByRow = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        """JSON text; floats written so that they read back bit for bit."""
        return json.dumps(
            {
                "attributions": {
                    str(index): {
                        method: _attributions_json(pair) for method, pair in by_method.items()
                    }
                    for index, by_method in self.attributions.items()
                },
                "faithfulness": {str(index): row for index, row in self.faithfulness.items()},
                "timings": self.timings,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> ExplainedBlock:
        document = json.loads(text)
        return cls(
            attributions={
                int(index): {method: _attributions_of(pair) for method, pair in by_method.items()}
                for index, by_method in document["attributions"].items()
            },
            faithfulness={int(index): row for index, row in document["faithfulness"].items()},
            timings=document["timings"],
        )


_ATTRIBUTION_FIELDS = [field.name for field in fields(InstanceAttributions)]


def _attributions_json(pair: InstanceAttributions) -> dict[str, list[float] | None]:
    values = {name: getattr(pair, name) for name in _ATTRIBUTION_FIELDS}
    return {name: None if value is None else value.tolist() for name, value in values.items()}


def _attributions_of(document: dict[str, Any]) -> InstanceAttributions:
    arrays = {
        name: None if document.get(name) is None else np.asarray(document[name], dtype=np.float64)
        for name in _ATTRIBUTION_FIELDS
    }
    return InstanceAttributions(**arrays)  # type: ignore[arg-type]


# --- the steps ------------------------------------------------------------------------------


def predict_shard(
    plan: AuditPlan,
    index: int,
    *,
    runners: RunnerCache,
    datasets: DatasetCache | None = None,
    cache: AuditCache | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> ShardPredictions:
    """Prediction shard `index` of `plan`: every model's probabilities for its rows.

    Models come from `runners` (loaded there once per process), the dataset from `datasets`
    when given (read there once per process, `validated_inputs`). With the reference's
    predictions in `cache` (`plan.reference_cached`), the reference is not run: its rows
    are read from the cache. `progress("predict", done, total)` counts this shard's rows.
    """
    stages = Stages(progress, should_cancel)
    rows = plan.shards[index]
    validated = validated_inputs(plan, datasets, stages)
    inputs = validated.dataset.inputs[rows.start : rows.stop]
    loaded = _load(plan, validated, runners, stages)
    cached = _cached_reference(plan, cache, validated)
    evaluator = _evaluator(
        validated, loaded, stages, without_reference=cached is not None, cache_size=0
    )
    probabilities = _predict(evaluator, inputs, batch_size=plan.config.batch_size, stages=stages)
    if cached is not None:
        probabilities = [cached[rows.start : rows.stop], *probabilities]
        stages.add_time("forward_without_reference", evaluator.stats.forward_seconds)
    else:
        stages.add_time("forward", evaluator.stats.forward_seconds)
    return ShardPredictions(
        start=rows.start,
        stop=rows.stop,
        reference=probabilities[0],
        candidate=probabilities[1],
        twin=probabilities[2] if plan.load_twin else None,
        models={name: LoadedModel.of(runner) for name, runner in loaded.items()},
        timings=stages.timings,
    )


def explain_block(
    plan: AuditPlan,
    probabilities: Probabilities,
    index: int,
    *,
    runners: RunnerCache,
    datasets: DatasetCache | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> ExplainedBlock:
    """Explanation block `index` of `plan`: its rows explained with every method (and the
    twin, when the plan loads it), and their faithfulness when the audit measures it. Models
    and the dataset come from `runners` and `datasets`, as in `predict_shard`.

    `progress("explain", done, total)` counts this block's instances.
    """
    from trustdiff.explain.faithfulness import faithfulness_of_rows
    from trustdiff.explain.runner import explain_rows

    stages = Stages(progress, should_cancel)
    indices = plan.blocks[index]
    validated = validated_inputs(plan, datasets, stages)
    config, dataset = plan.config, validated.dataset
    loaded = _load(plan, validated, runners, stages)
    evaluator = _evaluator(validated, loaded, stages)
    inputs = dataset.inputs
    targets = probabilities.targets(indices, dataset.labels, config.explain)
    with stages.stage("explain", total=len(indices)):
        results = explain_rows(
            evaluator,
            inputs,
            indices,
            targets=targets,
            settings=config.explain,
            n_classes=len(validated.labels),
            seed=config.seed,
            progress=stages.report,
            should_cancel=stages.should_cancel,
        )
        faithfulness = (
            faithfulness_of_rows(evaluator, results, inputs=inputs, targets=targets, config=config)
            if config.explain.faithfulness
            else {}
        )
    stages.add_time("forward", evaluator.stats.forward_seconds)
    return ExplainedBlock(attributions=results, faithfulness=faithfulness, timings=stages.timings)


# --- shared by the steps --------------------------------------------------------------------


def validated_inputs(
    plan: AuditPlan, datasets: DatasetCache | None, stages: Stages
) -> ValidatedAudit:
    """`plan.validate_inputs` in a step, its seconds added to the step's `validate` time: with
    no `datasets` (or a first read in this process) every step reads the whole file again."""
    started = time.perf_counter()
    validated = plan.validate_inputs(datasets)
    stages.add_time("validate", time.perf_counter() - started)
    return validated


def _load(
    plan: AuditPlan, validated: ValidatedAudit, runners: RunnerCache, stages: Stages
) -> dict[str, ModelRunner]:
    """The plan's models by name (the twin only when the plan measures it), from `runners`;
    a model that is the reference's folder and transform is the reference's runner."""
    config = plan.config
    reference, candidate = config.reference, config.candidate
    specs = {
        "reference": (validated.reference_path, reference.transform, plan.reference_fingerprint),
        "candidate": (validated.candidate_path, candidate.transform, plan.candidate_fingerprint),
    }
    if plan.load_twin and config.twin is not None and validated.twin_path is not None:
        specs["twin"] = (validated.twin_path, config.twin.transform, plan.twin_fingerprint or "")
    loaded: dict[str, ModelRunner] = {}
    with stages.stage("load", total=len(specs)):
        for done, (name, (path, transform, fingerprint)) in enumerate(specs.items()):
            if done:
                stages.report("load", done, len(specs))
            loaded[name] = runners.get(
                path,
                fingerprint=fingerprint,
                transform=transform,
                device=plan.device,
                dtype=plan.dtype,
                max_length=config.max_length,
                compile=config.compile,
            )
            # A compiled model compiles here, in the load stage, not in the first forwards.
            loaded[name].warm_up(validated.dataset.inputs[:2])
    return loaded


def _cached_reference(
    plan: AuditPlan, cache: AuditCache | None, validated: ValidatedAudit
) -> NDArray[np.float64] | None:
    """The reference's cached probabilities (n, K) when the plan found them, else None (also
    when the entry has gone since: the reference is then predicted)."""
    if not plan.reference_cached or cache is None or plan.reference_predictions_key is None:
        return None
    cached = cache.load_arrays(PREDICTIONS, plan.reference_predictions_key)
    if cached is None or cached["proba"].shape != (plan.rows, len(validated.labels)):
        return None
    return np.asarray(cached["proba"], dtype=np.float64)


def _evaluator(
    validated: ValidatedAudit,
    loaded: dict[str, ModelRunner],
    stages: Stages,
    *,
    without_reference: bool = False,
    cache_size: int | None = None,
) -> BatchingEvaluator:
    """A fresh evaluator for the loaded models (reference, candidate, then the twin when
    loaded), every model's columns in reference label order; `without_reference` leaves the
    reference out."""
    from trustdiff.inference import BatchingEvaluator

    models = [loaded["reference"], loaded["candidate"]]
    orders = [list(range(len(validated.labels))), validated.candidate_column_order]
    if "twin" in loaded and validated.twin_column_order is not None:
        models.append(loaded["twin"])
        orders.append(validated.twin_column_order)
    if without_reference:
        models, orders = models[1:], orders[1:]
    options: dict[str, Any] = {} if cache_size is None else {"cache_size": cache_size}
    return BatchingEvaluator(
        models,
        column_orders=orders,
        batch_size=validated.config.batch_size,
        should_cancel=stages.should_cancel,
        **options,
    )


def _predict(
    evaluator: BatchingEvaluator, inputs: list[TextInput], *, batch_size: int, stages: Stages
) -> list[NDArray[np.float64]]:
    """Every model's probabilities (n, K) for every input, reported chunk by chunk."""
    chunk_size = prediction_chunk_rows(batch_size)
    parts: list[list[NDArray[np.float64]]] = [[] for _ in evaluator.runners]
    with stages.stage("predict", total=len(inputs)):
        for start in range(0, len(inputs), chunk_size):
            for model_parts, part in zip(
                parts, evaluator.predict_proba(inputs[start : start + chunk_size]), strict=True
            ):
                model_parts.append(part)
            if start + chunk_size < len(inputs):
                stages.report("predict", start + chunk_size, len(inputs))
    n_classes = evaluator.n_classes
    return [
        np.concatenate(model_parts) if model_parts else np.empty((0, n_classes))
        for model_parts in parts
    ]
