"""explain_and_align on the tiny trained BERT through the real BatchingEvaluator."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from tests.conftest import TinyAssets
from tests.tiny_models import BINARY_LABELS, NEGATIVE_WORDS, POSITIVE_WORDS
from trustdiff.config import DatasetSpec, ExplainSettings
from trustdiff.datasets import read_dataset
from trustdiff.explain import explain_and_align
from trustdiff.inference import BatchingEvaluator, ModelRunner, TextInput, load_model_runner
from trustdiff.metrics.alignment import ALIGNMENT_METRICS, top_k_features
from trustdiff.result import Explanation, MethodAlignment

SENTIMENT = set(POSITIVE_WORDS) | set(NEGATIVE_WORDS)
SETTINGS = ExplainSettings(
    instances=4, lime_samples=80, shap_max_evals=80, top_k=3, masking="mask_token"
)


@pytest.fixture(scope="module")
def runners(tiny_assets: TinyAssets) -> tuple[ModelRunner, ModelRunner]:
    reference = load_model_runner(tiny_assets.reference, transform=None, device="cpu")
    perturbed = load_model_runner(tiny_assets.perturbed, transform=None, device="cpu")
    return reference, perturbed


def run(
    evaluator: BatchingEvaluator,
    tiny_assets: TinyAssets,
    settings: ExplainSettings,
    *,
    workers: int = 4,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[dict[str, MethodAlignment], dict[int, Explanation]]:
    data = read_dataset(
        tiny_assets.dataset, DatasetSpec(path="sentiment.jsonl"), labels=list(BINARY_LABELS)
    )
    reference, candidate = evaluator.predict_proba(data.inputs)
    return explain_and_align(
        evaluator,
        data,
        reference_proba=reference,
        candidate_proba=candidate,
        settings=settings,
        labels=list(BINARY_LABELS),
        seed=0,
        progress=progress,
        should_cancel=None,
        workers=workers,
    )


def test_tiny_bert_reference_against_perturbed(
    runners: tuple[ModelRunner, ModelRunner], tiny_assets: TinyAssets
) -> None:
    evaluator = BatchingEvaluator(list(runners), batch_size=32)
    alignment, explanations = run(evaluator, tiny_assets, SETTINGS)
    assert set(alignment) == {"lime", "shap"}
    for method_alignment in alignment.values():
        assert method_alignment.noise_floor is not None
        for name in ALIGNMENT_METRICS:
            assert getattr(method_alignment, name).n == 4
    # The tiny model was trained to follow the sentiment words: the explanations find them.
    hits = 0
    for explanation in explanations.values():
        assert explanation.shap is not None and explanation.lime is not None
        assert len(explanation.shap.reference) == len(explanation.words)
        top = top_k_features(np.array(explanation.shap.reference), k=1)[0]
        hits += explanation.words[top] in SENTIMENT
    assert hits >= 3
    # Perturbations repeat within and across methods and runs: the cache absorbs them.
    stats = evaluator.stats
    assert stats.unique_inputs_forwarded < stats.requested_inputs


class SendAheadSwitch:
    """A `BatchingEvaluator` that can hide its cache from the explainers (nothing is then sent
    ahead) and counts the calls that reached the models."""

    def __init__(self, evaluator: BatchingEvaluator, *, send_ahead: bool) -> None:
        self.evaluator = evaluator
        self.send_ahead = send_ahead
        self.forwarding_calls = 0

    @property
    def runners(self) -> list[ModelRunner]:
        return self.evaluator.runners

    @property
    def cache_size(self) -> int:
        return self.evaluator.cache_size if self.send_ahead else 0

    def predict_proba(
        self, inputs: Sequence[TextInput], *, runners: Sequence[int] | None = None
    ) -> list[np.ndarray]:
        forwarded = self.evaluator.stats.unique_inputs_forwarded
        result = self.evaluator.predict_proba(inputs, runners=runners)
        self.forwarding_calls += self.evaluator.stats.unique_inputs_forwarded > forwarded
        return result


def explained_with_and_without_sending_ahead(
    runners: tuple[ModelRunner, ModelRunner], tiny_assets: TinyAssets, settings: ExplainSettings
) -> tuple[SendAheadSwitch, SendAheadSwitch]:
    """The evaluators of two runs, without and with inputs sent ahead, after checking that
    both gave every method's attributions equal to float32 rounding (batches differ)."""
    outcomes = {}
    for send_ahead in (False, True):
        evaluator = SendAheadSwitch(BatchingEvaluator(list(runners)), send_ahead=send_ahead)
        # Two workers for four instances: without sending ahead, two rounds of calls.
        outcome = run(evaluator, tiny_assets, settings, workers=2)  # type: ignore[arg-type]
        outcomes[send_ahead] = (outcome, evaluator)
    (before, plain), (after, ahead) = outcomes[False], outcomes[True]
    assert set(after[1]) == set(before[1])
    for index, explanation in after[1].items():
        for method in settings.methods:
            expected, actual = getattr(before[1][index], method), getattr(explanation, method)
            assert expected is not None and actual is not None
            for field in ("reference", "candidate", "reference_rerun"):
                # float32 forwards of the same input in other batches round differently.
                np.testing.assert_allclose(
                    getattr(actual, field), getattr(expected, field), rtol=1e-6, atol=1e-8
                )
    return plain, ahead


def test_lime_samples_sent_ahead_change_no_attribution_and_save_calls(
    runners: tuple[ModelRunner, ModelRunner], tiny_assets: TinyAssets
) -> None:
    settings = SETTINGS.model_copy(update={"methods": ("lime",)})
    plain, ahead = explained_with_and_without_sending_ahead(runners, tiny_assets, settings)
    # Ahead: the dataset, then one call per model selection (first run, re-run); the
    # explainers' own calls all find their inputs in the cache. Without: two per round.
    assert ahead.forwarding_calls == 3
    assert plain.forwarding_calls == 5
    stats, plain_stats = ahead.evaluator.stats, plain.evaluator.stats
    assert stats.unique_inputs_forwarded == plain_stats.unique_inputs_forwarded
    assert stats.batches < plain_stats.batches


def test_partition_rounds_sent_ahead_change_no_attribution_and_save_calls(
    runners: tuple[ModelRunner, ModelRunner], tiny_assets: TinyAssets
) -> None:
    plain, ahead = explained_with_and_without_sending_ahead(runners, tiny_assets, SETTINGS)
    # Partition's rounds no limit cuts short went ahead with LIME's samples: the
    # explainers' own calls forward only the rounds their outputs choose.
    assert ahead.forwarding_calls < plain.forwarding_calls
    stats, plain_stats = ahead.evaluator.stats, plain.evaluator.stats
    # The same forwards, in fewer batches: an input both models' runs send is forwarded for
    # both in one call (counted once) where the runs each forwarded it for their model.
    assert stats.real_tokens == plain_stats.real_tokens
    assert stats.unique_inputs_forwarded < plain_stats.unique_inputs_forwarded
    assert stats.batches < plain_stats.batches


def test_a_small_cache_sends_lime_samples_ahead_wave_by_wave(
    runners: tuple[ModelRunner, ModelRunner], tiny_assets: TinyAssets
) -> None:
    settings = SETTINGS.model_copy(update={"methods": ("lime",)})
    # Up to 2 × 80 distinct LIME inputs per instance, and half of 400 is for those: several
    # waves.
    evaluator = SendAheadSwitch(BatchingEvaluator(list(runners), cache_size=400), send_ahead=True)
    events: list[tuple[str, int, int]] = []
    _, explanations = run(
        evaluator,  # type: ignore[arg-type]
        tiny_assets,
        settings,
        progress=lambda *event: events.append(event),
    )
    assert len(explanations) == 4
    # The dataset, then per wave its first runs' and its re-runs' inputs, and nothing else:
    # the explainers' own calls find everything in the cache.
    waves, odd = divmod(evaluator.forwarding_calls - 1, 2)
    assert waves > 1 and odd == 0
    assert [done for _, done, _ in events] == [0, 1, 2, 3, 4]
    assert {total for _, _, total in events} == {4}


def test_tiny_bert_against_itself_aligns_perfectly(
    runners: tuple[ModelRunner, ModelRunner], tiny_assets: TinyAssets
) -> None:
    reference, _ = runners
    settings = SETTINGS.model_copy(update={"instances": 2, "noise_floor": False})
    alignment, explanations = run(BatchingEvaluator([reference, reference]), tiny_assets, settings)
    for method_alignment in alignment.values():
        assert method_alignment.noise_floor is None
        for name in ALIGNMENT_METRICS:
            assert getattr(method_alignment, name).mean == pytest.approx(1.0)
    for explanation in explanations.values():
        assert explanation.lime is not None
        assert explanation.lime.reference == explanation.lime.candidate


def test_run_audit_fills_the_alignment_section(tiny_assets: TinyAssets) -> None:
    """The engine's own entry point: alignment for both methods, noise floor beside it."""
    from trustdiff.audit import run_audit
    from trustdiff.config import AuditConfig, CalibrationSettings, CheckpointSpec
    from trustdiff.result import dump_result

    config = AuditConfig(
        reference=CheckpointSpec(path="reference"),
        candidate=CheckpointSpec(path="perturbed"),
        dataset=DatasetSpec(path="sentiment.jsonl"),
        calibration=CalibrationSettings(n_bootstrap=50),
        explain=ExplainSettings(instances=3, lime_samples=40, shap_max_evals=40, top_k=3),
        device="cpu",
    )
    events: list[tuple[str, int, int]] = []
    result = run_audit(
        config,
        model_root=tiny_assets.model_root,
        data_root=tiny_assets.data_root,
        progress=lambda *event: events.append(event),
    )
    assert set(result.alignment) == {"lime", "shap"}
    for method_alignment in result.alignment.values():
        assert method_alignment.jaccard_at_k.n == 3
        assert method_alignment.noise_floor is not None
    explained = [instance for instance in result.instances if instance.explanations]
    assert len(explained) == 3
    assert ("explain", 3, 3) in events
    assert '"noise_floor"' in dump_result(result)
