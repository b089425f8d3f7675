"""The SVG canvas: escaped text, round ticks, and labels that never collide or clip."""

from __future__ import annotations

import itertools
import random
import xml.etree.ElementTree as ET

import pytest

from trustdiff.report.svg import Label, SvgCanvas, place_labels, text_width, ticks


def _boxes_apart(starts: list[float], widths: list[float], gap: float) -> bool:
    spans = sorted(zip(starts, widths, strict=True))
    return all(a + wa + gap <= b + 1e-9 for (a, wa), (b, _) in itertools.pairwise(spans))


def test_labels_that_fit_stay_where_they_want_to_be() -> None:
    assert place_labels([(10.0, 30.0), (100.0, 40.0)], low=0.0, high=440.0) == [10.0, 100.0]


def test_colliding_labels_are_pushed_apart_in_their_order() -> None:
    starts = place_labels([(100.0, 50.0), (120.0, 50.0)], low=0.0, high=440.0, gap=6.0)
    assert starts == [100.0, 156.0]


def test_a_label_past_the_right_edge_is_pulled_in_and_pushes_its_neighbour() -> None:
    starts = place_labels([(380.0, 50.0), (400.0, 60.0)], low=2.0, high=438.0, gap=6.0)
    assert starts[1] + 60.0 == 438.0
    assert starts[0] + 50.0 + 6.0 == starts[1]


def test_a_label_past_the_left_edge_is_pushed_in() -> None:
    assert place_labels([(-30.0, 50.0)], low=2.0, high=438.0) == [2.0]


def test_labels_that_cannot_fit_raise() -> None:
    with pytest.raises(ValueError, match="labels need"):
        place_labels([(0.0, 300.0), (10.0, 300.0)], low=0.0, high=440.0)


def test_random_labels_never_overlap_nor_leave_the_range() -> None:
    rng = random.Random(7)
    for _ in range(500):
        count = rng.randint(1, 6)
        boxes = [(rng.uniform(-100, 540), rng.uniform(10, 70)) for _ in range(count)]
        if sum(width for _, width in boxes) + 6.0 * (count - 1) > 436.0:
            continue
        starts = place_labels(boxes, low=2.0, high=438.0, gap=6.0)
        widths = [width for _, width in boxes]
        assert _boxes_apart(starts, widths, 6.0), (boxes, starts)
        inside = (
            s >= 2.0 - 1e-9 and s + w <= 438.0 + 1e-9 for s, w in zip(starts, widths, strict=True)
        )
        assert all(inside), (boxes, starts)
        # Order along the line is the order of the wanted positions.
        assert sorted(range(count), key=lambda i: (boxes[i][0], i)) == sorted(
            range(count), key=lambda i: (starts[i], i)
        )


def test_canvas_labels_keep_an_unmoved_left_label_against_its_anchor() -> None:
    svg = SvgCanvas(440, 100, label="labels", plot=(50, 20, 420, 80))
    svg.labels([Label("mean 0.30", 150.0, "left"), Label("floor 0.99", 430.0, "right")], y=10)
    texts = ET.fromstring(str(svg.render())).findall("text")
    mean, floor = (t for t in texts if t.text and t.text.startswith(("mean", "floor")))
    assert (mean.get("x"), mean.get("text-anchor")) == ("146.0", "end")
    floor_start = float(floor.get("x", "nan"))
    assert floor.get("text-anchor") == "start"
    assert floor_start + text_width("floor 0.99", 10) <= 438.0


def test_every_text_reaching_the_svg_is_escaped() -> None:
    hostile = '</text><script>alert(1)</script><a onclick="x">&'
    svg = SvgCanvas(400, 100, label=hostile, plot=(10, 10, 390, 90))
    svg.text(5, 5, hostile)
    svg.rect(0, 0, 5, 5, fill="#000", tooltip=hostile)
    svg.circle(5, 5, 2, fill="#000", tooltip=hostile)
    svg.legend([(hostile, "#000", "box")], x=0, y=0)
    svg.labels([Label(hostile, 100.0, "right")], y=50)
    markup = str(svg.render())
    assert "<script" not in markup and "<a " not in markup
    root = ET.fromstring(markup)  # well-formed XML: no text broke out of its element
    assert root.get("aria-label") == hostile
    texts = [element.text for element in root.iter() if element.text]
    assert texts.count(hostile) == 6  # the title, a text, 2 tooltips, a legend and a label


def test_ticks_are_round_and_cover_the_range() -> None:
    assert ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert ticks(0.0, 7.0, 4) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert ticks(0.85, 1.0, 6) == [0.85, 0.9, 0.95, 1.0]
    assert ticks(0.0, 0.93) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]  # ends on a tick past the top
    assert ticks(0.5, 0.5) == [0.5]
