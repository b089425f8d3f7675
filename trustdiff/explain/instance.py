"""One instance explained with one method: both models, the twin, the re-run; and which models
each run needs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from trustdiff.config import ExplainMethod, ExplainSettings
from trustdiff.explain.lockstep import ModelsPredict
from trustdiff.explain.registry import Explainer, get_explainer
from trustdiff.explain.words import WordFeatures

if TYPE_CHECKING:
    from trustdiff.explain.words import PredictFunction
    from trustdiff.inference import TextInput

REFERENCE, CANDIDATE, TWIN = 0, 1, 2


@dataclass(frozen=True)
class InstanceAttributions:
    """One method's attributions for one instance, each of shape (d,).

    `reference`, `candidate` and `twin` come from the first runs (seed A): one run on shared
    perturbations, or — when the method's perturbations follow the explained outputs — a
    run per model, each explained as it would be alone. `reference_rerun` is the reference
    explained alone with seed B.
    """

    reference: NDArray[np.float64]
    candidate: NDArray[np.float64]
    reference_rerun: NDArray[np.float64] | None
    twin: NDArray[np.float64] | None = None


def instance_seed(seed: int, index: int, method: ExplainMethod, run: int) -> int:
    """The explainer seed of (audit seed, dataset row, method, run); run 1 is the noise floor."""
    sequence = np.random.SeedSequence([seed, index, get_explainer(method).seed_id, run])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


def explain_instance(
    features: WordFeatures,
    predict: ModelsPredict,
    *,
    method: ExplainMethod,
    settings: ExplainSettings,
    n_classes: int,
    reference_target: int,
    candidate_target: int,
    seed: int,
    rerun_seed: int | None,
    mask_token: str | None,
    twin_target: int | None = None,
) -> InstanceAttributions:
    """Explain one instance with one method: both models, optionally the twin and a re-run.

    `predict(inputs, models)` returns the selected models' (n, K) probabilities side by side
    (model 0 the reference, 1 the candidate, 2 the twin). The first runs explain reference
    and candidate (and the twin, when `twin_target` is given) with `seed`, on the same
    perturbations unless they follow the outputs (`first_run_models`); the re-run explains
    the reference alone with `rerun_seed`, so only the reference is forwarded for it, and
    repeated perturbations are answered by the evaluator's cache.
    """
    explainer = get_explainer(method)
    target_of = {REFERENCE: reference_target, CANDIDATE: candidate_target}
    if twin_target is not None:
        target_of[TWIN] = twin_target

    def run(models: tuple[int, ...], run_seed: int) -> list[NDArray]:
        columns = tuple(
            position * n_classes + target_of[model] for position, model in enumerate(models)
        )
        return _scores(
            explainer,
            features,
            lambda inputs: predict(inputs, models),
            columns=columns,
            settings=settings,
            seed=run_seed,
            mask_token=mask_token,
        )

    first: dict[int, NDArray[np.float64]] = {}
    for models in first_run_models(method, settings, twin=twin_target is not None):
        first.update(zip(models, run(models, seed), strict=True))
    rerun = None if rerun_seed is None else run((REFERENCE,), rerun_seed)[0]
    return InstanceAttributions(
        reference=first[REFERENCE],
        candidate=first[CANDIDATE],
        reference_rerun=rerun,
        twin=first.get(TWIN),
    )


def _scores(
    explainer: Explainer,
    features: WordFeatures,
    predict: PredictFunction,
    *,
    columns: tuple[int, ...],
    settings: ExplainSettings,
    seed: int,
    mask_token: str | None,
) -> list[NDArray]:
    """One run of `explainer`: each explained column's attributions, shape (d,)."""
    attributions = explainer.explain(
        features, predict, columns=columns, settings=settings, seed=seed, mask_token=mask_token
    )
    return [attributions.scores_of(column) for column in columns]


def first_run_models(
    method: ExplainMethod, settings: ExplainSettings, *, twin: bool
) -> tuple[tuple[int, ...], ...]:
    """The model selections of an instance's seed-A runs, in the order they run.

    The models share one run on the same perturbations, unless the method's perturbations
    follow the explained outputs: then each model runs alone, so its attributions are what
    the method gives that model, whichever models it is audited beside. A deterministic
    method's re-run of the reference then repeats the reference's first run (its inputs
    answered by the evaluator's cache) and is recognised as deterministic.
    """
    models = (REFERENCE, CANDIDATE, TWIN) if twin else (REFERENCE, CANDIDATE)
    if get_explainer(method).perturbations_follow_outputs(settings):
        return tuple((model,) for model in models)
    return (models,)


@dataclass(frozen=True)
class RowExplainer:
    """Explains one dataset row with every method, on the predict function it is handed."""

    inputs: Sequence[TextInput]
    methods: Sequence[ExplainMethod]
    settings: ExplainSettings
    n_classes: int
    seed: int
    mask_token: str | None
    # Dataset row -> the (reference, candidate, twin or None) class explained there.
    targets: dict[int, tuple[int, int, int | None]]

    def __call__(self, predict: ModelsPredict, index: int) -> dict[str, InstanceAttributions]:
        features = WordFeatures.from_input(self.inputs[index])
        noise_floor = self.settings.noise_floor
        reference_target, candidate_target, twin_target = self.targets[index]
        return {
            method: explain_instance(
                features,
                predict,
                method=method,
                settings=self.settings,
                n_classes=self.n_classes,
                reference_target=reference_target,
                candidate_target=candidate_target,
                twin_target=twin_target,
                seed=instance_seed(self.seed, index, method, 0),
                rerun_seed=instance_seed(self.seed, index, method, 1) if noise_floor else None,
                mask_token=self.mask_token,
            )
            for method in self.methods
        }

    def inputs_ahead(self, index: int) -> dict[tuple[int, ...], list[TextInput]]:
        """The inputs row `index`'s runs will send whatever the models answer, each once,
        grouped by the models that will ask for it (LIME's samples, Partition SHAP's rounds
        that no limit cuts short).

        An input asked for by several runs goes with every model they need, so one call
        forwards, say, both models on SHAP's rounds (each model's own run) beside LIME's first
        samples, and the reference alone on the inputs only the re-run sends.
        """
        features = WordFeatures.from_input(self.inputs[index])
        twin = self.targets[index][2] is not None
        wanted: dict[TextInput, set[int]] = {}

        def want(inputs: list[TextInput], models: tuple[int, ...]) -> None:
            for value in inputs:
                wanted.setdefault(value, set()).update(models)

        for method in self.methods:
            inputs_ahead = get_explainer(method).inputs_ahead
            if inputs_ahead is None:
                continue
            seed = instance_seed(self.seed, index, method, 0)
            first = inputs_ahead(features, self.settings, seed, self.mask_token)
            for models in first_run_models(method, self.settings, twin=twin):
                want(first, models)
            if self.settings.noise_floor:
                rerun_seed = instance_seed(self.seed, index, method, 1)
                want(
                    inputs_ahead(features, self.settings, rerun_seed, self.mask_token), (REFERENCE,)
                )
        requests: dict[tuple[int, ...], list[TextInput]] = {}
        for value, askers in wanted.items():
            requests.setdefault(tuple(sorted(askers)), []).append(value)
        return requests
