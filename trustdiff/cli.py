"""The `trustdiff` command line: run an audit, print its verdict, export the result schema."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import IO, Any, get_args

import yaml
from pydantic import ValidationError

from trustdiff import __version__
from trustdiff.config import (
    AuditConfig,
    CalibrationSettings,
    CheckpointSpec,
    CheckSetting,
    DatasetSpec,
    Dtype,
    ExplainSettings,
    GateSettings,
    Transform,
)
from trustdiff.errors import ConfigError, TrustdiffError
from trustdiff.formatting import TERMINAL, format_interval, format_number
from trustdiff.remote_cli import register as register_remote_commands
from trustdiff.result import AuditResult, GateCheck, dump_result, result_json_schema
from trustdiff.threads import configure_cpu_threads

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

# Packages that add subcommands to `trustdiff` publish `register(subparsers)` here.
COMMANDS_ENTRY_POINT_GROUP = "trustdiff.commands"

_AUDIT_EPILOG = """\
exit status:
  0  the gate passed      1  the gate failed      2  any error (one line on stderr)

examples:
  # a quantized candidate needs no folder of its own
  trustdiff audit --reference models/bert --candidate models/bert \\
      --candidate-transform int8-dynamic --dataset data/dev.jsonl --out result.json

  # a distilled model, CSV data with its own column names, stricter gate, HTML report
  trustdiff audit --reference models/bert --candidate models/distilbert \\
      --dataset dev.csv --text-field sentence --label-field gold \\
      --gate gate.yaml --out result.json --report report.html

gate file (JSON or YAML): any subset of the default checks, e.g.
  accuracy_drop: {threshold: 0.005, judged_on: interval}
  agreement: 0.97            # a bare number sets the threshold
  lime_jaccard_margin: {enabled: false}
"""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option; the epilog's examples keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # "(default: None)" on a required or unset option says nothing, and help text that
        # already names its default should not repeat it.
        help_text = action.help or ""
        if action.default is None or action.default is False or "default" in help_text:
            return help_text
        return super()._get_help_string(action)


# --- configuration files ------------------------------------------------------------------


def _load_mapping_file(path: str, *, what: str) -> dict[str, Any]:
    """A JSON or YAML file holding one mapping (YAML is a superset of JSON)."""
    try:
        content = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read {what} {path!r}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} {path!r} is neither JSON nor YAML: {error}") from error
    if not isinstance(content, dict):
        raise ConfigError(f"{what} {path!r} must hold a mapping, got {type(content).__name__}")
    return content


def load_gate_settings(path: str) -> GateSettings:
    """Default gate settings overridden by the checks a JSON/YAML file names.

    Each key is a check of `GateSettings`; its value is a mapping of `CheckSetting` fields
    (merged over that check's defaults) or a bare number (the threshold). A top-level `gate:`
    key may wrap the whole mapping.
    """
    overrides = _load_mapping_file(path, what="gate file")
    if set(overrides) == {"gate"} and isinstance(overrides["gate"], dict):
        overrides = overrides["gate"]
    defaults = GateSettings()
    merged: dict[str, CheckSetting] = {}
    for name, override in overrides.items():
        default = getattr(defaults, str(name), None)
        if not isinstance(default, CheckSetting):
            known = ", ".join(GateSettings.model_fields)
            raise ConfigError(f"gate file {path!r} names unknown check {name!r}; known: {known}")
        if isinstance(override, bool) or not isinstance(override, int | float | dict):
            raise ConfigError(
                f"gate file {path!r}: check {name!r} must be a number or a mapping, "
                f"got {override!r}"
            )
        fields = {"threshold": override} if isinstance(override, int | float) else override
        try:
            merged[name] = CheckSetting.model_validate({**default.model_dump(), **fields})
        except ValidationError as error:
            raise ConfigError(
                f"gate file {path!r}: check {name!r}: {_validation_summary(error)}"
            ) from error
    return defaults.model_copy(update=merged)


def load_label_mapping(path: str) -> dict[str, str]:
    """Candidate label name -> reference label name, from a JSON or YAML mapping."""
    content = _load_mapping_file(path, what="label map")
    return {str(key): str(value) for key, value in content.items()}


def _validation_summary(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'value'}: {item['msg']}"
        for item in error.errors()
    )


def config_from_args(args: argparse.Namespace) -> AuditConfig:
    """The `AuditConfig` the `audit` subcommand's options describe."""
    methods = tuple(method.strip() for method in args.explain_methods.split(",") if method.strip())
    try:
        return AuditConfig(
            reference=CheckpointSpec(path=args.reference, transform=args.reference_transform),
            candidate=CheckpointSpec(path=args.candidate, transform=args.candidate_transform),
            dataset=DatasetSpec(
                path=args.dataset,
                format=args.format,
                text_field=args.text_field,
                text_pair_field=args.text_pair_field,
                label_field=args.label_field,
                limit=args.limit,
                sampling=args.sampling,
            ),
            label_mapping=load_label_mapping(args.label_map) if args.label_map else None,
            calibration=CalibrationSettings(
                n_bins=args.bins, binning=args.binning, n_bootstrap=args.bootstrap
            ),
            explain=ExplainSettings.model_validate(
                {
                    "instances": args.explain_instances,
                    "methods": methods,
                    "lime_samples": args.lime_samples,
                    "shap_max_evals": args.shap_max_evals,
                    "top_k": args.top_k,
                }
            ),
            gate=load_gate_settings(args.gate) if args.gate else GateSettings(),
            seed=args.seed,
            device=args.device,
            dtype=args.dtype,
            batch_size=args.batch_size,
            max_length=args.max_length,
        )
    except ValidationError as error:
        raise ConfigError(f"invalid audit options: {_validation_summary(error)}") from error


# --- progress and summary -----------------------------------------------------------------


class StageProgress:
    """Progress of audit stages on a stream: a tqdm bar on a terminal, plain lines otherwise."""

    def __init__(self, stream: IO[str], *, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.interactive = enabled and stream.isatty()
        self._bar: Any = None
        self._stage: str | None = None
        self._started = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self._stage:
            self.close()
            self._stage = stage
            self._started = time.perf_counter()
            if self.interactive:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=stage, file=self.stream, leave=False)
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()
        elif done >= total:
            elapsed = time.perf_counter() - self._started
            print(f"trustdiff: {stage} {done}/{total} ({elapsed:.1f} s)", file=self.stream)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# The summary goes to any terminal: the shared number rules, in ASCII with four decimals.
_number = partial(format_number, style=TERMINAL)
_interval_text = partial(format_interval, style=TERMINAL)


def _check_row(check: GateCheck) -> list[str]:
    return [
        check.name,
        _number(check.value),
        f"{check.comparison} {check.threshold:.4f}",
        _interval_text(check.ci_low, check.ci_high),
        check.judged_on,
        "PASS" if check.passed else "FAIL",
    ]


def _table(rows: Sequence[Sequence[str]], *, right_aligned: Sequence[int] = ()) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if column in right_aligned else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def format_summary(result: AuditResult) -> str:
    """A plain-text summary: the audited pair, key metrics, every gate check and the verdict."""
    manifest, parity, calibration = result.manifest, result.parity, result.calibration

    def name(checkpoint: Any) -> str:
        return checkpoint.path + (f" [{checkpoint.transform}]" if checkpoint.transform else "")

    lines = [
        f"reference: {name(manifest.reference)}",
        f"candidate: {name(manifest.candidate)}",
        f"dataset:   {manifest.dataset.path} ({manifest.dataset.rows} of "
        f"{manifest.dataset.rows_in_file} rows)   device: {manifest.device}   "
        f"time: {manifest.timings.get('total', 0.0):.1f} s",
        "",
    ]
    metric_rows = [["metric", "reference", "candidate", "delta", "95% interval"]]
    metric_rows.append(
        [
            "accuracy",
            _number(parity.reference.accuracy),
            _number(parity.candidate.accuracy),
            _number(parity.accuracy_delta.value, signed=True),
            _interval_text(parity.accuracy_delta.ci_low, parity.accuracy_delta.ci_high),
        ]
    )
    metric_rows.append(
        [
            "macro-F1",
            _number(parity.reference.macro_f1),
            _number(parity.candidate.macro_f1),
            _number(parity.macro_f1_delta.value, signed=True),
            _interval_text(parity.macro_f1_delta.ci_low, parity.macro_f1_delta.ci_high),
        ]
    )
    for metric, label in (("ece", "ECE"), ("mce", "MCE"), ("brier", "Brier"), ("nll", "NLL")):
        delta = calibration.delta[metric]
        metric_rows.append(
            [
                label,
                _number(getattr(calibration.reference, metric)),
                _number(getattr(calibration.candidate, metric)),
                _number(delta.value, signed=True),
                _interval_text(delta.ci_low, delta.ci_high),
            ]
        )
    lines += _table(metric_rows, right_aligned=(1, 2, 3))
    lines += [
        "",
        f"agreement {parity.agreement:.4f}   kappa {parity.kappa:.4f}   "
        f"loyalty {parity.probability_loyalty:.4f}   flips: {parity.fixed} fixed, "
        f"{parity.broken} broken (McNemar p = {parity.mcnemar_p:.3g})",
    ]
    for method, alignment in result.alignment.items():
        floor = alignment.noise_floor
        floor_text = "" if floor is None else f"   noise floor {_number(floor.jaccard_at_k.mean)}"
        lines.append(
            f"{method} jaccard@{alignment.top_k} {_number(alignment.jaccard_at_k.mean)} "
            f"over {alignment.n_instances} instances{floor_text}"
        )
    lines += ["", "gate"]
    check_rows = [["check", "value", "rule", "interval", "judged", "result"]]
    check_rows += [_check_row(check) for check in result.gate.checks]
    lines += _table(check_rows, right_aligned=(1,))
    failed = sum(not check.passed for check in result.gate.checks)
    verdict = "PASS" if result.gate.passed else "FAIL"
    lines += [
        "",
        f"verdict: {verdict} ({len(result.gate.checks) - failed} of "
        f"{len(result.gate.checks)} checks passed)",
    ]
    return "\n".join(lines)


# --- subcommands --------------------------------------------------------------------------


def _audit_command(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # transformers' load-time chatter would bury the summary; errors still surface.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    from trustdiff.audit import run_audit

    progress = StageProgress(sys.stderr, enabled=not args.quiet)
    try:
        result = run_audit(config, progress=progress)
    finally:
        progress.close()
    out.write_text(dump_result(result) + "\n", encoding="utf-8")
    if args.report:
        from trustdiff.report import render_report

        report = Path(args.report)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(render_report(result), encoding="utf-8")
    print(format_summary(result))
    print(f"result: {out}" + (f"   report: {args.report}" if args.report else ""))
    return EXIT_PASSED if result.gate.passed else EXIT_FAILED


def _schema_command(args: argparse.Namespace) -> int:
    print(json.dumps(result_json_schema(), indent=2))
    return EXIT_PASSED


def _add_audit_parser(subparsers: Any) -> None:
    calibration_defaults = CalibrationSettings()
    explain_defaults = ExplainSettings()
    dataset_defaults = DatasetSpec(path="-")
    audit_defaults = AuditConfig(
        reference=CheckpointSpec(path="-"), candidate=CheckpointSpec(path="-"),
        dataset=dataset_defaults,
    )  # fmt: skip
    parser = subparsers.add_parser(
        "audit",
        help="audit a candidate checkpoint against its reference",
        description=(
            "Audit a compressed CANDIDATE text classifier against its REFERENCE on a labelled "
            "dataset: prediction parity, explanation alignment (LIME, SHAP) and calibration, "
            "judged by a gate. Writes the result document (JSON) and prints a summary."
        ),
        epilog=_AUDIT_EPILOG,
        formatter_class=_HelpFormatter,
    )
    models = parser.add_argument_group("models")
    models.add_argument(
        "--reference", required=True, metavar="PATH", help="reference checkpoint folder"
    )
    models.add_argument(
        "--candidate", required=True, metavar="PATH", help="candidate checkpoint folder"
    )
    models.add_argument(
        "--reference-transform",
        choices=get_args(Transform),
        help="transform applied to the reference at load time",
    )
    models.add_argument(
        "--candidate-transform",
        choices=get_args(Transform),
        help="transform applied to the candidate at load time (int8-dynamic runs on CPU)",
    )
    models.add_argument(
        "--label-map",
        metavar="FILE",
        help="JSON/YAML mapping candidate label -> reference label, when their names differ",
    )
    models.add_argument("--device", default=audit_defaults.device, help="auto, cpu, cuda, cuda:N")
    models.add_argument(
        "--dtype",
        choices=get_args(Dtype),
        default=audit_defaults.dtype,
        help="compute dtype of the models (auto: bfloat16 on CUDA, float32 on CPU)",
    )
    models.add_argument(
        "--batch-size",
        type=int,
        default=audit_defaults.batch_size,
        help="inputs per forward pass (larger on a GPU)",
    )
    models.add_argument(
        "--max-length",
        type=int,
        default=audit_defaults.max_length,
        help="truncate inputs to this many tokens",
    )

    data = parser.add_argument_group("dataset")
    data.add_argument("--dataset", required=True, metavar="FILE", help="JSONL, CSV or TSV file")
    data.add_argument(
        "--format", choices=["jsonl", "csv", "tsv"], help="file format (default: from suffix)"
    )
    data.add_argument(
        "--text-field", default=dataset_defaults.text_field, help="column of the text"
    )
    data.add_argument("--text-pair-field", help="second text of sentence-pair tasks")
    data.add_argument(
        "--label-field", default=dataset_defaults.label_field, help="gold label (name or id)"
    )
    data.add_argument("--limit", type=int, metavar="N", help="audit at most N rows")
    data.add_argument(
        "--sampling",
        choices=["head", "random"],
        default=dataset_defaults.sampling,
        help="with --limit: the first N rows, or a seeded random sample",
    )
    data.add_argument(
        "--seed",
        type=int,
        default=audit_defaults.seed,
        metavar="S",
        help="seed of sampling, bootstrap and explanations",
    )

    calibration = parser.add_argument_group("calibration")
    calibration.add_argument(
        "--bins",
        type=int,
        default=calibration_defaults.n_bins,
        metavar="M",
        help="reliability bins",
    )
    calibration.add_argument(
        "--binning",
        choices=["equal_width", "equal_mass"],
        default=calibration_defaults.binning,
        help="equal-width bins ((m-1)/M, m/M], or equal-mass groups",
    )
    calibration.add_argument(
        "--bootstrap",
        type=int,
        default=calibration_defaults.n_bootstrap,
        metavar="N",
        help="paired bootstrap resamples for every interval (0: no intervals)",
    )

    explain = parser.add_argument_group("explanations")
    explain.add_argument(
        "--explain-instances",
        type=int,
        default=explain_defaults.instances,
        metavar="N",
        help="instances explained with each method (0: skip explanations)",
    )
    explain.add_argument(
        "--explain-methods",
        default=",".join(explain_defaults.methods),
        metavar="LIST",
        help="comma-separated: lime, shap",
    )
    explain.add_argument(
        "--lime-samples",
        type=int,
        default=explain_defaults.lime_samples,
        help="perturbed texts per LIME explanation",
    )
    explain.add_argument(
        "--shap-max-evals",
        type=int,
        default=explain_defaults.shap_max_evals,
        help="model evaluations per SHAP explanation",
    )
    explain.add_argument(
        "--top-k",
        type=int,
        default=explain_defaults.top_k,
        metavar="K",
        help="size of the top-word sets compared (jaccard@K, ...)",
    )

    output = parser.add_argument_group("gate and output")
    output.add_argument("--gate", metavar="FILE", help="JSON/YAML overrides of gate checks")
    output.add_argument("--out", required=True, metavar="FILE", help="result document (JSON)")
    output.add_argument("--report", metavar="FILE", help="also write the HTML report")
    output.add_argument("--quiet", action="store_true", help="no progress on stderr")
    output.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.set_defaults(func=_audit_command)


def build_parser() -> argparse.ArgumentParser:
    """The `trustdiff` parser; every subcommand sets `func(args) -> int`."""
    parser = argparse.ArgumentParser(
        prog="trustdiff",
        description=(
            "Can this compressed model replace its original, and be trusted the same way? "
            "trustdiff compares predictions, explanations and calibration of a reference and "
            "a candidate text classifier and returns one verdict."
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"trustdiff {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_audit_parser(subparsers)
    schema = subparsers.add_parser(
        "schema",
        help="print the JSON Schema of the result document",
        description="Print the JSON Schema of the result document that `audit --out` writes.",
    )
    schema.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    schema.set_defaults(func=_schema_command)
    register_remote_commands(subparsers)
    _add_plugin_commands(subparsers)
    return parser


def _add_plugin_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Subcommands other installed packages publish in the `trustdiff.commands` entry points.

    Each entry point names a `register(subparsers)` callable; the engine knows nothing else
    about them. One that fails to load is reported and skipped: `audit` must keep working.
    """
    for entry_point in sorted(entry_points(group=COMMANDS_ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            register = entry_point.load()
        except Exception as error:
            print(
                f"warning: commands from {entry_point.value!r} are unavailable: {error}",
                file=sys.stderr,
            )
            continue
        register(subparsers)


def _one_line(error: BaseException) -> str:
    if isinstance(error, TrustdiffError):
        message = error.message
    elif isinstance(error, ValidationError):
        message = _validation_summary(error)
    else:
        message = f"{type(error).__name__}: {error}"
    return " ".join(message.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 pass, 1 gate failed, 2 error)."""
    # Before anything imports torch: OpenMP reads its settings once, at load time.
    configure_cpu_threads()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:
        # argparse exits 0 for --help/--version and 2 for a usage error, after printing.
        code = exit_request.code
        return code if isinstance(code, int) else (EXIT_PASSED if code is None else EXIT_ERROR)
    debug = bool(getattr(args, "debug", False))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
