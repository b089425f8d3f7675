"""Run the demo as a pipeline would: serve, upload, audit each candidate over HTTP, report."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from demo.settings import CandidateSettings, RunSettings, default_root, load_settings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DemoService:
    """`trustdiff serve` on its embedded default, in a state folder of the demo's own.

    The service gives each tenant its own folder of the model and data roots; the demo's
    tenant's folders are links to the demo's models and data.
    """

    TENANT = "demo"

    def __init__(self, *, state_dir: Path, model_root: Path, data_root: Path) -> None:
        self.state_dir = state_dir
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # Drop any database/broker configuration of the caller's shell: the demo shows the
        # zero-configuration default.
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("TRUSTDIFF_") and key not in {"DATABASE_URL", "BROKER_URL"}
        }
        roots = {"models": model_root, "data": data_root}
        for name, target in roots.items():
            link = state_dir / "roots" / name / self.TENANT
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(target.resolve(), target_is_directory=True)
        self.env.update(
            TRUSTDIFF_HOME=str(state_dir),
            TRUSTDIFF_MODEL_ROOT=str(state_dir / "roots" / "models"),
            TRUSTDIFF_DATA_ROOT=str(state_dir / "roots" / "data"),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir / "serve.log"

    def trustdiff(self, *args: str) -> str:
        completed = subprocess.run(
            [sys.executable, "-m", "trustdiff", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise SystemExit(f"error: trustdiff {' '.join(args)} failed:\n{completed.stderr}")
        return completed.stdout

    def start(self, *, timeout: float = 120.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trustdiff", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"error: trustdiff serve exited; see {self.log_path}")
            try:
                if httpx.get(f"{self.base_url}/v1/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"error: trustdiff serve was not ready in {timeout:.0f}s; {self.log_path}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _raise_for_problem(response: httpx.Response) -> None:
    if response.is_error:
        raise SystemExit(f"error: {response.request.method} {response.url}: {response.text}")


def _bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * done / total) if total else 0
    return "#" * filled + "-" * (width - filled)


def poll_until_finished(client: httpx.Client, audit_id: str, name: str) -> dict[str, Any]:
    """Poll the audit until it leaves queued/running, showing its progress.

    On a terminal one line is redrawn in place; in a log (CI, `| tee`) a line is written
    only when the stage changes or another tenth of it is done, so logs stay readable.
    """
    started = time.monotonic()
    interactive = sys.stderr.isatty()
    last_logged: tuple[str, int] | None = None
    while True:
        response = client.get(f"/v1/audits/{audit_id}")
        _raise_for_problem(response)
        audit = response.json()
        progress = audit.get("progress") or {}
        stage = progress.get("stage") or audit["status"]
        done, total = int(progress.get("done") or 0), int(progress.get("total") or 0)
        elapsed = time.monotonic() - started
        line = f"  {name:<10} {stage:<9} [{_bar(done, total)}] {done}/{total}  {elapsed:5.0f}s"
        finished = audit["status"] not in {"queued", "running"}
        if interactive:
            print("\r" + line, end="\n" if finished else "", file=sys.stderr, flush=True)
        else:
            tenth = int(10 * done / total) if total else 0
            if (stage, tenth) != last_logged or finished:
                print(line, file=sys.stderr, flush=True)
                last_logged = (stage, tenth)
        if finished:
            return audit
        time.sleep(1.0)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _worst_slice(result: dict[str, Any]) -> str:
    """The lowest agreement among the slices large enough to judge, and which slice it is."""
    judged = [item for item in (result.get("slices") or {}).get("slices", []) if item["judged"]]
    if not judged:
        return "—"
    worst = min(judged, key=lambda item: item["agreement"]["value"])
    return f"{worst['agreement']['value']:.3f} ({worst['column']}: {worst['value']})"


def _floor_text(alignment: dict[str, Any]) -> str:
    """The noise floor's mean jaccard, or "det." for a deterministic explainer (no floor)."""
    floor = alignment.get("noise_floor") or {}
    if floor.get("deterministic"):
        return "det."
    return _fmt((floor.get("jaccard_at_k") or {}).get("mean"), 2)


# The checks shown against the twin, and their column titles.
TWIN_CHECKS = (
    ("accuracy_drop", "acc. drop vs twin"),
    ("agreement", "agreement vs twin"),
    ("ece_increase", "ΔECE vs twin"),
    ("lime_jaccard_margin", "LIME vs twin"),
    ("shap_jaccard_margin", "SHAP vs twin"),
)


def _versus_twin(result: dict[str, Any], name: str) -> str:
    """ "0.012 ≤ 0.031 ok": the candidate's value against its threshold relative to the twin."""
    check = next((c for c in result["gate"].get("checks", []) if c["name"] == name), None)
    if check is None or check.get("judged_relative_to") != "twin":
        return "—"
    symbol = "≤" if check["comparison"] == "<=" else "≥"
    verdict = "ok" if check["passed"] else "FAIL"
    return f"{_fmt(check['value'])} {symbol} {_fmt(check['threshold'])} {verdict}"


def summary_row(name: str, result: dict[str, Any]) -> list[str]:
    """The columns a release engineer reads first, from one result document."""
    parity = result["parity"]
    delta_ece = result["calibration"]["delta"]["ece"]
    negative_flips = parity.get("negative_flip_rate") or {}
    row = [
        name,
        f"{parity['reference']['accuracy']:.3f} → {parity['candidate']['accuracy']:.3f}",
        _fmt(parity["agreement"]),
        _fmt(negative_flips.get("value")),
        _worst_slice(result),
        f"{delta_ece['value']:+.3f} [{_fmt(delta_ece['ci_low'])}, {_fmt(delta_ece['ci_high'])}]",
    ]
    for method in ("lime", "shap"):
        alignment = result["alignment"].get(method)
        if alignment is None:
            row.append("—")
            continue
        row.append(f"{_fmt(alignment['jaccard_at_k']['mean'], 2)} ({_floor_text(alignment)})")
    row.append("PASS" if result["gate"]["passed"] else "FAIL")
    row += [_versus_twin(result, check) for check, _ in TWIN_CHECKS]
    return row


def twin_row(result: dict[str, Any]) -> list[str] | None:
    """The twin's own figures against the reference (any result with a twin holds them)."""
    parity, calibration = result["parity"].get("twin"), result["calibration"].get("twin")
    if parity is None or calibration is None:
        return None
    delta_ece = calibration["delta"]["ece"]
    negative_flips = parity.get("negative_flip_rate") or {}
    row = [
        "twin (retrain)",
        f"{parity['reference']['accuracy']:.3f} → {parity['candidate']['accuracy']:.3f}",
        _fmt(parity["agreement"]),
        _fmt(negative_flips.get("value")),
        "—",
        f"{delta_ece['value']:+.3f} [{_fmt(delta_ece['ci_low'])}, {_fmt(delta_ece['ci_high'])}]",
    ]
    for method in ("lime", "shap"):
        alignment = result["alignment"].get(method) or {}
        twin = alignment.get("twin")
        row.append(
            "—"
            if twin is None
            else f"{_fmt(twin['jaccard_at_k']['mean'], 2)} ({_floor_text(alignment)})"
        )
    return [*row, "—", *("—" for _ in TWIN_CHECKS)]


def format_table(rows: Sequence[Sequence[str]]) -> str:
    header = [
        "candidate",
        "accuracy ref → cand",
        "agreement",
        "neg. flips",
        "worst slice agreement",
        "ΔECE [95% CI]",
        "LIME j@10 (floor)",
        "SHAP j@10 (floor)",
        "gate",
        *(title for _, title in TWIN_CHECKS),
    ]
    table = [header, *rows]
    widths = [max(len(row[column]) for row in table) for column in range(len(header))]
    lines = [
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in table
    ]
    lines.insert(1, "-|-".join("-" * width for width in widths))
    return "\n".join(lines)


def failing_checks(result: dict[str, Any]) -> list[str]:
    return [
        f"{check['name']} = {_fmt(check['value'])} (needs {check['comparison']} "
        f"{_fmt(check['threshold'])})"
        for check in result["gate"]["checks"]
        if not check["passed"]
    ]


def upload_dataset(client: httpx.Client, eval_file: Path) -> str:
    """Upload the evaluation split; return its dataset id."""
    with eval_file.open("rb") as handle:
        response = client.post(
            "/v1/datasets", files={"file": ("eval.jsonl", handle, "application/jsonl")}
        )
    _raise_for_problem(response)
    dataset = response.json()
    print(f"uploaded eval split: {dataset['id']} ({dataset.get('rows')} rows)", file=sys.stderr)
    return str(dataset["id"])


def audit_body(
    settings: RunSettings, candidate: CandidateSettings, dataset_id: str
) -> dict[str, Any]:
    """The POST /v1/audits body for one candidate: the shared `audit` section plus the models."""
    body: dict[str, Any] = json.loads(json.dumps(settings.audit))
    body["reference"] = {"path": settings.reference}
    body["candidate"] = {"path": candidate.path}
    if settings.twin:
        body["twin"] = {"path": settings.twin}
    if candidate.transform:
        body["candidate"]["transform"] = candidate.transform
    body["dataset"] = {**body.get("dataset", {}), "id": dataset_id}
    return body


def submit_audits(client: httpx.Client, settings: RunSettings, dataset_id: str) -> dict[str, str]:
    """Submit one audit per candidate; return the audit id by candidate name."""
    submitted: dict[str, str] = {}
    for candidate in settings.candidates:
        response = client.post("/v1/audits", json=audit_body(settings, candidate, dataset_id))
        _raise_for_problem(response)
        submitted[candidate.name] = response.json()["id"]
        print(f"submitted {candidate.name}: {response.headers.get('Location')}", file=sys.stderr)
    return submitted


def collect_results(
    client: httpx.Client, submitted: dict[str, str], out_dir: Path
) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """Wait for each audit, save its result and report; return (name, result) rows and
    whether any audit did not succeed."""
    rows: list[tuple[str, dict[str, Any]]] = []
    any_failed = False
    for name, audit_id in submitted.items():
        audit = poll_until_finished(client, audit_id, name)
        if audit["status"] != "succeeded":
            print(f"  {name}: {audit['status']}: {audit.get('error')}", file=sys.stderr)
            any_failed = True
            continue
        result = client.get(f"/v1/audits/{audit_id}/result").json()
        (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2))
        report = client.get(f"/v1/audits/{audit_id}/report")
        if report.status_code == 200:
            (out_dir / f"{name}.html").write_text(report.text, encoding="utf-8")
        rows.append((name, result))
    return rows, any_failed


def summary_text(rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """The verdict table, then one line per candidate: can ship, or which checks block it."""
    table = [summary_row(name, result) for name, result in rows]
    twin = next((row for _, result in rows if (row := twin_row(result)) is not None), None)
    if twin is not None:
        table.append(twin)
    lines = [format_table(table), ""]
    for name, result in rows:
        failures = failing_checks(result)
        verdict = "can ship" if not failures else "blocked by " + "; ".join(failures)
        lines.append(f"{name}: {verdict}")
    return "\n".join(lines)


def run_demo(root: Path, out_dir: Path, settings: RunSettings) -> int:
    model_root, data_root = root / "models", root / "data"
    eval_file = data_root / "eval.jsonl"
    if not eval_file.exists():
        raise SystemExit(f"error: {eval_file} is missing; run `python -m demo.build`")
    out_dir.mkdir(parents=True, exist_ok=True)
    service = DemoService(state_dir=out_dir / "state", model_root=model_root, data_root=data_root)
    print(f"starting trustdiff serve (embedded default) on {service.base_url}", file=sys.stderr)
    service.start()
    try:
        # `keys create` prints the key alone on stdout (its notice goes to stderr).
        api_key = service.trustdiff("keys", "create", "--tenant", service.TENANT).strip()
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=service.base_url, headers=headers, timeout=60) as client:
            submitted = submit_audits(client, settings, upload_dataset(client, eval_file))
            rows, any_failed = collect_results(client, submitted, out_dir)
    finally:
        service.stop()
    text = summary_text(rows)
    (out_dir / "summary.txt").write_text(text + "\n", encoding="utf-8")
    print()
    print(text)
    print(f"\nresults and reports: {out_dir}/")
    return 1 if any_failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo.run",
        description="Audit the demo's compressed candidates against the reference over HTTP, "
        "on `trustdiff serve`'s embedded default, and print a side-by-side verdict table. "
        "Build the assets first with `python -m demo.build` (`make demo` does both).",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=default_root(),
        help="demo assets folder (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/demo"),
        help="where results, reports and the summary go (default: %(default)s)",
    )
    parser.add_argument(
        "--settings",
        type=Path,
        default=None,
        help="demo settings file, its `run:` section (default: demo/settings.yaml)",
    )
    args = parser.parse_args(argv)
    return run_demo(args.root, args.out, load_settings(args.settings).run)


if __name__ == "__main__":
    raise SystemExit(main())
