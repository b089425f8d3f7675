"""The Python client and `trustdiff submit|status|gate` against the real gateway over HTTP,
on Postgres, Redis and a real worker; a proxy loses a response to test the retries."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.app import create_app
from service.db import Database
from service.models import Audit
from service.settings import Settings
from tests.conftest import TinyAssets
from tests.service.fixtures import FAST_SETTINGS, WorkerProcess
from tests.service.live_server import flaky_proxy, serve_in_thread
from trustdiff.cli import main
from trustdiff.client import Conflict, NotFound, TrustdiffClient, Unauthorized

pytestmark = pytest.mark.services


@pytest.fixture
def live_url(settings: Settings, clean_database: Database, worker: WorkerProcess) -> Iterator[str]:
    """The gateway over real HTTP, queueing to the real worker."""
    with serve_in_thread(create_app(settings)) as url:
        yield url


@pytest.fixture
def parked_url(parked_settings: Settings, clean_database: Database) -> Iterator[str]:
    """The gateway over real HTTP; what it queues waits on a queue no worker reads."""
    with serve_in_thread(create_app(parked_settings)) as url:
        yield url


def audit_count(database: Database) -> int:
    with database.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(Audit)).scalar_one())


def test_a_lost_response_is_retried_without_a_second_audit(
    live_url: str, api_key: str, tiny_assets: TinyAssets, clean_database: Database
) -> None:
    lost = {("POST", "/v1/audits"): 1}
    with (
        flaky_proxy(live_url, lost) as proxy,
        TrustdiffClient(proxy.url, api_key, backoff_s=0.05) as client,
    ):
        dataset = client.upload_dataset(tiny_assets.data_root / "sentiment.csv")
        assert dataset.rows == 48 and dataset.format == "csv"
        audit = client.submit(
            reference="reference",
            candidate={"path": "reference", "transform": "int8-dynamic"},
            dataset=dataset,
            options=FAST_SETTINGS,
        )
        posts = [seen for seen in proxy.seen if seen[:2] == ("POST", "/v1/audits")]
        # The gateway stored the first attempt; the client saw 502 and sent it again with the
        # same key, and got the same audit back.
        assert [status for *_rest, status in posts] == [502, 202]
        assert posts[0][2] is not None and posts[0][2] == posts[1][2]
        assert audit_count(clean_database) == 1
        assert client.audits().items[0].id == audit.id

        seen_states: list[str] = []
        finished = client.wait(
            audit.id,
            timeout=180,
            poll_interval=0.2,
            on_update=lambda a: seen_states.append(a.status),
        )
        assert finished.status == "succeeded", finished.error
        assert seen_states[-1] == "succeeded"
        gate = client.gate(audit.id)
        result = client.result(audit.id)
        assert gate == result.gate
        assert finished.passed is gate.passed
        assert result.manifest.dataset.rows == 48
        assert "<html" in client.report(audit.id).lower()


def test_problems_are_typed_errors(parked_url: str, api_key: str) -> None:
    with TrustdiffClient(parked_url, api_key, retries=0) as client:
        audit = client.submit(
            reference="reference", candidate="reference", dataset="sentiment.jsonl",
            options=FAST_SETTINGS,
        )  # fmt: skip
        assert audit.status == "queued"
        with pytest.raises(Conflict) as conflict:
            client.gate(audit.id)
        assert conflict.value.code == "audit_not_succeeded"
        with pytest.raises(NotFound):
            client.audit("00000000-0000-0000-0000-000000000000")
    with (
        TrustdiffClient(parked_url, "not-a-key", retries=0) as stranger,
        pytest.raises(Unauthorized, match=r"invalid\b.* API key"),
    ):
        stranger.audit(audit.id)


def test_submit_waits_and_exits_1_on_a_failing_gate_then_status_and_gate_agree(
    live_url: str,
    api_key: str,
    tiny_assets: TinyAssets,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gate_file = tmp_path / "gate.yaml"
    gate_file.write_text("agreement: 1.01  # unattainable\n")
    options = tmp_path / "options.json"
    options.write_text(json.dumps(FAST_SETTINGS))
    connection = ["--server", live_url, "--api-key", api_key]
    code = main(
        [
            "submit", *connection,
            "--reference", "reference", "--candidate", "perturbed",
            "--dataset", str(tiny_assets.dataset), "--options", str(options),
            "--gate", str(gate_file), "--wait", "--timeout", "180", "--poll-interval", "0.2",
            "--out", str(tmp_path / "result.json"), "--report", str(tmp_path / "report.html"),
        ]
    )  # fmt: skip
    printed = capsys.readouterr()
    assert code == 1, printed.err
    assert "verdict: FAIL" in printed.out
    assert any(
        line.split()[:1] == ["agreement"] and "FAIL" in line for line in printed.out.splitlines()
    )
    assert "uploaded sentiment.jsonl" in printed.err
    # Not a terminal: progress comes as plain lines.
    assert "running:" in printed.err or "succeeded" in printed.err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["gate"]["passed"] is False
    assert (tmp_path / "report.html").read_text().lower().startswith("<!doctype html")
    audit_id = printed.out.strip().splitlines()[-1].split()[1]

    assert main(["status", audit_id, *connection]) == 0
    assert f"{audit_id}   succeeded   gate: FAIL" in capsys.readouterr().out
    assert main(["gate", audit_id, *connection]) == 1
    gate_out = capsys.readouterr().out
    assert "verdict: FAIL" in gate_out and "agreement" in gate_out
    assert main(["gate", audit_id, "--json", *connection]) == 1
    assert json.loads(capsys.readouterr().out) == result["gate"]


def test_submit_timeout_exits_3(
    parked_url: str, api_key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "submit", "--server", parked_url, "--api-key", api_key,
            "--reference", "reference", "--candidate", "reference",
            "--dataset", "00000000-0000-0000-0000-000000000000",
            "--wait", "--timeout", "0.5", "--poll-interval", "0.1",
        ]
    )  # fmt: skip
    printed = capsys.readouterr()
    # An unknown dataset id is refused before anything is queued: exit 2, the server's words.
    assert code == 2
    assert "dataset 00000000-0000-0000-0000-000000000000 does not exist" in printed.err

    code = main(
        [
            "submit", "--server", parked_url, "--api-key", api_key,
            "--reference", "reference", "--candidate", "reference",
            "--dataset", str(_dataset_id(parked_url, api_key)),
            "--wait", "--timeout", "0.5", "--poll-interval", "0.1",
        ]
    )  # fmt: skip
    printed = capsys.readouterr()
    assert code == 3, printed.err
    assert "still queued after 0.5 s" in printed.err


def _dataset_id(url: str, api_key: str) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as folder, TrustdiffClient(url, api_key) as client:
        path = Path(folder) / "rows.jsonl"
        rows = [{"text": f"good {i}" if i % 2 else f"bad {i}", "label": i % 2} for i in range(6)]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return str(client.upload_dataset(path).id)


def test_an_unknown_key_exits_2_with_the_problem_message(
    parked_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRUSTDIFF_URL", parked_url)
    monkeypatch.setenv("TRUSTDIFF_API_KEY", "td_unknown")
    code = main(
        ["submit", "--reference", "reference", "--candidate", "reference",
         "--dataset", "00000000-0000-0000-0000-000000000000", "--wait"]
    )  # fmt: skip
    printed = capsys.readouterr()
    assert code == 2
    # One line: the server's problem detail, its code and status.
    (line,) = printed.err.strip().splitlines()
    assert re.fullmatch(r"error: invalid\b.* API key \(unauthorized, HTTP 401\)", line), line
    assert printed.out == ""
