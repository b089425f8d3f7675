"""The report in headless Chromium: it renders, makes no request, and hostile text stays inert."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.report.browser import (
    chromium_available,
    full_page_screenshot,
    headless_chromium,
    png_summary,
    requested_urls,
)
from tests.report.builders import HOSTILE_TEXT, build_audit_result
from trustdiff.report import render_report
from trustdiff.result import AuditResult

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not chromium_available():
        pytest.skip("headless Chromium is not installed (scripts/ensure-chromium.sh installs it)")
    with headless_chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def _open(driver: Any, result: AuditResult, folder: Path) -> tuple[Path, list[str]]:
    """Write the report, load it, and return its path and the URLs the page requested."""
    report = folder / "report.html"
    report.write_text(render_report(result), encoding="utf-8")
    # Leave the start page (Chromium's new-tab page fetches chrome:// resources) and drop
    # what it logged, so only this report's requests are judged.
    driver.get("about:blank")
    requested_urls(driver)
    driver.get(report.as_uri())
    return report, requested_urls(driver)


def _assert_rendered(driver: Any, report: Path, urls: list[str], word: str, folder: Path) -> None:
    assert urls, "the performance log recorded no navigation at all"
    assert all(url == report.as_uri() or url.startswith("data:") for url in urls), urls

    assert driver.find_element("css selector", ".verdict-word").text == word
    plots = driver.execute_script(
        "return [...document.querySelectorAll('svg.plot')].map(svg => {"
        "  const box = svg.getBoundingClientRect();"
        "  return [svg.getAttribute('aria-label'), box.width, box.height,"
        "          svg.querySelectorAll('rect, circle, polyline').length]; })"
    )
    diagrams = [p for p in plots if p[0].startswith(("Reliability", "LIME", "SHAP"))]
    assert diagrams, plots
    for label, width, height, marks in diagrams:
        assert width > 300 and height > 200 and marks > 0, (label, width, height, marks)

    viewport = folder / "viewport.png"
    assert driver.save_screenshot(str(viewport))
    full = full_page_screenshot(driver, folder / "full-page.png")
    for shot, min_height in ((viewport, 500), (full, 2000)):
        width, height, distinct = png_summary(shot.read_bytes())
        assert width >= 1000 and height >= min_height and distinct > 20, (shot, width, height)


def test_hand_built_report_in_chromium(browser: Any, tmp_path: Path) -> None:
    report, urls = _open(browser, build_audit_result(passed=False), tmp_path)
    _assert_rendered(browser, report, urls, "FAILED", tmp_path)

    failing = browser.find_elements("css selector", "tr.check.fail")
    assert len(failing) == 2
    background = failing[0].value_of_css_property("background-color")
    assert background not in ("rgba(0, 0, 0, 0)", "transparent"), "failing checks not highlighted"

    # The hostile sentence is text on the page: nothing ran, nothing was injected.
    assert browser.execute_script("return window.__alerts") == []
    assert browser.execute_script("return document.querySelectorAll('img[src=x]').length") == 0
    assert browser.execute_script("return document.scripts.length") == 0
    row = browser.find_element("xpath", "//article[.//h3[text()='Row 0']]")
    assert HOSTILE_TEXT in row.text


def test_real_audit_report_in_chromium(
    browser: Any, tiny_audit_result: AuditResult, tmp_path: Path
) -> None:
    report, urls = _open(browser, tiny_audit_result, tmp_path)
    word = "PASSED" if tiny_audit_result.gate.passed else "FAILED"
    _assert_rendered(browser, report, urls, word, tmp_path)
    assert browser.execute_script("return window.__alerts") == []


def _with_means(lime: tuple[float, float], shap: tuple[float, float]) -> AuditResult:
    """The hand-built result with given (between-model, noise floor) Jaccard@k means."""
    document = build_audit_result(passed=False).model_dump()
    for method, (between, floor) in (("lime", lime), ("shap", shap)):
        document["alignment"][method]["jaccard_at_k"]["mean"] = between
        document["alignment"][method]["noise_floor"]["jaccard_at_k"]["mean"] = floor
    return AuditResult.model_validate(document)


def test_mean_labels_neither_collide_nor_clip_as_rendered(browser: Any, tmp_path: Path) -> None:
    # Close means with the floor below the models' (labels used to overlap), and a floor at
    # 0.99 (its label used to run past the plot's right edge).
    _open(browser, _with_means(lime=(0.74, 0.70), shap=(0.71, 0.99)), tmp_path)
    boxes = browser.execute_script(
        "return [...document.querySelectorAll('svg.plot')]"
        "  .filter(svg => svg.getAttribute('aria-label').includes('Jaccard'))"
        "  .map(svg => [svg.viewBox.baseVal.width, [...svg.querySelectorAll('text')]"
        "    .filter(t => /^(mean|floor) /.test(t.textContent))"
        "    .map(t => { const b = t.getBBox(); return [t.textContent, b.x, b.x + b.width]; })])"
    )
    assert len(boxes) == 2
    for width, labels in boxes:
        assert sorted(label for label, _, _ in labels)[0].startswith("floor"), labels
        assert len(labels) == 2, labels
        (_, _, first_right), (_, second_left, _) = sorted(labels, key=lambda label: label[1])
        assert first_right < second_left, labels
        assert all(left >= 0 and right <= width for _, left, right in labels), labels
