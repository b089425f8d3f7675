"""The twin: the reference retrained with another seed, audited by the same code, cached."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TinyAssets
from trustdiff.audit import run_audit
from trustdiff.config import (
    AuditConfig,
    CalibrationSettings,
    CheckpointSpec,
    DatasetSpec,
    ExplainSettings,
)
from trustdiff.metrics.alignment import ALIGNMENT_METRICS
from trustdiff.report import render_report
from trustdiff.result import AuditResult, dump_result, result_json_schema
from trustdiff.summary import format_summary
from trustdiff.twin_cache import TwinCache

EXPLAIN = ExplainSettings(instances=4, lime_samples=40, shap_max_evals=40, top_k=3)


def _config(assets: TinyAssets, candidate: str, twin: str | None, **options: Any) -> AuditConfig:
    return AuditConfig(
        reference=CheckpointSpec(path="reference"),
        candidate=CheckpointSpec(path=candidate),
        twin=None if twin is None else CheckpointSpec(path=twin),
        dataset=DatasetSpec(path=assets.dataset.name),
        explain=options.pop("explain", EXPLAIN),
        calibration=CalibrationSettings(n_bootstrap=30),
        device="cpu",
        **options,
    )


def _audit(assets: TinyAssets, config: AuditConfig, **options: Any) -> AuditResult:
    return run_audit(config, model_root=assets.model_root, data_root=assets.data_root, **options)


@pytest.fixture(scope="module")
def identical_with_twin(tiny_assets: TinyAssets) -> AuditResult:
    return _audit(tiny_assets, _config(tiny_assets, "reference", "twin"))


def test_an_identical_candidate_passes_every_check_with_zero_deltas(
    tiny_assets: TinyAssets, identical_with_twin: AuditResult
) -> None:
    without_twin = _audit(tiny_assets, _config(tiny_assets, "reference", None))
    for result, rules in (
        (identical_with_twin, {"twin"}),
        (without_twin, {"absolute", "noise_floor"}),
    ):
        assert result.gate.passed
        assert {check.judged_relative_to for check in result.gate.checks} == rules
        parity, calibration = result.parity, result.calibration
        assert parity.accuracy_delta.value == 0.0 and parity.macro_f1_delta.value == 0.0
        assert parity.agreement == 1.0
        assert all(delta.value == 0.0 for delta in calibration.delta.values())
        lime, shap = result.alignment["lime"], result.alignment["shap"]
        # LIME is judged like for like: exactly the floor's distribution.
        assert lime.noise_floor is not None and not lime.noise_floor.deterministic
        for name in ALIGNMENT_METRICS:
            assert getattr(lime, name) == getattr(lime.noise_floor, name)
        # Partition SHAP is deterministic: no floor, the shared figure, perfect agreement.
        assert shap.noise_floor is not None and shap.noise_floor.deterministic
        assert shap.jaccard_at_k.mean == 1.0
    drops = [c for c in identical_with_twin.gate.checks if c.name.endswith(("_drop", "_increase"))]
    assert all(check.value == 0.0 for check in drops)


def test_the_twin_is_audited_on_every_pillar_and_judged_against(
    identical_with_twin: AuditResult,
) -> None:
    result = identical_with_twin
    twin_parity, twin_calibration = result.parity.twin, result.calibration.twin
    assert twin_parity is not None and twin_calibration is not None
    assert twin_parity.accuracy_delta.ci_low is not None  # paired interval, same code
    assert set(twin_calibration.delta) == set(result.calibration.delta)
    assert result.gate.twin_identical is False
    for method, aligned in result.alignment.items():
        assert aligned.twin is not None, method
        assert aligned.twin.jaccard_at_k.n == aligned.jaccard_at_k.n
    agreement = next(c for c in result.gate.checks if c.name == "agreement")
    assert agreement.twin_value == twin_parity.agreement
    assert agreement.threshold == pytest.approx(twin_parity.agreement - 0.05)
    explained = [i for i in result.instances if i.explanations is not None]
    assert explained and all(i.twin_proba is not None for i in result.instances)
    for instance in explained:
        assert instance.explanations is not None and instance.explanations.lime is not None
        twin_scores = instance.explanations.lime.twin
        assert twin_scores is not None and len(twin_scores) == len(instance.explanations.words)
    assert result.manifest.twin is not None and result.manifest.twin.path == "twin"
    assert result.manifest.twin_cache is not None and not result.manifest.twin_cache.hit


def test_an_identical_twin_collapses_the_relative_rules_and_the_report_says_so(
    tiny_assets: TinyAssets,
) -> None:
    config = _config(tiny_assets, "perturbed", "reference")
    with_twin = _audit(tiny_assets, config)
    plain = _audit(tiny_assets, config.model_copy(update={"twin": None}))
    assert with_twin.gate.twin_identical is True
    for relative, absolute in zip(with_twin.gate.checks, plain.gate.checks, strict=True):
        assert relative.judged_relative_to == "twin"
        if relative.name == "shap_jaccard_margin":
            # Partition SHAP is deterministic: without a twin its rule is the absolute
            # minimum; an identical twin allows nothing beyond the margin below agreement 1.
            assert absolute.judged_relative_to == "absolute"
            assert relative.twin_value == 1.0 and relative.margin is not None
            assert relative.threshold == pytest.approx(1.0 - relative.margin)
            continue
        assert relative.threshold == pytest.approx(absolute.threshold), relative.name
        assert relative.passed == absolute.passed
    assert "allow no difference beyond each check" in render_report(with_twin)
    assert "no difference is allowed beyond each margin" in format_summary(with_twin)


def test_the_twin_cache_spares_every_model_call_and_gives_identical_figures(
    tiny_assets: TinyAssets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trustdiff import inference

    loads: Counter[str] = Counter()
    forwards: Counter[str] = Counter()
    load, forward = inference.load_model_runner, inference.ModelRunner.forward_tensors

    def counted_load(path: Path, **options: Any) -> inference.ModelRunner:
        loads[Path(path).name] += 1
        return load(path, **options)

    def counted_forward(self: inference.ModelRunner, tensors: Any) -> Any:
        forwards[self.path.name] += 1
        return forward(self, tensors)

    monkeypatch.setattr(inference, "load_model_runner", counted_load)
    monkeypatch.setattr(inference.ModelRunner, "forward_tensors", counted_forward)
    cache = TwinCache(tmp_path / "cache")
    config = _config(tiny_assets, "perturbed", "twin")
    first = _audit(tiny_assets, config, twin_cache=cache)
    assert loads["twin"] == 1 and forwards["twin"] > 0
    assert first.manifest.twin_cache is not None and not first.manifest.twin_cache.hit
    assert cache.path(first.manifest.twin_cache.key).is_file()
    loads.clear()
    forwards.clear()
    second = _audit(tiny_assets, config, twin_cache=cache)
    assert loads["twin"] == 0 and forwards["twin"] == 0
    assert forwards["reference"] > 0 and forwards["perturbed"] > 0
    assert second.manifest.twin_cache is not None and second.manifest.twin_cache.hit
    assert second.parity.twin == first.parity.twin
    assert second.calibration.twin == first.calibration.twin
    for method in first.alignment:
        assert second.alignment[method].twin == first.alignment[method].twin
    assert [i.twin_proba for i in second.instances] == [i.twin_proba for i in first.instances]
    for before, after in zip(first.instances, second.instances, strict=True):
        if before.explanations is None or after.explanations is None:
            assert before.explanations is after.explanations is None
            continue
        for method in ("lime", "shap"):
            scores_before = getattr(before.explanations, method)
            scores_after = getattr(after.explanations, method)
            assert scores_after.twin == scores_before.twin
            # The models forwarded again may round differently in other batches, no more.
            assert scores_after.candidate == pytest.approx(scores_before.candidate, abs=1e-6)
    # Other settings are another key: the twin is measured again.
    other = _audit(tiny_assets, config.model_copy(update={"seed": 1}), twin_cache=cache)
    assert other.manifest.twin_cache is not None and not other.manifest.twin_cache.hit


def test_the_document_schema_and_report_include_the_twin(
    identical_with_twin: AuditResult,
) -> None:
    schema = str(result_json_schema())
    for name in ("twin", "twin_cache", "judged_relative_to", "twin_value", "deterministic"):
        assert f"'{name}'" in schema
    reloaded = AuditResult.model_validate_json(dump_result(identical_with_twin))
    assert reloaded == identical_with_twin
    page = render_report(identical_with_twin)
    assert "Twin: the reference retrained with another seed" in page
    assert "relative to the twin" in page
    assert "deterministic under these settings" in page
    summary = format_summary(identical_with_twin)
    assert "twin:      twin" in summary and "twin delta" in summary
