"""The report's plots: the alignment histogram's mean labels, the check strip."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from trustdiff.report.plots import alignment_histogram, check_strip
from trustdiff.report.svg import text_width
from trustdiff.result import GateCheck, Histogram, MetricSummary

EDGES = [i / 10 for i in range(11)]


def _summary(mean: float | None, counts: list[int] | None = None) -> MetricSummary:
    counts = counts if counts is not None else [0, 0, 0, 1, 2, 3, 4, 3, 2, 1]
    return MetricSummary(
        mean=mean, median=mean, ci_low=None, ci_high=None, n=sum(counts),
        histogram=Histogram(edges=EDGES, counts=counts),
    )  # fmt: skip


def _mean_labels(svg: str) -> dict[str, tuple[float, float]]:
    """The "mean"/"floor" labels as name -> (left, right) of their estimated text box."""
    boxes = {}
    for text in ET.fromstring(svg).iter("text"):
        content = text.text or ""
        if not content.startswith(("mean ", "floor ")):
            continue
        x = float(text.get("x", "nan"))
        width = text_width(content, float(text.get("font-size", "nan")))
        left = x - width if text.get("text-anchor") == "end" else x
        assert text.get("text-anchor") in ("start", "end")
        boxes[content.split()[0]] = (left, left + width)
    return boxes


def _line_x(svg: str, colour: str) -> float:
    lines = [
        line for line in ET.fromstring(svg).iter("line")
        if line.get("stroke") == colour and line.get("stroke-dasharray") == "5 3"
    ]  # fmt: skip
    assert len(lines) == 1
    return float(lines[0].get("x1", "nan"))


@pytest.mark.parametrize(
    ("between", "floor"),
    [
        (0.70, 0.71),
        (0.71, 0.70),
        (0.74, 0.70),
        (0.70, 0.70),
        (0.35, 0.99),
        (0.99, 0.98),
        (0.0, 0.01),
    ],
)
def test_mean_and_floor_labels_never_collide_nor_leave_the_canvas(
    between: float, floor: float
) -> None:
    svg = str(alignment_histogram("LIME", 10, _summary(between), _summary(floor)))
    boxes = _mean_labels(svg)
    assert set(boxes) == {"mean", "floor"}
    (_, first_right), (second_left, _) = sorted(boxes.values())
    assert first_right + 4 <= second_left, boxes
    width = float(ET.fromstring(svg).get("width", "nan"))
    assert all(left >= 0 and right <= width for left, right in boxes.values()), boxes


def test_labels_part_towards_the_side_of_their_own_line() -> None:
    svg = str(alignment_histogram("LIME", 10, _summary(0.70), _summary(0.71)))
    boxes = _mean_labels(svg)
    # The smaller mean (between models) is labelled on the left, the floor on the right.
    assert boxes["mean"][1] <= _line_x(svg, "#173f6b")
    assert boxes["floor"][0] >= _line_x(svg, "#1f2328")
    assert "mean 0.70" in svg and "floor 0.71" in svg


def test_a_floor_near_the_right_end_keeps_its_label_inside() -> None:
    svg = str(alignment_histogram("SHAP", 10, _summary(0.40), _summary(0.99)))
    boxes = _mean_labels(svg)
    assert boxes["floor"][1] <= 440 - 2
    # Still next to its line: it moved only as far as the edge required.
    assert boxes["floor"][0] < _line_x(svg, "#1f2328")
    assert boxes["floor"][1] > _line_x(svg, "#1f2328")


def test_one_mean_without_a_floor_is_labelled_alone() -> None:
    svg = str(alignment_histogram("LIME", 10, _summary(0.02), None))
    boxes = _mean_labels(svg)
    assert set(boxes) == {"mean"} and boxes["mean"][0] >= 0


def test_missing_means_draw_no_line_and_no_label() -> None:
    svg = str(alignment_histogram("LIME", 10, _summary(None, [0] * 10), _summary(None, [0] * 10)))
    assert _mean_labels(svg) == {}
    assert "no explained instances" in svg


def test_check_strip_without_numbers_is_none() -> None:
    check = GateCheck(
        name="x", pillar="parity", value=None, threshold=float("nan"), comparison="<=",
        judged_on="value", passed=False,
    )  # fmt: skip
    assert check_strip(check) is None
