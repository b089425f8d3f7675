"""The explanation methods by name: how each is called from the audit's settings, and described."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from trustdiff.config import ExplainSettings
from trustdiff.explain.attributions import WordAttributions
from trustdiff.explain.lime_explainer import explain_lime, lime_inputs
from trustdiff.explain.shap_explainer import explain_shap, partition_inputs
from trustdiff.explain.words import WordFeatures

if TYPE_CHECKING:
    from trustdiff.explain.words import PredictFunction
    from trustdiff.inference import TextInput

# features, settings, seed, mask token -> the inputs a method will send, in its order.
InputsAhead = Callable[[WordFeatures, ExplainSettings, int, "str | None"], "list[TextInput]"]


class Explain(Protocol):
    """Explain output `columns` of `predict` around `features`, configured by `settings`."""

    def __call__(
        self,
        features: WordFeatures,
        predict: PredictFunction,
        *,
        columns: Sequence[int],
        settings: ExplainSettings,
        seed: int,
        mask_token: str | None,
    ) -> WordAttributions: ...


@dataclass(frozen=True)
class Explainer:
    """One explanation method.

    `seed_id` enters every explanation seed of the method (`instance.instance_seed`), so two
    methods never share a random stream; it must never change, or seeded results would.
    `describe(settings)` gives the method's own settings for the result document.
    `perturbations_follow_outputs(settings)` is true when which perturbations are evaluated
    depends on the explained outputs (Partition SHAP expands the coalitions where any
    explained column changes most): a model explained beside another would not be explained
    as it would be alone, so each model gets a run of its own (`first_run_models`).
    `inputs_ahead(features, settings, seed, mask_token)`, when set, gives inputs one run will
    send whatever the models answer (all of LIME's samples; Partition SHAP's rounds that the
    evaluation limit does not cut short), so they can be evaluated ahead of the run in big
    calls whose results the run's own calls find in the cache.
    """

    name: str
    seed_id: int
    explain: Explain
    describe: Callable[[ExplainSettings], dict[str, object]]
    perturbations_follow_outputs: Callable[[ExplainSettings], bool] = lambda settings: False
    inputs_ahead: InputsAhead | None = None


def _explain_with_lime(
    features: WordFeatures,
    predict: PredictFunction,
    *,
    columns: Sequence[int],
    settings: ExplainSettings,
    seed: int,
    mask_token: str | None,
) -> WordAttributions:
    return explain_lime(
        features,
        predict,
        columns=columns,
        num_samples=settings.lime_samples,
        seed=seed,
        masking=settings.masking,
        mask_token=mask_token,
    )


def _lime_inputs_ahead(
    features: WordFeatures, settings: ExplainSettings, seed: int, mask_token: str | None
) -> list[TextInput]:
    return lime_inputs(
        features,
        num_samples=settings.lime_samples,
        seed=seed,
        masking=settings.masking,
        mask_token=mask_token,
    )


def _explain_with_shap(
    features: WordFeatures,
    predict: PredictFunction,
    *,
    columns: Sequence[int],
    settings: ExplainSettings,
    seed: int,
    mask_token: str | None,
) -> WordAttributions:
    return explain_shap(
        features,
        predict,
        columns=columns,
        algorithm=settings.shap_algorithm,
        max_evals=settings.shap_max_evals,
        seed=seed,
        masking=settings.masking,
        mask_token=mask_token,
    )


def _shap_inputs_ahead(
    features: WordFeatures, settings: ExplainSettings, seed: int, mask_token: str | None
) -> list[TextInput]:
    if settings.shap_algorithm != "partition":
        return []
    return partition_inputs(
        features, max_evals=settings.shap_max_evals, masking=settings.masking, mask_token=mask_token
    )


EXPLAINERS: dict[str, Explainer] = {
    explainer.name: explainer
    for explainer in (
        Explainer(
            name="lime",
            seed_id=0,
            explain=_explain_with_lime,
            describe=lambda settings: {"samples": settings.lime_samples},
            inputs_ahead=_lime_inputs_ahead,
        ),
        Explainer(
            name="shap",
            seed_id=1,
            explain=_explain_with_shap,
            describe=lambda settings: {
                "algorithm": settings.shap_algorithm,
                "max_evals": settings.shap_max_evals,
            },
            perturbations_follow_outputs=lambda settings: settings.shap_algorithm == "partition",
            inputs_ahead=_shap_inputs_ahead,
        ),
    )
}


def get_explainer(method: str) -> Explainer:
    """The registered explainer called `method`; `ValueError` naming it when there is none."""
    explainer = EXPLAINERS.get(method)
    if explainer is None:
        raise ValueError(f"unknown explanation method {method!r}; known: {sorted(EXPLAINERS)}")
    return explainer
