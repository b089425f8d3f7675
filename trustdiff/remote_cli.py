"""`trustdiff submit | status | gate`: audits on a trustdiff server, for release pipelines."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trustdiff.client import Audit, TrustdiffClient
    from trustdiff.config import GateSettings

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_TIMED_OUT = 3

URL_ENV = "TRUSTDIFF_URL"
API_KEY_ENV = "TRUSTDIFF_API_KEY"
# CI logs want a sign of life now and then, not a line per poll.
LOG_LINE_INTERVAL_S = 30.0

_EXIT_CODES = """\
exit status:
  0  the gate passed            1  the gate failed
  2  any error (one line on stderr: the server's problem message, a failed audit's error)
  3  --timeout elapsed before the audit finished (it keeps running on the server)
"""

_SUBMIT_EPILOG = (
    _EXIT_CODES
    + """
The server and key come from --server/--api-key or TRUSTDIFF_URL/TRUSTDIFF_API_KEY.
Checkpoint paths are relative to the server's model root. --dataset uploads a local file,
or names a dataset uploaded before by its id.

examples:
  # in a release pipeline: gate the job on the verdict, keep the report
  trustdiff submit --reference bert-base --candidate bert-base-int8 \\
      --dataset data/dev.jsonl --wait --timeout 1800 --report report.html

  # fire and forget; poll later with `trustdiff status ID` / `trustdiff gate ID`
  AUDIT=$(trustdiff submit --reference bert-base --candidate distilbert --dataset 2f0c...)

options file (JSON/YAML, fields of the API's audit request), e.g.
  explain: {instances: 50, methods: [lime, shap]}
  calibration: {n_bootstrap: 2000}
  seed: 7
"""
)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The epilog's examples keep their line breaks."""


# --- connection ----------------------------------------------------------------------------


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("server")
    group.add_argument(
        "--server",
        metavar="URL",
        default=os.environ.get(URL_ENV),
        help=f"base URL of the trustdiff server (default: ${URL_ENV})",
    )
    group.add_argument(
        "--api-key",
        metavar="KEY",
        default=os.environ.get(API_KEY_ENV),
        help=f"API key from `trustdiff keys create` (default: ${API_KEY_ENV})",
    )
    group.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds per HTTP request (default: 30)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _client(args: argparse.Namespace) -> TrustdiffClient:
    from trustdiff.client import TrustdiffClient
    from trustdiff.errors import ConfigError

    if not args.server:
        raise ConfigError(f"no server: pass --server URL or set {URL_ENV}")
    if not args.api_key:
        raise ConfigError(f"no API key: pass --api-key KEY or set {API_KEY_ENV}")
    return TrustdiffClient(args.server, args.api_key, timeout_s=args.request_timeout)


# --- progress -------------------------------------------------------------------------------


class WaitProgress:
    """An audit's progress while waiting: a bar on a terminal, a plain line per change in logs.

    In a log a line is written when the status or stage changes, and at most every
    `LOG_LINE_INTERVAL_S` otherwise, so a long audit shows it is alive without flooding.
    """

    def __init__(self, stream: IO[str], *, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.interactive = enabled and stream.isatty()
        self._bar: Any = None
        self._last_key: tuple[str, str] | None = None
        self._last_line_at = 0.0

    def __call__(self, audit: Audit) -> None:
        if not self.enabled:
            return
        stage = audit.progress.stage if audit.progress else audit.status
        done = audit.progress.done if audit.progress else 0
        total = audit.progress.total if audit.progress else 0
        key = (audit.status, stage)
        if self.interactive:
            self._update_bar(key, stage, done, total)
            return
        now = time.monotonic()
        if key != self._last_key or now - self._last_line_at >= LOG_LINE_INTERVAL_S:
            counts = f" {done}/{total}" if total else ""
            where = "" if stage == audit.status else f": {stage}{counts}"
            print(f"trustdiff: audit {audit.id} {audit.status}{where}", file=self.stream)
            self._last_key, self._last_line_at = key, now

    def _update_bar(self, key: tuple[str, str], stage: str, done: int, total: int) -> None:
        if key != self._last_key:
            self.close()
            from tqdm import tqdm

            self._bar = tqdm(total=total or None, desc=stage, file=self.stream, leave=False)
            self._last_key = key
        if self._bar is not None:
            self._bar.total = total or None
            self._bar.n = done
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# --- submit ---------------------------------------------------------------------------------


def _request_options(args: argparse.Namespace) -> dict[str, Any]:
    """The audit request's fields other than models and dataset, from files and flags.

    Layered as `trustdiff audit` layers them: the --options file, then --gate's overrides
    merged over the gate that file sets, then the flags.
    """
    from trustdiff.config_files import load_gate_settings, load_mapping_file

    options: dict[str, Any] = {}
    if args.options:
        options.update(load_mapping_file(args.options, what="options file"))
    if args.gate:
        base = _options_gate(options, args.options)
        options["gate"] = load_gate_settings(args.gate, base=base).model_dump(mode="json")
    if args.explain_instances is not None:
        options["explain"] = {**options.get("explain", {}), "instances": args.explain_instances}
    if args.seed is not None:
        options["seed"] = args.seed
    return options


def _options_gate(options: dict[str, Any], path: str | None) -> GateSettings | None:
    """The gate an options file sets, validated (None when it sets none)."""
    from pydantic import ValidationError

    from trustdiff.config import GateSettings
    from trustdiff.config_files import validation_summary
    from trustdiff.errors import ConfigError

    if options.get("gate") is None:
        return None
    try:
        return GateSettings.model_validate(options["gate"])
    except ValidationError as error:
        raise ConfigError(f"options file {path!r}: gate: {validation_summary(error)}") from error


def _dataset_argument(client: TrustdiffClient, args: argparse.Namespace) -> Any:
    """A local file is uploaded (with the field options); otherwise the value is an id."""
    from trustdiff.errors import ConfigError

    value = args.dataset
    path = Path(value)
    if path.is_file():
        dataset = client.upload_dataset(
            path,
            format=args.format,
            text_field=args.text_field,
            text_pair_field=args.text_pair_field,
            label_field=args.label_field,
        )
        if not args.quiet:
            print(
                f"trustdiff: uploaded {path.name}: dataset {dataset.id}, {dataset.rows} rows",
                file=sys.stderr,
            )
        dataset_id = str(dataset.id)
    else:
        try:
            dataset_id = str(uuid.UUID(value))
        except ValueError:
            raise ConfigError(
                f"--dataset {value!r} is neither a local file nor a dataset id"
            ) from None
    reference: dict[str, Any] = {"id": dataset_id}
    if args.limit is not None:
        reference["limit"] = args.limit
        reference["sampling"] = args.sampling
    return reference


def _checkpoint(path: str | None, transform: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    return {"path": path, **({"transform": transform} if transform else {})}


def _submit_command(args: argparse.Namespace) -> int:
    with _client(args) as client:
        options = _request_options(args)
        audit = client.submit(
            reference=_checkpoint(args.reference, args.reference_transform) or {},
            candidate=_checkpoint(args.candidate, args.candidate_transform) or {},
            twin=_checkpoint(args.twin, args.twin_transform),
            dataset=_dataset_argument(client, args),
            options=options,
            idempotency_key=args.idempotency_key,
        )
        if not (args.wait or args.out or args.report or args.mlflow):
            print(audit.id)
            return EXIT_PASSED
        return _finish(client, audit.id, args)


def _finish(client: TrustdiffClient, audit_id: uuid.UUID | str, args: argparse.Namespace) -> int:
    """Wait for the audit, write what was asked for, print the summary; the exit status."""
    from trustdiff.result import AuditResult
    from trustdiff.summary import format_summary

    audit = _wait(client, audit_id, args)
    if audit.status != "succeeded":
        return _not_succeeded(audit)
    document = client.result_json(audit.id)
    result = AuditResult.model_validate(document)
    if args.out:
        _write(args.out, json.dumps(document, indent=2) + "\n")
    report_html = None
    if args.report or args.mlflow:
        report_html = client.report(audit.id)
    if args.report and report_html is not None:
        _write(args.report, report_html)
    if args.mlflow:
        from trustdiff.tracking import log_audit

        run_id = log_audit(
            result,
            report_html=report_html,
            experiment=args.mlflow_experiment,
            tags={"trustdiff.audit_id": str(audit.id), "trustdiff.server": args.server},
        )
        print(f"trustdiff: logged to MLflow run {run_id}", file=sys.stderr)
    print(format_summary(result))
    outputs = (("result", args.out), ("report", args.report))
    written = [f"{what}: {path}" for what, path in outputs if path]
    print("   ".join([f"audit: {audit.id}", *written]))
    return EXIT_PASSED if result.gate.passed else EXIT_FAILED


def _not_succeeded(audit: Audit) -> int:
    """Say how the audit ended instead (with the server's error, if any); the exit status."""
    error = f": {audit.error.code}: {audit.error.message}" if audit.error else ""
    print(f"error: audit {audit.id} {audit.status}{error}", file=sys.stderr)
    return EXIT_ERROR


def _wait(client: TrustdiffClient, audit_id: uuid.UUID | str, args: argparse.Namespace) -> Audit:
    progress = WaitProgress(sys.stderr, enabled=not args.quiet)
    try:
        return client.wait(
            audit_id,
            timeout=args.timeout,
            poll_interval=args.poll_interval,
            on_update=progress,
        )
    finally:
        progress.close()


def _write(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")


# --- status and gate ------------------------------------------------------------------------


def _status_command(args: argparse.Namespace) -> int:
    with _client(args) as client:
        audit = client.audit(args.audit_id)
    if args.json:
        print(audit.model_dump_json(indent=2))
        return EXIT_PASSED
    progress = ""
    if audit.progress and not audit.is_final:
        progress = f"   {audit.progress.stage} {audit.progress.done}/{audit.progress.total}"
    verdict = ""
    if audit.passed is not None:
        verdict = "   gate: " + ("PASS" if audit.passed else "FAIL")
    error = f"   error: {audit.error.code}: {audit.error.message}" if audit.error else ""
    print(f"{audit.id}   {audit.status}{progress}{verdict}{error}")
    return EXIT_PASSED


def _gate_command(args: argparse.Namespace) -> int:
    from trustdiff.summary import format_gate

    with _client(args) as client:
        if args.wait or args.timeout is not None:
            audit = _wait(client, args.audit_id, args)
            if audit.status != "succeeded":
                return _not_succeeded(audit)
        gate = client.gate(args.audit_id)
    print(gate.model_dump_json(indent=2) if args.json else format_gate(gate))
    return EXIT_PASSED if gate.passed else EXIT_FAILED


# --- errors and registration ----------------------------------------------------------------


def _guarded(command: Any) -> Any:
    """Client errors become one line and exit 2; a wait that timed out exits 3."""

    def run(args: argparse.Namespace) -> int:
        from trustdiff.client import ClientError, ProblemError, WaitTimeout

        try:
            return int(command(args))
        except WaitTimeout as timeout:
            print(f"error: {timeout}", file=sys.stderr)
            return EXIT_TIMED_OUT
        except ProblemError as problem:
            print(
                f"error: {problem.detail} ({problem.code}, HTTP {problem.status})", file=sys.stderr
            )
            return EXIT_ERROR
        except ClientError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_ERROR

    return run


def _add_wait_options(parser: argparse.ArgumentParser, *, wait_help: str) -> None:
    group = parser.add_argument_group("waiting")
    group.add_argument("--wait", action="store_true", help=wait_help)
    group.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="stop waiting after S seconds and exit 3 (default: wait as long as it takes)",
    )
    group.add_argument(
        "--poll-interval", type=float, default=2.0, metavar="S", help="seconds between polls"
    )
    group.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _add_submit_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "submit",
        help="submit an audit to a trustdiff server (and wait for its verdict)",
        description=(
            "Submit an audit of CANDIDATE against REFERENCE to a trustdiff server, uploading "
            "the dataset when it is a local file. Prints the audit id; with --wait, shows "
            "progress, prints the same check table as `trustdiff audit` and exits with the "
            "gate's verdict. Retried requests never create a second audit (an idempotency "
            "key is sent with every submission)."
        ),
        epilog=_SUBMIT_EPILOG,
        formatter_class=_HelpFormatter,
    )
    _add_connection_options(parser)
    _add_submit_models(parser)
    _add_submit_dataset(parser)
    _add_submit_settings(parser)
    _add_wait_options(parser, wait_help="wait for the verdict and exit with it")
    _add_submit_outputs(parser)
    parser.set_defaults(func=_guarded(_submit_command))


def _add_submit_models(parser: argparse.ArgumentParser) -> None:
    models = parser.add_argument_group("models (paths under the server's model root)")
    models.add_argument("--reference", required=True, metavar="PATH", help="reference checkpoint")
    models.add_argument("--candidate", required=True, metavar="PATH", help="candidate checkpoint")
    models.add_argument("--twin", metavar="PATH", help="retrained twin of the reference")
    for name in ("reference", "candidate", "twin"):
        models.add_argument(
            f"--{name}-transform",
            choices=["int8-dynamic"],
            help=f"transform applied to the {name} at load time",
        )


def _add_submit_dataset(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("dataset")
    data.add_argument(
        "--dataset",
        required=True,
        metavar="FILE|ID",
        help="a local JSONL/CSV/TSV file (uploaded first) or the id of an uploaded dataset",
    )
    data.add_argument("--format", choices=["jsonl", "csv", "tsv"], help="upload format")
    data.add_argument("--text-field", default="text", help="upload: column of the text")
    data.add_argument("--text-pair-field", help="upload: second text of sentence pairs")
    data.add_argument("--label-field", default="label", help="upload: gold label column")
    data.add_argument("--limit", type=int, metavar="N", help="audit at most N rows")
    data.add_argument("--sampling", choices=["head", "random"], default="head", help="with --limit")


def _add_submit_settings(parser: argparse.ArgumentParser) -> None:
    audit = parser.add_argument_group("audit settings")
    audit.add_argument(
        "--options",
        metavar="FILE",
        help="JSON/YAML of further request fields (explain, calibration, gate, seed, ...)",
    )
    audit.add_argument("--gate", metavar="FILE", help="gate overrides, as for `trustdiff audit`")
    audit.add_argument("--explain-instances", type=int, metavar="N", help="explained instances")
    audit.add_argument("--seed", type=int, metavar="S", help="seed of sampling and bootstrap")
    audit.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="resubmitting with the same key returns the same audit (default: a fresh one)",
    )


def _add_submit_outputs(parser: argparse.ArgumentParser) -> None:
    output = parser.add_argument_group("output (each implies --wait)")
    output.add_argument("--out", metavar="FILE", help="write the result document (JSON)")
    output.add_argument("--report", metavar="FILE", help="write the HTML report")
    output.add_argument(
        "--mlflow",
        action="store_true",
        help="log the result to MLflow ($MLFLOW_TRACKING_URI; needs trustdiff[mlflow])",
    )
    output.add_argument(
        "--mlflow-experiment", metavar="NAME", help="MLflow experiment (default: trustdiff)"
    )


def register(subparsers: Any) -> None:
    """Add `submit`, `status` and `gate` to the `trustdiff` parser."""
    _add_submit_parser(subparsers)

    status = subparsers.add_parser(
        "status",
        help="show a submitted audit's status and progress",
        description="Print an audit's status, progress and, once finished, its verdict.",
    )
    status.add_argument("audit_id", metavar="ID", help="the audit's id")
    status.add_argument("--json", action="store_true", help="print the API's JSON")
    _add_connection_options(status)
    status.set_defaults(func=_guarded(_status_command))

    gate = subparsers.add_parser(
        "gate",
        help="print a finished audit's gate and exit with its verdict",
        description="Print the gate of a succeeded audit and exit with its verdict.",
        epilog=_EXIT_CODES,
        formatter_class=_HelpFormatter,
    )
    gate.add_argument("audit_id", metavar="ID", help="the audit's id")
    gate.add_argument("--json", action="store_true", help="print the gate as JSON")
    _add_connection_options(gate)
    _add_wait_options(gate, wait_help="wait for the audit to finish first")
    gate.set_defaults(func=_guarded(_gate_command))
