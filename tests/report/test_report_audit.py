"""The report of a real audit of the tiny fixture models: it renders every part it has."""

from __future__ import annotations

import re

from tests.report.test_report import SECTION_IDS, _parse
from trustdiff.report import render_report
from trustdiff.result import AuditResult, dump_result


def test_real_audit_renders_every_section(tiny_audit_result: AuditResult) -> None:
    result = tiny_audit_result
    page = render_report(result)
    parsed = _parse(page)
    assert parsed.errors == [] and parsed.stack == []
    positions = [page.index(f'<section id="{name}"') for name in SECTION_IDS]
    assert positions == sorted(positions)
    word = "PASSED" if result.gate.passed else "FAILED"
    assert f'<div class="verdict-word">{word}</div>' in page
    for check in result.gate.checks:
        assert f'<code class="check-name">{check.name}</code>' in page
    assert page.count('aria-label="Reliability diagram') == len(
        result.calibration.reference.reliability
    )
    assert set(result.alignment) == {"lime", "shap"}
    for method in ("LIME", "SHAP"):
        assert f"<h3>{method}</h3>" in page
        assert f'aria-label="{method} Jaccard@3 distribution against the noise floor"' in page
    explained = [i for i in result.instances if i.explanations is not None]
    assert len(re.findall(r"<h3>Row \d+</h3>", page)) == min(len(explained), 5) > 0
    assert f'title="{result.manifest.reference.fingerprint}"' in page
    assert "None" not in page and "nan" not in page.lower()
    assert "http://" not in page and "https://" not in page


def test_report_is_the_same_from_the_stored_json(tiny_audit_result: AuditResult) -> None:
    # The service renders from the JSON it stored; that must give the CLI's page exactly.
    reloaded = AuditResult.model_validate_json(dump_result(tiny_audit_result))
    assert render_report(reloaded) == render_report(tiny_audit_result)
