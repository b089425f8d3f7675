"""explain_and_align on the tiny trained BERT through the real BatchingEvaluator."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import TinyAssets
from tests.tiny_models import BINARY_LABELS, NEGATIVE_WORDS, POSITIVE_WORDS
from trustdiff.config import DatasetSpec, ExplainSettings
from trustdiff.datasets import read_dataset
from trustdiff.explain import explain_and_align
from trustdiff.inference import BatchingEvaluator, ModelRunner, load_model_runner
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
    evaluator: BatchingEvaluator, tiny_assets: TinyAssets, settings: ExplainSettings
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
        progress=None,
        should_cancel=None,
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
