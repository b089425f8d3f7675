"""The page's templates: autoescaping everywhere, shipped as package data, tolerant input."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from tests.report.builders import build_audit_result
from tests.report.test_report import _parse
from trustdiff.report import render_report
from trustdiff.report.page import _environment
from trustdiff.result import AuditResult, dump_result

ROOT = Path(__file__).resolve().parents[2]
# Closed vocabularies (Literal fields) that a document cannot fill with arbitrary text.
LITERAL_KEYS = {
    "schema_version", "binning", "pillar", "comparison", "judged_on", "judged",
    "judged_relative_to",
}  # fmt: skip
FREE_KEYS = {"config", "versions", "timings", "settings", "label_mapping", "per_class_recall"}
PAGE_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "div", "p", "h1", "h2", "h3",
    "h4", "nav", "a", "main", "section", "ul", "li", "span", "b", "small", "strong", "code",
    "table", "thead", "tbody", "tr", "th", "td", "caption", "figure", "figcaption", "article",
    "i", "svg", "line", "rect", "circle", "polyline", "text",
}  # fmt: skip


def _hostile(number: int) -> str:
    return f"<script>alert({number})</script><img src=x onerror=alert({number})>\"'&x{number}"


def _hostile_document(document: Any, counter: list[int], *, free_keys: bool = False) -> Any:
    """Every free-text string of a dumped result replaced by hostile text, numbered.

    Keys are replaced too in the mappings whose keys are data (settings, versions, timings,
    label names), not field names of the document.
    """
    if isinstance(document, dict):
        replaced = {}
        for key, value in document.items():
            if key in LITERAL_KEYS:
                replaced[key] = value
                continue
            inner = _hostile_document(value, counter, free_keys=free_keys or key in FREE_KEYS)
            replaced[_next(counter) if free_keys else key] = inner
        return replaced
    if isinstance(document, list):
        return [_hostile_document(item, counter, free_keys=free_keys) for item in document]
    if isinstance(document, str):
        return _next(counter)
    return document


def _next(counter: list[int]) -> str:
    counter.append(len(counter))
    return _hostile(counter[-1])


def test_the_environment_autoescapes_every_template() -> None:
    environment = _environment()
    assert environment.autoescape is True
    names = environment.list_templates()
    assert "report.html.j2" in names and "macros.html.j2" in names
    for name in names:
        source = (resources.files("trustdiff.report") / "templates" / name).read_text("utf-8")
        # No way around the escaping: no |safe, no autoescape off, no markup made in a template.
        assert not re.search(r"\|\s*safe\b|autoescape\s+false|Markup|\|\s*format_html", source), (
            name
        )


def test_macros_escape_their_arguments() -> None:
    macros = _environment().get_template("macros.html.j2").module
    hostile = _hostile(1)
    for markup in (
        str(macros.fingerprint(hostile)),
        str(macros.optional(hostile)),
        str(macros.stat(hostile, hostile, hostile)),
    ):
        assert "<script" not in markup and "<img" not in markup
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup


def test_every_string_in_the_document_reaches_the_page_as_text() -> None:
    counter: list[int] = []
    dumped = json.loads(dump_result(build_audit_result(passed=False)))
    result = AuditResult.model_validate(_hostile_document(dumped, counter))
    page = render_report(result)
    parsed = _parse(page)
    assert parsed.errors == [] and parsed.stack == []
    assert {tag for tag, _ in parsed.start_tags} <= PAGE_TAGS
    assert not any(name.startswith("on") for _, attrs in parsed.start_tags for name in attrs)
    assert "<script" not in page and "<img" not in page
    text = "".join(parsed.text) + "".join(
        value or "" for _, attrs in parsed.start_tags for value in attrs.values()
    )
    shown = {int(n) for n in re.findall(r"&x(\d+)", text)}
    assert len(shown) > 100, "the hostile strings did not reach the page"


def _strip_optional(document: Any) -> Any:
    """A document as an older writer made it: no optional key, no empty collection."""
    optional = {
        "agreement_interval", "noise_floor", "reference_rerun", "label_mapping", "text_pair",
        "text_pair_field", "transform", "model_type", "num_parameters", "description",
        "explanations", "alignment", "lime", "shap",
    }  # fmt: skip
    if isinstance(document, dict):
        return {k: _strip_optional(v) for k, v in document.items() if k not in optional}
    if isinstance(document, list):
        return [_strip_optional(item) for item in document]
    return document


def test_an_old_document_without_optional_sections_renders() -> None:
    dumped = json.loads(dump_result(build_audit_result(passed=True)))
    stripped = _strip_optional(dumped)
    stripped["manifest"].update(timings={}, versions={}, config={})
    stripped["calibration"]["delta"] = {}
    for model in ("reference", "candidate"):
        stripped["calibration"][model]["reliability"] = []
    page = render_report(AuditResult.model_validate(stripped))
    assert _parse(page).errors == []
    assert "Alignment not computed" in page
    assert "No instance was explained" in page
    assert "No reliability diagram in this result." in page
    assert "None" not in page and "nan" not in page.lower()


def test_templates_are_shipped_as_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["trustdiff.report"]
    folder = ROOT / "trustdiff" / "report" / "templates"
    files = [path.relative_to(folder.parent).as_posix() for path in folder.iterdir()]
    assert files
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in globs), name
