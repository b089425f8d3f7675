"""The `trustdiff` command line: run an audit, print its verdict, export the result schema.

Process state the command line owns: `main` sets the process's CPU threading once, before
anything imports torch (`threads.configure_cpu_threads`, OpenMP variables the user has not
set), then parses and dispatches; `audit` sets `TRANSFORMERS_VERBOSITY=error` (unless the
user set it) only while the audit runs, through `environment_defaults`, and restores the
environment afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from trustdiff import __version__
from trustdiff.cache import AuditCache
from trustdiff.config import AuditConfig
from trustdiff.config_files import (
    load_config_file,
    load_gate_settings,
    load_label_mapping,
    validation_summary,
)
from trustdiff.errors import ConfigError, TrustdiffError
from trustdiff.explain.runner import DEFAULT_WORKERS
from trustdiff.plan import DEFAULT_BLOCK_INSTANCES
from trustdiff.remote_cli import register as register_remote_commands
from trustdiff.result import AuditResult, dump_result, result_json_schema
from trustdiff.summary import StageProgress, format_summary
from trustdiff.threads import configure_cpu_threads
from trustdiff.twin_cache import TwinCache, default_cache_dir

__all__ = ["build_parser", "config_from_args", "load_gate_settings", "main"]

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

  # with a retrained twin of the reference: every check is judged relative to it, and
  # its figures are cached (--cache-dir) for the next candidate
  trustdiff audit --reference models/bert --candidate models/distilbert \\
      --twin models/bert-seed2 --dataset data/dev.jsonl --out result.json

  # every option of the engine from a file; flags given as well override it
  trustdiff audit --config audit.yaml --candidate models/tinybert --out result.json

config file (JSON or YAML): any subset of the audit's settings, nested as in the result's
manifest.config, e.g.
  reference: {path: models/bert}
  dataset: {path: data/dev.jsonl, limit: 500}
  explain: {shap_algorithm: permutation, masking: mask_token, noise_floor: false}

gate file (JSON or YAML): any subset of the default checks and gate-wide settings, e.g.
  accuracy_drop: {threshold: 0.005, judged_on: interval}
  agreement: 0.97            # a bare number sets the threshold
  lime_jaccard_margin: {enabled: false}
  relative_to_twin: false    # with --twin: judge the plain thresholds
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


# --- flags that set AuditConfig fields ----------------------------------------------------


@dataclass(frozen=True)
class ConfigFlag:
    """An `audit` flag that sets one `AuditConfig` field, named by its dotted path.

    Its type, choices and shown default come from the field itself. `parse` turns the given
    text into the field's value after argparse is done (a file to read, a list to split), so
    its errors are one-line `ConfigError`s like every other bad option.
    """

    flag: str
    field: str
    help: str
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


def _at_least_one(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _split_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


# Group title -> its flags. Every other engine option is set through --config.
AUDIT_FLAGS: dict[str, tuple[ConfigFlag, ...]] = {
    "models": (
        ConfigFlag("--reference", "reference.path", "reference checkpoint folder", "PATH"),
        ConfigFlag("--candidate", "candidate.path", "candidate checkpoint folder", "PATH"),
        ConfigFlag(
            "--reference-transform",
            "reference.transform",
            "transform applied to the reference at load time",
        ),
        ConfigFlag(
            "--candidate-transform",
            "candidate.transform",
            "transform applied to the candidate at load time (int8-dynamic runs on CPU)",
        ),
        ConfigFlag(
            "--twin",
            "twin.path",
            "the reference's recipe retrained with another seed: audited too, and the gate "
            "judges the candidate relative to it",
            "PATH",
        ),
        ConfigFlag("--twin-transform", "twin.transform", "transform applied to the twin"),
        ConfigFlag(
            "--label-map",
            "label_mapping",
            "JSON/YAML mapping candidate label -> reference label, when their names differ",
            "FILE",
            parse=load_label_mapping,
        ),
        ConfigFlag("--device", "device", "auto, cpu, cuda, cuda:N"),
        ConfigFlag(
            "--dtype",
            "dtype",
            "compute dtype of the models (auto: bfloat16 on CUDA, float32 on CPU)",
        ),
        ConfigFlag(
            "--compile",
            "compile",
            "torch.compile the models before their first forward: fused kernels, meant for "
            "GPUs; int8-dynamic runners are never compiled",
        ),
        ConfigFlag("--batch-size", "batch_size", "inputs per forward pass (larger on a GPU)"),
        ConfigFlag("--max-length", "max_length", "truncate inputs to this many tokens"),
    ),
    "dataset": (
        ConfigFlag("--dataset", "dataset.path", "JSONL, CSV or TSV file", "FILE"),
        ConfigFlag("--format", "dataset.format", "file format (default: from suffix)"),
        ConfigFlag("--text-field", "dataset.text_field", "column of the text"),
        ConfigFlag(
            "--text-pair-field", "dataset.text_pair_field", "second text of sentence-pair tasks"
        ),
        ConfigFlag("--label-field", "dataset.label_field", "gold label (name or id)"),
        ConfigFlag("--limit", "dataset.limit", "audit at most N rows", "N"),
        ConfigFlag(
            "--sampling",
            "dataset.sampling",
            "with --limit: the first N rows, or a seeded random sample",
        ),
        ConfigFlag("--seed", "seed", "seed of sampling, bootstrap and explanations", "S"),
        ConfigFlag(
            "--slices",
            "slices.columns",
            "comma-separated categorical columns to report per slice, besides the gold label "
            "and text-length quartiles",
            "LIST",
            parse=_split_list,
        ),
        ConfigFlag(
            "--min-slice-size",
            "slices.min_slice_size",
            "slices with fewer rows are listed but never judged",
            "N",
        ),
    ),
    "calibration": (
        ConfigFlag("--bins", "calibration.n_bins", "reliability bins", "M"),
        ConfigFlag(
            "--binning",
            "calibration.binning",
            "equal-width bins ((m-1)/M, m/M], or equal-mass groups",
        ),
        ConfigFlag(
            "--bootstrap",
            "calibration.n_bootstrap",
            "paired bootstrap resamples for every interval (0: no intervals)",
            "N",
        ),
    ),
    "explanations": (
        ConfigFlag(
            "--explain-instances",
            "explain.instances",
            "instances explained with each method (0: skip explanations)",
            "N",
        ),
        ConfigFlag(
            "--explain-methods",
            "explain.methods",
            "comma-separated: lime, shap",
            "LIST",
            parse=_split_list,
        ),
        ConfigFlag(
            "--lime-samples", "explain.lime_samples", "perturbed texts per LIME explanation"
        ),
        ConfigFlag(
            "--shap-max-evals", "explain.shap_max_evals", "model evaluations per SHAP explanation"
        ),
        ConfigFlag(
            "--top-k", "explain.top_k", "size of the top-word sets compared (jaccard@K, ...)", "K"
        ),
    ),
}
# Without --config, these are required; with it, the file may name them instead.
_REQUIRED_FLAGS = ("--reference", "--candidate", "--dataset")


def config_field(path: str) -> FieldInfo:
    """The `AuditConfig` field at a dotted path, e.g. "calibration.n_bins"."""
    model: type[BaseModel] = AuditConfig
    *parents, name = path.split(".")
    for part in parents:
        # An optional section (the twin) is a section too.
        annotation = _value_type(model.model_fields[part])
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise ValueError(f"{part!r} in {path!r} is not a settings section")
        model = annotation
    return model.model_fields[name]


def _value_type(field: FieldInfo) -> Any:
    """The field's type without `| None`."""
    annotation = field.annotation
    if get_origin(annotation) in (Union, UnionType):
        members = [member for member in get_args(annotation) if member is not NoneType]
        if len(members) == 1:
            return members[0]
    return annotation


def _shown_default(field: FieldInfo) -> str | None:
    default = field.get_default(call_default_factory=True)
    if default is None or field.is_required():
        return None
    return ",".join(default) if isinstance(default, tuple) else str(default)


def _argument_options(option: ConfigFlag) -> dict[str, Any]:
    """argparse keywords for a flag: type and choices from its field, the default in its help.

    The argparse default stays None, so a flag the user did not give never overrides a
    value from --config; the field's default applies when neither names it.
    """
    field = config_field(option.field)
    value_type = _value_type(field)
    options: dict[str, Any] = {"help": option.help, "metavar": option.metavar}
    if value_type is bool:
        # --flag / --no-flag; neither given leaves the argparse default None, as above.
        options = {"help": option.help, "action": argparse.BooleanOptionalAction}
    elif option.parse is None and get_origin(value_type) is Literal:
        options["choices"] = list(get_args(value_type))
    elif option.parse is None and value_type in (int, float):
        options["type"] = value_type
    shown = _shown_default(field)
    if shown is not None and "default" not in option.help:
        options["help"] = f"{option.help} (default: {shown})"
    return options


def _set_field(values: dict[str, Any], path: str, value: Any) -> None:
    """Set `values[a][b]...` for the dotted path "a.b...", creating sections as needed."""
    *parents, name = path.split(".")
    section = values
    for part in parents:
        child = section.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config file: {part!r} must be a mapping, got {child!r}")
        section = child
    section[name] = value


def _has_field(values: dict[str, Any], path: str) -> bool:
    section: Any = values
    for part in path.split("."):
        if not isinstance(section, dict) or section.get(part) is None:
            return False
        section = section[part]
    return True


def config_from_args(args: argparse.Namespace) -> AuditConfig:
    """The `AuditConfig` the `audit` subcommand's options describe.

    Layers, each over the one before: the model's defaults, the --config file, the flags the
    user gave, then --gate's overrides of single checks.
    """
    values = load_config_file(args.config) if args.config else {}
    flags = [option for group in AUDIT_FLAGS.values() for option in group]
    for option in flags:
        given = getattr(args, option.dest)
        if given is not None:
            _set_field(values, option.field, option.parse(given) if option.parse else given)
    for option in flags:
        if option.flag in _REQUIRED_FLAGS and not _has_field(values, option.field):
            raise ConfigError(f"{option.flag} is required (or {option.field} in the --config file)")
    try:
        config = AuditConfig.model_validate(values)
    except ValidationError as error:
        raise ConfigError(f"invalid audit options: {validation_summary(error)}") from error
    if args.gate:
        config = config.model_copy(update={"gate": load_gate_settings(args.gate, base=config.gate)})
    return config


# --- subcommands --------------------------------------------------------------------------


@contextmanager
def environment_defaults(**defaults: str) -> Iterator[None]:
    """Set the variables the user has not set, for the duration of the block only."""
    added = [name for name in defaults if name not in os.environ]
    for name in added:
        os.environ[name] = defaults[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _write_report(result: Any, path: str) -> None:
    from trustdiff.report import render_report

    report = Path(path)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render_report(result), encoding="utf-8")


def _twin_cache(args: argparse.Namespace) -> TwinCache | None:
    if args.no_cache:
        return None
    return TwinCache(args.cache_dir or default_cache_dir())


def _audit_cache(args: argparse.Namespace) -> AuditCache | None:
    """The same folder as the twin's cache: one place to keep, clear or share."""
    if args.no_cache:
        return None
    return AuditCache(args.cache_dir or default_cache_dir())


def _audit_command(args: argparse.Namespace) -> int:
    if args.rows_text and not args.rows:
        raise ConfigError("--rows-text puts the texts in the --rows file: give --rows FILE too")
    config = config_from_args(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from trustdiff.audit import run_audit

    progress = StageProgress(sys.stderr, enabled=not args.quiet)
    # transformers' load-time chatter would bury the summary; errors still surface.
    with environment_defaults(TRANSFORMERS_VERBOSITY="error"):
        try:
            result = run_audit(
                config,
                progress=progress,
                twin_cache=_twin_cache(args),
                cache=_audit_cache(args),
                rows_path=args.rows,
                rows_text=args.rows_text,
                block_instances=args.block_instances,
                explain_processes=args.explain_processes,
            )
        finally:
            progress.close()
    out.write_text(dump_result(result) + "\n", encoding="utf-8")
    if args.report:
        _write_report(result, args.report)
    if args.mlflow:
        _log_to_mlflow(result, args.mlflow_experiment)
    print(format_summary(result))
    written = [f"result: {out}"]
    written += [
        f"{name}: {path}" for name, path in (("rows", args.rows), ("report", args.report)) if path
    ]
    print("   ".join(written))
    return EXIT_PASSED if result.gate.passed else EXIT_FAILED


def _log_to_mlflow(result: AuditResult, experiment: str | None) -> None:
    from trustdiff.report import render_report
    from trustdiff.tracking import log_audit

    run_id = log_audit(result, report_html=render_report(result), experiment=experiment)
    print(f"trustdiff: logged to MLflow run {run_id}", file=sys.stderr)


def _schema_command(args: argparse.Namespace) -> int:
    print(json.dumps(result_json_schema(), indent=2))
    return EXIT_PASSED


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    output = parser.add_argument_group("gate and output")
    output.add_argument(
        "--gate", metavar="FILE", help="JSON/YAML overrides of gate checks and settings"
    )
    output.add_argument("--out", required=True, metavar="FILE", help="result document (JSON)")
    output.add_argument("--report", metavar="FILE", help="also write the HTML report")
    output.add_argument(
        "--mlflow",
        action="store_true",
        help="also log the result to MLflow ($MLFLOW_TRACKING_URI; needs trustdiff[mlflow])",
    )
    output.add_argument(
        "--mlflow-experiment", metavar="NAME", help="MLflow experiment (default: trustdiff)"
    )
    output.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where checkpoint fingerprints, the reference's predictions on the dataset and "
        "the twin's figures are cached across audits (default: $TRUSTDIFF_CACHE_DIR, else "
        "$XDG_CACHE_HOME/trustdiff or ~/.cache/trustdiff)",
    )
    output.add_argument(
        "--no-cache",
        action="store_true",
        help="read and write no cache: hash both folders, predict the reference, measure the twin",
    )
    output.add_argument(
        "--rows",
        metavar="FILE",
        help="also write every row's outcome (both probability vectors, predictions, gold) "
        "as Parquet; the result document keeps summaries and explained instances only",
    )
    output.add_argument(
        "--rows-text", action="store_true", help="include each row's text in the --rows file"
    )
    output.add_argument("--quiet", action="store_true", help="no progress on stderr")
    output.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    execution = parser.add_argument_group(
        "execution (the result is the same whatever these say, up to float rounding)"
    )
    execution.add_argument(
        "--explain-processes",
        type=_at_least_one,
        default=1,
        metavar="N",
        help="explain blocks in N processes at once, each loading the models: faster where "
        "the explainers' Python is the limit, e.g. a GPU with idle CPU cores (default: 1)",
    )
    execution.add_argument(
        "--block-instances",
        type=_at_least_one,
        default=DEFAULT_BLOCK_INSTANCES,
        metavar="N",
        help="explained instances per block, rounded up to whole waves of "
        f"{DEFAULT_WORKERS}; smaller blocks spread over more processes "
        f"(default: {DEFAULT_BLOCK_INSTANCES}; attributions may move at float rounding)",
    )


def _add_audit_parser(subparsers: Any) -> None:
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
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="JSON/YAML of any AuditConfig settings (masking, target, shap_algorithm, ...); "
        "flags given as well override it",
    )
    for title, options in AUDIT_FLAGS.items():
        group = parser.add_argument_group(title)
        for option in options:
            group.add_argument(option.flag, dest=option.dest, **_argument_options(option))
    _add_output_options(parser)
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
        message = validation_summary(error)
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
