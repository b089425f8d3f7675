"""The command line: exit codes 0/1/2, the printed summary, the files it writes."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import types
from pathlib import Path
from typing import get_args

import pyarrow.parquet as pq
import pytest

from tests.conftest import TinyAssets
from tests.tiny_models import sentiment_rows, write_dataset
from trustdiff.cli import build_parser, config_from_args, environment_defaults, main
from trustdiff.config import (
    AuditConfig,
    Binning,
    CheckSetting,
    DatasetFormat,
    GateSettings,
    Sampling,
    Transform,
)
from trustdiff.config_files import load_gate_settings
from trustdiff.errors import ConfigError
from trustdiff.remote_cli import _request_options
from trustdiff.result import AuditResult


def _audit_args(
    assets: TinyAssets, out: Path, *extra: str, candidate: str = "reference"
) -> list[str]:
    return [
        "audit",
        "--reference", str(assets.reference),
        "--candidate", str(assets.model_root / candidate),
        "--dataset", str(assets.dataset),
        "--bootstrap", "100",
        "--explain-instances", "0",
        "--device", "cpu",
        "--out", str(out),
        *extra,
    ]  # fmt: skip


def _gate_lines(printed: str) -> dict[str, str]:
    """Gate table rows by check name: the lines between "gate" and the verdict."""
    lines = printed.splitlines()
    table = lines[lines.index("gate") + 2 :]
    return {line.split()[0]: line for line in table if line.startswith("  ") and line.split()}


def test_a_passing_audit_exits_0_and_prints_the_summary(
    tiny_assets: TinyAssets, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nested" / "result.json"
    assert main(_audit_args(tiny_assets, out)) == 0
    printed = capsys.readouterr()
    rows = _gate_lines(printed.out)
    assert list(rows) == [
        "accuracy_drop", "macro_f1_drop", "agreement", "ece_increase", "brier_increase",
        "negative_flip_rate",
    ]  # fmt: skip
    assert all(row.endswith("PASS") for row in rows.values())
    assert "verdict: PASS (6 of 6 checks passed)" in printed.out
    assert "predict 48/48" in printed.err  # plain progress lines when stderr is no terminal
    result = AuditResult.model_validate_json(out.read_text())
    assert result.gate.passed


def test_a_failing_gate_exits_1(
    tiny_assets: TinyAssets, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gate = tmp_path / "gate.yaml"
    gate.write_text("agreement: 1.01  # unattainable\nece_increase: {judged_on: interval}\n")
    out = tmp_path / "result.json"
    args = _audit_args(
        tiny_assets,
        out,
        "--candidate-transform", "int8-dynamic",
        "--dtype", "bfloat16",
        "--gate", str(gate),
    )  # fmt: skip
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert "verdict: FAIL" in printed
    agreement_line = next(
        line for line in printed.splitlines() if "agreement " in line and ">=" in line
    )
    assert agreement_line.rstrip().endswith("FAIL")
    result = AuditResult.model_validate_json(out.read_text())
    assert result.manifest.candidate.transform == "int8-dynamic"
    assert result.manifest.device == "cpu"
    # The reference computes in the requested dtype; int8-dynamic always in float32.
    assert result.manifest.reference.dtype == "bfloat16"
    assert result.manifest.candidate.dtype == "float32"
    ece = next(check for check in result.gate.checks if check.name == "ece_increase")
    assert ece.judged_on == "interval"
    assert ece.threshold == 0.02  # the default, kept under the partial override


def test_slices_and_the_tails_are_summarised(
    tiny_assets: TinyAssets, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {**row, "source": "forum" if index % 2 else "web"}
        for index, row in enumerate(sentiment_rows(48, seed=7))
    ]
    dataset = write_dataset(tmp_path / "sliced.csv", rows)
    args = _audit_args(tiny_assets, tmp_path / "result.json", candidate="perturbed")
    args[args.index("--dataset") + 1] = str(dataset)
    args += ["--slices", "source", "--min-slice-size", "20"]
    main(args)
    printed = capsys.readouterr().out
    assert re.search(r"^flip rates: negative \d\.\d{4} \[", printed, re.M)
    assert re.search(r"^KL\(ref \|\| cand\): mean \d\.\d{4} .* p99 \d", printed, re.M)
    assert re.search(r"^  SmoothECE +\d\.\d{4} +\d\.\d{4} +[-+]\d", printed, re.M)
    slices_line = next(line for line in printed.splitlines() if line.startswith("lowest slice"))
    assert "(slices of at least 20 rows)" in slices_line
    result = AuditResult.model_validate_json((tmp_path / "result.json").read_text())
    assert result.slices is not None
    assert {item.value for item in result.slices.slices if item.column == "source"} == {
        "forum",
        "web",
    }
    assert result.manifest.config["slices"] == {"columns": ["source"], "min_slice_size": 20}


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--dataset", "missing.jsonl", "dataset file .* does not exist"),
        ("--candidate", "other-labels", "label spaces differ"),
        ("--bins", "0", "n_bins"),
        ("--explain-methods", "lime,gradcam", "methods"),
    ],
)
def test_errors_exit_2_with_one_line(
    tiny_assets: TinyAssets,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: str,
    value: str,
    message: str,
) -> None:
    if option == "--candidate":
        value = str(tiny_assets.model_root / value)
    args = _audit_args(tiny_assets, tmp_path / "result.json", "--quiet")
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("error: ")
    assert re.search(message, err)
    assert not (tmp_path / "result.json").exists()


def test_debug_shows_the_traceback(
    tiny_assets: TinyAssets, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _audit_args(tiny_assets, tmp_path / "r.json", "--debug")
    args[args.index("--dataset") + 1] = str(tmp_path / "missing.jsonl")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "DatasetNotFoundError" in err


def test_report_is_rendered_by_the_report_module(
    tiny_assets: TinyAssets,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = types.ModuleType("trustdiff.report")
    fake.render_report = lambda result: f"<html>{result.gate.passed}</html>"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "trustdiff.report", fake)
    report = tmp_path / "report.html"
    assert main(_audit_args(tiny_assets, tmp_path / "r.json", "--report", str(report))) == 0
    assert report.read_text() == "<html>True</html>"


@pytest.mark.parametrize("with_text", [False, True])
def test_rows_file_holds_every_row_text_only_when_asked(
    tiny_assets: TinyAssets,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    with_text: bool,
) -> None:
    rows = tmp_path / "out" / "rows.parquet"
    extra = ["--rows", str(rows)] + (["--rows-text"] if with_text else [])
    assert main(_audit_args(tiny_assets, tmp_path / "r.json", *extra)) == 0
    assert f"rows: {rows}" in capsys.readouterr().out
    table = pq.read_table(rows)
    assert table.num_rows == 48
    assert ("text" in table.column_names) is with_text
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["instances"] == []
    assert document["rows"]["count"] == 48
    assert document["rows"]["text"] is with_text


def test_rows_text_without_a_rows_file_is_refused_before_the_audit(
    tiny_assets: TinyAssets, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_audit_args(tiny_assets, tmp_path / "r.json", "--rows-text")) == 2
    assert "give --rows FILE too" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_usage_errors_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "--reference", "x"]) == 2
    assert "required" in capsys.readouterr().err
    assert main(["audit", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "exit status" in help_text
    assert "--candidate-transform" in help_text
    assert main([]) == 2


def test_schema_prints_the_result_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["required"]) >= {"manifest", "parity", "calibration", "gate", "instances"}


def test_gate_file_overrides_merge_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "gate.json"
    path.write_text(
        json.dumps({"gate": {"agreement": 0.9, "lime_jaccard_margin": {"enabled": False}}})
    )
    settings = load_gate_settings(str(path))
    assert settings.agreement.threshold == 0.9
    assert settings.agreement.judged_on == "value"
    assert not settings.lime_jaccard_margin.enabled
    assert settings.lime_jaccard_margin.threshold == 0.15
    assert settings.accuracy_drop.threshold == 0.01


def test_gate_file_sets_the_gate_wide_settings_too(tmp_path: Path) -> None:
    path = tmp_path / "gate.yaml"
    path.write_text("gate: {relative_to_twin: false, alignment_minimum: 0.6, agreement: 0.9}\n")
    settings = load_gate_settings(
        str(path), base=GateSettings(accuracy_drop=CheckSetting(threshold=0.005))
    )
    assert settings.relative_to_twin is False
    assert settings.alignment_minimum == 0.6
    assert settings.agreement.threshold == 0.9
    assert settings.accuracy_drop.threshold == 0.005


def test_submit_gate_file_merges_over_the_options_files_gate(tmp_path: Path) -> None:
    # As `audit` lays --gate over the --config file's gate, `submit` lays it over --options'.
    options, gate = tmp_path / "options.yaml", tmp_path / "gate.yaml"
    options.write_text("gate: {accuracy_drop: {threshold: 0.005}, relative_to_twin: false}\n")
    gate.write_text("agreement: 0.9\n")
    submit = ["submit", "--reference", "r", "--candidate", "c", "--dataset", "d"]
    args = build_parser().parse_args([*submit, "--options", str(options), "--gate", str(gate)])
    request_gate = _request_options(args)["gate"]
    assert request_gate["accuracy_drop"]["threshold"] == 0.005
    assert request_gate["relative_to_twin"] is False
    assert request_gate["agreement"]["threshold"] == 0.9
    options.write_text("gate: {accuracy_drop: {threshold: high}}\n")
    with pytest.raises(ConfigError, match=r"options file .*gate: accuracy_drop\.threshold"):
        _request_options(args)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("accuracy: 0.1\n", "unknown check 'accuracy'.*gate-wide settings: alignment_minimum"),
        ("alignment_minimum: 2\n", "alignment_minimum: Input should be less than or equal to 1"),
        ("relative_to_twin: {enabled: false}\n", "relative_to_twin"),
        ("agreement: yes\n", "must be a number or a mapping"),
        ("agreement: {judged_on: median}\n", "judged_on"),
        ("- 1\n", "must hold a mapping"),
        ("agreement: [\n", "neither JSON nor YAML"),
    ],
)
def test_bad_gate_files_raise(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "gate.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        load_gate_settings(str(path))


def _choices(flag: str) -> list[str]:
    audit = next(
        parser
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
        for name, parser in action.choices.items()
        if name == "audit"
    )
    action = next(action for action in audit._actions if flag in action.option_strings)
    return list(action.choices or ())


@pytest.mark.parametrize(
    ("flag", "values"),
    [
        ("--reference-transform", get_args(Transform)),
        ("--candidate-transform", get_args(Transform)),
        ("--format", get_args(DatasetFormat)),
        ("--sampling", get_args(Sampling)),
        ("--binning", get_args(Binning)),
    ],
)
def test_flag_choices_are_the_config_types_values(flag: str, values: tuple[str, ...]) -> None:
    assert _choices(flag) == list(values)


def _parsed_config(*argv: str) -> AuditConfig:
    return config_from_args(build_parser().parse_args(["audit", *argv, "--out", "r.json"]))


def test_a_config_file_reaches_options_without_flags_and_flags_override_it(
    tmp_path: Path,
) -> None:
    config_file = tmp_path / "audit.yaml"
    config_file.write_text(
        "reference: {path: models/bert}\n"
        "candidate: {path: models/bert, transform: int8-dynamic}\n"
        "dataset: {path: dev.jsonl, limit: 40}\n"
        "seed: 3\n"
        "calibration: {n_bootstrap: 50, confidence_level: 0.9}\n"
        "explain: {masking: mask_token, target: gold, shap_algorithm: permutation,"
        " noise_floor: false}\n"
        "gate: {agreement: {threshold: 0.9, judged_on: interval}}\n"
    )
    gate_file = tmp_path / "gate.yaml"
    gate_file.write_text("agreement: 0.97\n")
    config = _parsed_config(
        "--config", str(config_file), "--seed", "5", "--candidate", "models/tiny",
        "--gate", str(gate_file),
    )  # fmt: skip
    assert config.explain.masking == "mask_token"
    assert config.explain.target == "gold"
    assert config.explain.shap_algorithm == "permutation"
    assert config.explain.noise_floor is False
    assert config.calibration.confidence_level == 0.9
    assert config.calibration.n_bootstrap == 50  # no --bootstrap given: the file's value
    assert config.seed == 5  # the flag wins over the file
    # --candidate replaces the path only; the file's transform stays
    assert config.candidate.path == "models/tiny"
    assert config.candidate.transform == "int8-dynamic"
    assert config.dataset.limit == 40
    assert config.gate.agreement.threshold == 0.97  # --gate merges over the file's gate
    assert config.gate.agreement.judged_on == "interval"


def test_a_switch_sets_its_field_and_its_negation_overrides_the_file(tmp_path: Path) -> None:
    required = ("--reference", "a", "--candidate", "b", "--dataset", "d.jsonl")
    assert _parsed_config(*required).compile is False
    assert _parsed_config(*required, "--compile").compile is True
    config_file = tmp_path / "audit.yaml"
    config_file.write_text("compile: true\n")
    assert _parsed_config(*required, "--config", str(config_file)).compile is True
    assert _parsed_config(*required, "--config", str(config_file), "--no-compile").compile is False


def test_without_a_config_file_flags_give_the_old_defaults() -> None:
    config = _parsed_config("--reference", "a", "--candidate", "b", "--dataset", "d.jsonl")
    assert config == AuditConfig(
        reference={"path": "a"}, candidate={"path": "b"}, dataset={"path": "d.jsonl"}
    )


@pytest.mark.parametrize(
    ("content", "flags", "match"),
    [
        ("dataset: {path: d.jsonl}\ncandidate: {path: b}\n", [], "--reference is required"),
        ("reference: models/bert\n", ["--reference", "a"], "'reference' must be a mapping"),
        (
            "reference: {path: a}\ncandidate: {path: b}\ndataset: {path: d}\ncolour: red\n",
            [],
            "colour: Extra inputs are not permitted",
        ),
        ("- reference\n", [], "must hold a mapping"),
    ],
)
def test_bad_config_files_raise(tmp_path: Path, content: str, flags: list[str], match: str) -> None:
    config_file = tmp_path / "audit.yaml"
    config_file.write_text(content)
    with pytest.raises(ConfigError, match=match):
        _parsed_config("--config", str(config_file), *flags)


def test_an_audit_runs_from_a_config_file(
    tiny_assets: TinyAssets, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "audit.json"
    config_file.write_text(
        json.dumps(
            {
                "reference": {"path": str(tiny_assets.reference)},
                "candidate": {"path": str(tiny_assets.reference)},
                "dataset": {"path": str(tiny_assets.dataset), "limit": 16},
                "calibration": {"n_bootstrap": 20},
                "explain": {"instances": 0, "masking": "mask_token"},
                "device": "cpu",
            }
        )
    )
    out = tmp_path / "result.json"
    args = ["audit", "--config", str(config_file), "--bootstrap", "30", "--out", str(out)]
    assert main([*args, "--quiet"]) == 0
    config = AuditResult.model_validate_json(out.read_text()).manifest.config
    assert config["explain"]["masking"] == "mask_token"  # type: ignore[index]
    assert config["calibration"]["n_bootstrap"] == 30  # type: ignore[index]
    assert "16 of 48 rows" in capsys.readouterr().out


def test_missing_models_without_a_config_file_exit_2(
    tiny_assets: TinyAssets, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["audit", "--dataset", str(tiny_assets.dataset), "--out", str(tmp_path / "r.json")]
    assert main(args) == 2
    assert "--reference is required" in capsys.readouterr().err


def test_environment_defaults_are_set_only_inside_the_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TRUSTDIFF_TEST_UNSET", raising=False)
    monkeypatch.setenv("TRUSTDIFF_TEST_SET", "user")
    with environment_defaults(TRUSTDIFF_TEST_UNSET="error", TRUSTDIFF_TEST_SET="error"):
        assert os.environ["TRUSTDIFF_TEST_UNSET"] == "error"
        assert os.environ["TRUSTDIFF_TEST_SET"] == "user"  # the user's choice is kept
    assert "TRUSTDIFF_TEST_UNSET" not in os.environ
    assert os.environ["TRUSTDIFF_TEST_SET"] == "user"


def test_a_twin_is_audited_judged_against_and_cached(
    tiny_assets: TinyAssets,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("TRUSTDIFF_CACHE_DIR", str(cache))
    out = tmp_path / "result.json"
    args = _audit_args(tiny_assets, out, "--twin", str(tiny_assets.twin), candidate="perturbed")
    first_status = main(args)
    first = capsys.readouterr().out
    assert f"twin:      {tiny_assets.twin}\n" in first
    assert "twin delta" in first and "twin agreement" in first
    for row in _gate_lines(first).values():
        assert " twin " in row, row  # the rule says it is relative to the twin
    assert list(cache.glob("twin/*.json")), "the environment variable names the cache folder"
    assert main(args) == first_status
    second = capsys.readouterr().out
    assert "(figures from the cache)" in second
    result = AuditResult.model_validate_json(out.read_text())
    assert result.manifest.twin_cache is not None and result.manifest.twin_cache.hit
    # --cache-dir overrides the environment; --no-cache reads none.
    other = tmp_path / "other-cache"
    main([*args, "--cache-dir", str(other)])
    assert list(other.glob("twin/*.json"))
    main([*args, "--no-cache"])
    capsys.readouterr()
    assert not AuditResult.model_validate_json(out.read_text()).manifest.twin_cache.hit  # type: ignore[union-attr]
