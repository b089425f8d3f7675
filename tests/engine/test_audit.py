"""run_audit end to end on the tiny checkpoints: itself, a perturbed copy, refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import TinyAssets
from tests.tiny_models import sentiment_rows, write_dataset
from trustdiff import inference
from trustdiff.audit import run_audit, validate_audit
from trustdiff.config import (
    AuditConfig,
    CalibrationSettings,
    CheckpointSpec,
    DatasetSpec,
    ExplainSettings,
    SliceSettings,
)
from trustdiff.errors import (
    AuditCancelledError,
    ConfigError,
    DatasetError,
    LabelMismatchError,
    PathOutsideRootError,
)
from trustdiff.result import (
    AuditResult,
    Histogram,
    MetricSummary,
    RowsSummary,
    dump_result,
)


def _config(candidate: str = "reference", **overrides: Any) -> AuditConfig:
    settings: dict[str, Any] = {
        "reference": CheckpointSpec(path="reference"),
        "candidate": CheckpointSpec(path=candidate),
        "dataset": DatasetSpec(path="sentiment.jsonl"),
        "calibration": CalibrationSettings(n_bootstrap=200),
        "explain": ExplainSettings(instances=0),
        "device": "cpu",
    }
    settings.update(overrides)
    return AuditConfig(**settings)


def _run(assets: TinyAssets, config: AuditConfig, **options: Any) -> AuditResult:
    return run_audit(config, model_root=assets.model_root, data_root=assets.data_root, **options)


@pytest.fixture(scope="module")
def self_audit(tiny_assets: TinyAssets) -> tuple[AuditResult, list[tuple[str, int, int]]]:
    calls: list[tuple[str, int, int]] = []
    result = _run(tiny_assets, _config(), progress=lambda *call: calls.append(call))
    return result, calls


@pytest.fixture(scope="module")
def perturbed_audit(
    tiny_assets: TinyAssets, tmp_path_factory: pytest.TempPathFactory
) -> tuple[AuditResult, Path]:
    rows_path = tmp_path_factory.mktemp("rows") / "rows.parquet"
    result = _run(tiny_assets, _config("perturbed"), rows_path=rows_path, rows_text=True)
    return result, rows_path


@pytest.fixture
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the cheap checks finished")

    monkeypatch.setattr(inference, "load_model_runner", refuse)


def test_a_compiled_audit_says_so_and_keys_its_caches_apart(tiny_assets: TinyAssets) -> None:
    from trustdiff.plan import reference_predictions_key
    from trustdiff.twin_cache import twin_cache_key

    eager_config = _config("perturbed")
    config = eager_config.model_copy(update={"compile": True})
    result = _run(tiny_assets, config)
    manifest = result.manifest
    assert manifest.config["compile"] is True
    assert manifest.reference.compiled and manifest.candidate.compiled
    eager = _run(tiny_assets, eager_config)
    assert not (eager.manifest.reference.compiled or eager.manifest.candidate.compiled)
    assert result.parity.agreement == eager.parity.agreement
    for name, delta in result.calibration.delta.items():
        assert delta.value == pytest.approx(eager.calibration.delta[name].value, abs=1e-5)
    # Compiled probabilities differ at float rounding: no cache serves one run to the other.
    keys = [
        reference_predictions_key(
            validate_audit(c, model_root=tiny_assets.model_root, data_root=tiny_assets.data_root),
            "fingerprint",
            device="cpu",
            dtype="auto",
        )
        for c in (eager_config, config)
    ]
    assert keys[0]["model"]["compiled"] is False and keys[1]["model"]["compiled"] is True
    assert len({json.dumps(key, sort_keys=True) for key in keys}) == 2
    twin_keys = {
        twin_cache_key(c, reference_fingerprint="r", twin_fingerprint="t", dataset_fingerprint="d",
                       device="cpu", version="v")
        for c in (eager_config, config)
    }  # fmt: skip
    assert len(twin_keys) == 2


def test_auditing_a_model_against_itself_finds_no_difference(
    self_audit: tuple[AuditResult, list],
) -> None:
    result, _ = self_audit
    assert result.parity.agreement == 1.0
    assert (result.parity.fixed, result.parity.broken) == (0, 0)
    assert result.parity.kappa == 1.0
    assert result.parity.probability_loyalty == 1.0
    assert result.parity.mcnemar_p == 1.0
    assert result.parity.accuracy_delta.value == 0.0
    for name, delta in result.calibration.delta.items():
        assert (delta.value, delta.ci_low, delta.ci_high) == (0.0, 0.0, 0.0), name
    assert result.gate.passed
    assert all(check.passed for check in result.gate.checks)
    assert result.alignment == {}


def test_the_document_is_complete_and_round_trips(self_audit: tuple[AuditResult, list]) -> None:
    result, _ = self_audit
    manifest = result.manifest
    assert manifest.reference.fingerprint == manifest.candidate.fingerprint
    assert manifest.labels == ["negative", "positive"]
    assert manifest.dataset.rows == manifest.dataset.rows_in_file == 48
    assert manifest.device == "cpu"
    assert manifest.reference.dtype == manifest.candidate.dtype == "float32"
    assert manifest.config["dtype"] == "auto"
    assert {"trustdiff", "torch", "transformers", "numpy"} <= set(manifest.versions)
    assert {"validate", "load", "predict", "metrics", "gate", "total"} <= set(manifest.timings)
    assert manifest.config["calibration"]["n_bootstrap"] == 200
    # Nothing was explained: no row is in the document, every row is counted in `rows`.
    assert result.instances == []
    assert result.rows == RowsSummary(count=48, flipped=0)
    assert result.schema_version == "2"
    assert AuditResult.model_validate_json(dump_result(result)) == result
    matrix = np.array(result.parity.disagreement_matrix)
    assert matrix.sum() == 48
    assert np.count_nonzero(matrix - np.diag(np.diag(matrix))) == 0


def test_progress_reports_every_stage_in_order(self_audit: tuple[AuditResult, list]) -> None:
    _, calls = self_audit
    stages = list(dict.fromkeys(stage for stage, _, _ in calls))
    assert stages == ["validate", "load", "predict", "metrics", "gate"]
    assert ("predict", 48, 48) in calls


def test_a_perturbed_candidate_reports_differences(
    perturbed_audit: tuple[AuditResult, Path],
) -> None:
    result, rows_path = perturbed_audit
    assert result.manifest.reference.fingerprint != result.manifest.candidate.fingerprint
    deltas = [abs(delta.value) for delta in result.calibration.delta.values()]
    assert result.parity.agreement < 1.0 or max(deltas) > 0.0
    assert result.parity.probability_loyalty < 1.0
    rows = pq.read_table(rows_path).to_pydict()
    assert not np.allclose(rows["reference_proba"], rows["candidate_proba"])


def test_every_row_outcome_is_in_the_rows_file(
    tiny_assets: TinyAssets, perturbed_audit: tuple[AuditResult, Path]
) -> None:
    result, rows_path = perturbed_audit
    rows = pq.read_table(rows_path).to_pydict()
    dataset = [json.loads(line) for line in tiny_assets.dataset.read_text().splitlines()]
    assert rows["index"] == list(range(48))
    assert rows["row_number"] == list(range(1, 49))
    assert rows["text"] == [row["text"] for row in dataset]
    assert rows["label"] == [row["label"] for row in dataset]
    reference = np.array(rows["reference_proba"])
    candidate = np.array(rows["candidate_proba"])
    labels = np.array(["negative", "positive"])
    assert rows["reference_prediction"] == labels[reference.argmax(axis=1)].tolist()
    assert rows["candidate_prediction"] == labels[candidate.argmax(axis=1)].tolist()
    assert rows["flipped"] == (reference.argmax(axis=1) != candidate.argmax(axis=1)).tolist()
    # The document's figures come from the same outcomes the file holds.
    gold = np.array([row["label"] == "positive" for row in dataset], dtype=int)
    accuracy = float((reference.argmax(axis=1) == gold).mean())
    assert result.parity.reference.accuracy == accuracy
    assert result.parity.agreement == 1.0 - sum(rows["flipped"]) / 48
    assert result.rows is not None
    assert (result.rows.count, result.rows.flipped, result.rows.text) == (
        48,
        sum(rows["flipped"]),
        True,
    )
    assert result.rows.sha256 == hashlib.sha256(rows_path.read_bytes()).hexdigest()
    assert "rows" in result.manifest.timings


def test_another_label_set_fails_before_any_model_loads(
    tiny_assets: TinyAssets, no_model_loading: None
) -> None:
    with pytest.raises(LabelMismatchError) as caught:
        _run(tiny_assets, _config("other-labels"))
    assert "['negative', 'positive']" in caught.value.message
    assert "['neg', 'neutral', 'pos']" in caught.value.message


def test_a_path_outside_the_model_root_fails_before_any_model_loads(
    tiny_assets: TinyAssets, no_model_loading: None
) -> None:
    with pytest.raises(PathOutsideRootError):
        _run(tiny_assets, _config("../data"))


def test_a_bad_dataset_row_fails_before_any_model_loads(
    tiny_assets: TinyAssets, no_model_loading: None
) -> None:
    bad = tiny_assets.data_root / "bad-row.jsonl"
    bad.write_text('{"text": "good", "label": "positive"}\n{"text": "x", "label": "meh"}\n')
    with pytest.raises(DatasetError) as caught:
        _run(tiny_assets, _config(dataset=DatasetSpec(path="bad-row.jsonl")))
    assert caught.value.row == 2


def test_validate_audit_resolves_and_aligns_without_loading(
    tiny_assets: TinyAssets, no_model_loading: None
) -> None:
    validated = validate_audit(
        _config("perturbed"), model_root=tiny_assets.model_root, data_root=tiny_assets.data_root
    )
    assert validated.candidate_path == (tiny_assets.model_root / "perturbed").resolve()
    assert validated.candidate_column_order == [0, 1]
    assert len(validated.dataset) == 48


def test_cancellation_stops_the_audit(tiny_assets: TinyAssets) -> None:
    stages: list[str] = []

    def progress(stage: str, done: int, total: int) -> None:
        stages.append(stage)

    with pytest.raises(AuditCancelledError):
        _run(tiny_assets, _config(), progress=progress, should_cancel=lambda: "load" in stages)
    assert "predict" not in stages


def _summary(value: float) -> MetricSummary:
    return MetricSummary(
        mean=value,
        median=value,
        ci_low=value,
        ci_high=value,
        n=2,
        histogram=Histogram(edges=[0.0, 1.0], counts=[2]),
    )


def test_explanations_are_requested_through_the_explain_package(
    tiny_assets: TinyAssets, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for the explainers checks the engine's side of the contract only: what each
    # block asks for, and that the block's attributions reach the document.
    import trustdiff.explain.runner as explain_runner
    from trustdiff.explain.instance import InstanceAttributions
    from trustdiff.explain.words import WordFeatures

    received: list[dict[str, Any]] = []

    def explain_rows(
        evaluator: Any, inputs: Any, indices: Any, **options: Any
    ) -> dict[int, dict[str, InstanceAttributions]]:
        received.append({**options, "indices": list(indices), "evaluator": evaluator})
        probabilities = evaluator.predict_proba([inputs[index] for index in indices])
        assert len(probabilities) == 2
        results = {}
        for index in indices:
            scores = np.linspace(1.0, 0.0, len(WordFeatures.from_input(inputs[index])))
            results[index] = {"lime": InstanceAttributions(scores, scores, None)}
        return results

    monkeypatch.setattr(explain_runner, "explain_rows", explain_rows)
    # Faithfulness needs the real explainers' evaluator calls; its own tests cover it.
    explain = ExplainSettings(instances=6, methods=("lime",), top_k=3, faithfulness=False)
    result = _run(tiny_assets, _config(explain=explain), block_instances=4)
    assert [len(call["indices"]) for call in received] == [4, 2]
    assert all(call["settings"] == explain and call["seed"] == 0 for call in received)
    assert all(call["n_classes"] == 2 for call in received)
    # Each block has an evaluator of its own.
    assert received[0]["evaluator"] is not received[1]["evaluator"]
    explained = [index for call in received for index in call["indices"]]
    assert [instance.index for instance in result.instances] == explained
    assert "lime_jaccard_margin" in [check.name for check in result.gate.checks]
    assert result.alignment["lime"].jaccard_at_k.mean == 1.0
    assert result.alignment["lime"].n_instances == 6
    assert result.instances[0].explanations is not None
    assert "explain" in result.manifest.timings


def test_an_audit_reports_beyond_the_averages(tiny_assets: TinyAssets, tmp_path: Path) -> None:
    rows = [
        {**row, "source": "forum" if index % 3 == 0 else "web"}
        for index, row in enumerate(sentiment_rows(48, seed=7))
    ]
    write_dataset(tmp_path / "sliced.csv", rows)
    config = _config(
        "perturbed",
        dataset=DatasetSpec(path="sliced.csv"),
        slices=SliceSettings(columns=("source",), min_slice_size=10),
        explain=ExplainSettings(
            instances=2, methods=("lime",), lime_samples=20, top_k=3, noise_floor=False
        ),
    )
    result = run_audit(config, model_root=tiny_assets.model_root, data_root=tmp_path)
    n = len(rows)

    assert result.parity.negative_flip_rate is not None
    assert result.parity.negative_flip_rate.value == pytest.approx(result.parity.broken / n)
    assert result.parity.positive_flip_rate is not None
    assert result.parity.positive_flip_rate.value == pytest.approx(result.parity.fixed / n)
    assert "negative_flip_rate" in [check.name for check in result.gate.checks]

    assert result.slices is not None
    assert result.slices.columns == ["source", "gold label", "length"]
    sources = {item.value: item for item in result.slices.slices if item.column == "source"}
    assert set(sources) == {"forum", "web"}
    assert sources["forum"].n == 16 and sources["forum"].judged
    assert [item.agreement.value for item in result.slices.slices] == sorted(
        item.agreement.value for item in result.slices.slices
    )

    assert result.divergence is not None
    assert 0 < len(result.divergence.most_divergent) <= 10
    assert result.calibration.smooth is not None
    assert result.calibration.smooth.delta.ci_low is not None
    assert result.exemplars is not None
    flipped = n - round(result.parity.agreement * n)
    assert sum(group.count for group in result.exemplars.groups) == flipped

    faithfulness = result.alignment["lime"].faithfulness
    assert faithfulness is not None and faithfulness.n_instances == 2
    explained = [item.explanations for item in result.instances if item.explanations]
    assert all(set(item.faithfulness["lime"]) == {"reference", "candidate"} for item in explained)
    AuditResult.model_validate_json(dump_result(result))


def test_a_slice_column_the_dataset_lacks_is_refused_before_loading(
    tiny_assets: TinyAssets, no_model_loading: None
) -> None:
    config = _config(slices=SliceSettings(columns=("language",)))
    with pytest.raises(ConfigError, match="slice column 'language' is not in the dataset"):
        _run(tiny_assets, config)
