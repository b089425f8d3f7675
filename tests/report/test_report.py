"""The HTML report from a hand-built result document: content, escaping, self-containment."""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from tests.report.builders import HOSTILE_TEXT, build_audit_result
from trustdiff.report import render_report
from trustdiff.result import AuditResult

SECTION_IDS = (
    "verdict", "parity", "slices", "divergence", "calibration", "alignment", "review",
    "instances", "manifest",
)  # fmt: skip
VOID_ELEMENTS = {"meta", "br", "hr", "img", "input", "link", "wbr", "col", "source"}
SVG_SELF_CLOSING = {"line", "polyline", "path", "rect", "circle"}


class _TagBalance(HTMLParser):
    """Collects mismatched tags and every start tag, to check the markup is well formed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.start_tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.start_tags.append((tag, dict(attrs)))
        if tag not in VOID_ELEMENTS:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.start_tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _TagBalance:
    parser = _TagBalance()
    parser.feed(page)
    parser.close()
    return parser


@pytest.fixture(scope="module")
def failed_result() -> AuditResult:
    return build_audit_result(passed=False)


@pytest.fixture(scope="module")
def page(failed_result: AuditResult) -> str:
    return render_report(failed_result)


def test_sections_come_in_reading_order(page: str) -> None:
    positions = [page.index(f'<section id="{name}"') for name in SECTION_IDS]
    assert positions == sorted(positions)


def test_markup_is_well_formed(page: str) -> None:
    parsed = _parse(page)
    assert parsed.errors == []
    assert parsed.stack == []


def test_failed_verdict_names_the_failing_checks_first(page: str) -> None:
    verdict = page[page.index('<section id="verdict"') : page.index('<section id="parity"')]
    assert ">FAILED<" in verdict
    assert "2 of 7 checks failed" in verdict
    summary = verdict[verdict.index("verdict-summary") : verdict.index("</p>")]
    assert "ece_increase" in summary and "lime_jaccard_margin" in summary
    assert "upper bound 0.050, must be ≤ 0.020" in summary
    assert verdict.count('<tr class="check fail">') == 2
    assert verdict.count('<tr class="check pass">') == 5


def test_passed_verdict() -> None:
    page = render_report(build_audit_result(passed=True))
    assert ">PASSED<" in page and ">FAILED<" not in page
    assert "All 7 checks passed" in page
    assert 'class="check fail"' not in page


def test_each_check_shows_value_threshold_interval_and_how_it_was_judged(page: str) -> None:
    row = re.search(r'<tr class="check fail">.*?ece_increase.*?</tr>', page, re.S)
    assert row is not None
    cells = row.group(0)
    for expected in ("0.031", "≤ 0.020", "[0.012, 0.050]", "judged on the upper bound"):
        assert expected in cells
    # A check without an interval shows a dash, not "None".
    assert "None" not in page


def test_parity_shows_both_models_and_the_labelled_disagreement_matrix(page: str) -> None:
    parity = page[page.index('<section id="parity"') : page.index('<section id="calibration"')]
    for expected in ("0.885", "0.880", "0.884", "0.876", "0.955", "0.910", "1.000"):
        assert expected in parity
    assert '<th class="num">negative</th><th class="num">positive</th>' in parity
    assert re.search(r"<th>negative</th><td[^>]*>97</td><td[^>]*>4</td>", parity)
    assert "Fixed</span><b>4</b>" in parity and "Broken</span><b>5</b>" in parity


def test_calibration_plots_one_reliability_diagram_per_binning(page: str) -> None:
    calibration = page[
        page.index('<section id="calibration"') : page.index('<section id="alignment"')
    ]
    # Two binned diagrams and, beside them, the smooth one.
    assert calibration.count('<svg class="plot"') == 3
    assert 'aria-label="Reliability diagram, 15 equal_width bins"' in calibration
    assert 'aria-label="Reliability diagram, 10 equal_mass bins"' in calibration
    assert 'aria-label="Smooth reliability diagram (SmoothECE kernel)"' in calibration
    # The diagonals, both models' curves (and, smooth, their densities), points by bin count.
    assert calibration.count('stroke-dasharray="5 4"') == 3
    assert calibration.count("<polyline") == 4 + 4
    for name in ("ECE", "MCE", "Classwise ECE", "Brier score", "NLL", "SmoothECE"):
        assert f"<th>{name}</th>" in calibration
    assert "[+0.012, +0.050]" in calibration  # the ECE delta's interval


def test_alignment_shows_each_method_against_its_noise_floor(page: str) -> None:
    alignment = page[page.index('<section id="alignment"') : page.index('<section id="instances"')]
    assert "<h3>LIME</h3>" in alignment and "<h3>SHAP</h3>" in alignment
    assert alignment.count('<svg class="plot"') == 2
    assert alignment.count("noise floor: reference vs re-run · mean") == 2  # the legends
    for name in ("Jaccard@10", "Rank correlation", "Pairwise rank agreement", "Cosine similarity"):
        assert f"<th>{name}</th>" in alignment


def test_alignment_not_computed_is_said_plainly() -> None:
    page = render_report(build_audit_result(with_alignment=False))
    alignment = page[page.index('<section id="alignment"') : page.index('<section id="instances"')]
    assert "Alignment not computed" in alignment
    assert "<svg" not in alignment


def test_instances_lowest_between_model_jaccard_first(page: str) -> None:
    instances = page[page.index('<section id="instances"') : page.index('<section id="manifest"')]
    rows = re.findall(r"<h3>Row (\d+)</h3>", instances)
    assert rows == ["0", "1", "2", "3", "4"]
    # Each shown instance has, per method, the reference above the candidate.
    first = instances[instances.index("<h3>Row 0</h3>") : instances.index("<h3>Row 1</h3>")]
    assert first.index(">Reference</th>") < first.index(">Candidate</th>")
    assert first.count('<div class="attribution">') == 2


def test_words_are_shaded_by_normalised_attribution(failed_result: AuditResult) -> None:
    page = render_report(failed_result)
    explanation = failed_result.instances[2].explanations
    assert explanation is not None and explanation.lime is not None
    values = explanation.lime.reference
    strongest = max(range(len(values)), key=lambda i: abs(values[i]))
    word = explanation.words[strongest]
    # The row's largest |attribution| gets the full opacity.
    assert re.search(
        rf'style="background:rgba\([0-9, ]+,0\.85\);color:#ffffff" '
        rf'title="{re.escape(word)}: {values[strongest]:+.4f}"',
        page,
    )


def test_sentence_pair_is_shown_as_two_segments(page: str) -> None:
    pair = page[page.index("<h3>Row 1</h3>") : page.index("<h3>Row 2</h3>")]
    assert pair.count('<span class="seg-label">text</span>') == 4  # 2 methods × 2 models
    assert pair.count('<span class="seg-label">pair</span>') == 4
    text_line = pair[pair.index('seg-label">text') : pair.index('seg-label">pair')]
    assert ">guitar</span>" in text_line and ">instrument</span>" not in text_line


def test_hostile_text_is_escaped_everywhere(page: str) -> None:
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert "onerror=alert(2)&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img" in page
    assert "data/&lt;b&gt;reviews&lt;/b&gt;.jsonl" in page
    parsed = _parse(page)
    assert not any(tag in {"script", "img", "iframe", "object"} for tag, _ in parsed.start_tags)
    assert not any(name.startswith("on") for _, attrs in parsed.start_tags for name in attrs), (
        "an event-handler attribute reached the markup"
    )
    assert HOSTILE_TEXT.split(" ")[0] in "".join(parsed.text)


def test_page_is_self_contained(page: str) -> None:
    lowered = page.lower()
    assert "http://" not in lowered and "https://" not in lowered
    for fetching in ("<link", "@import", "url(", "<iframe", "<object", "<embed"):
        assert fetching not in lowered
    # No element fetches anything; " src=" may appear as escaped dataset text (the hostile
    # row's "<img src=x" shown whole in a table cell), never as an attribute.
    attributes = [
        (name, value or "") for _, attrs in _parse(page).start_tags for name, value in attrs.items()
    ]
    assert not any(name in ("src", "srcset") for name, _ in attributes)
    assert all(value.startswith("#") for name, value in attributes if name == "href")
    assert "default-src 'none'" in page  # the CSP that forbids any fetch


def test_fingerprints_are_shortened_with_the_full_value_in_a_title(
    failed_result: AuditResult, page: str
) -> None:
    fingerprint = failed_result.manifest.reference.fingerprint
    shortened = f"{fingerprint[:19]}…{fingerprint[-6:]}"
    assert f'title="{fingerprint}">{shortened}</code>' in page


def test_manifest_lists_settings_versions_seed_and_timings(page: str) -> None:
    manifest = page[page.index('<section id="manifest"') :]
    for expected in (
        '<th colspan="2">calibration</th>',
        "<code>n_bins</code></th><td>15</td>",
        "<code>methods</code></th><td>lime, shap</td>",
        "<code>accuracy_drop.threshold</code></th><td>0.01</td>",
        '<th colspan="2">run</th>',  # top-level scalars such as the seed
        "transformers",
        "4.57.0",
        "int8-dynamic",
        "22,713,602",
        "1 min 35 s",
        "<th>Seed</th><td>0</td>",
    ):
        assert expected in manifest


def test_a_version_1_document_with_every_row_still_loads_and_renders(page: str) -> None:
    old = build_audit_result(passed=False, schema_version="1")
    assert len(old.instances) == 24
    reloaded = AuditResult.model_validate_json(old.model_dump_json())
    assert reloaded.schema_version == "1"
    assert reloaded.rows is None
    old_page = render_report(reloaded)
    # The same explained instances are shown: the unexplained rows never reach the page.
    section = re.compile(r'<section id="instances".*?</section>', re.S)
    assert section.search(old_page).group(0) == section.search(page).group(0)  # type: ignore[union-attr]


def test_missing_values_render_as_dashes() -> None:
    result = build_audit_result()
    document = result.model_dump()
    document["calibration"]["delta"].pop("nll")
    document["alignment"]["lime"]["jaccard_at_k"].update(mean=None, median=None, ci_low=None)
    document["alignment"]["shap"]["noise_floor"] = None
    document["gate"]["checks"][0].update(value=None, ci_low=None, ci_high=None)
    for binned in document["calibration"]["candidate"]["reliability"]:
        for reliability_bin in binned["bins"]:
            reliability_bin.update(count=0, mean_confidence=None, accuracy=None)
    page = render_report(AuditResult.model_validate(document))
    assert _parse(page).errors == []
    assert "None" not in page and "nan" not in page.lower()
    assert "No noise floor was computed" in page


def test_report_module_imports_no_heavy_dependency() -> None:
    code = (
        "import sys, trustdiff.report; "
        "heavy = {'torch', 'fastapi', 'sqlalchemy', 'celery', 'transformers', 'matplotlib'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "[]"


def _section(page: str, name: str) -> str:
    start = page.index(f'<section id="{name}"')
    return page[start : page.index("</section>", start)]


def test_parity_shows_the_directional_flip_rates(page: str) -> None:
    parity = _section(page, "parity")
    assert "Negative flip rate</span><b>0.025</b>" in parity
    assert "[0.010, 0.045]" in parity
    assert "Positive flip rate</span><b>0.020</b>" in parity


def test_slices_are_sorted_by_agreement_with_intervals_and_failures_marked(
    failed_result: AuditResult,
) -> None:
    slices = _section(render_report(failed_result), "slices")
    assert failed_result.slices is not None
    rows = re.findall(r'<tr class="slice (\w+)">', slices)
    assert len(rows) == len(failed_result.slices.slices)
    agreements = [item.agreement.value for item in failed_result.slices.slices]
    assert agreements == sorted(agreements)
    failing = [item for item in failed_result.slices.slices if item.failing]
    assert failing and rows.count("fail") == len(failing)
    assert "misses the agreement threshold" in slices
    assert "the slice checks are not part of this audit's gate" in slices
    # The slice named by hostile text is shown as text.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in slices


def test_output_distance_lists_the_most_divergent_rows_escaped(
    failed_result: AuditResult,
) -> None:
    section = _section(render_report(failed_result), "divergence")
    assert failed_result.divergence is not None
    assert section.count('<tr><td class="num">') == len(failed_result.divergence.most_divergent)
    assert 'aria-label="Per-row KL divergence histogram"' in section
    first = section.index("<tbody>", section.index("most divergent"))
    # Row 0 (the hostile one) flips hardest, so it heads the list, escaped.
    assert section.index("&lt;script&gt;", first) < section.index("</tr>", first + 10)
    assert "negative 0.970 · positive 0.030" in section


def test_review_groups_disagreements_and_escapes_their_text(page: str) -> None:
    review = _section(page, "review")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in review
    assert re.search(r'<b class="ref">negative</b> → <b class="cand">positive</b>', review)


def test_alignment_shows_faithfulness(page: str) -> None:
    alignment = _section(page, "alignment")
    assert alignment.count("Faithfulness (ERASER AOPC") == 2
    assert "[−0.090, +0.010]" in alignment


def test_a_document_from_before_the_new_sections_still_renders() -> None:
    page = render_report(build_audit_result(with_breakdown=False))
    assert "No slices in this result." in page
    assert "No output distances in this result." in page
    assert "No disagreement exemplars in this result." in page
    assert "Smooth reliability diagram" not in page
