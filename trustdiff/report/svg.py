"""A small SVG canvas for the report's plots; all markup is built through escaping `Markup`.

Every element is produced by `Markup.format`, which escapes each argument that is not itself
markup: a label or a tooltip may carry dataset text, and it reaches the page as text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from markupsafe import Markup

__all__ = ["Label", "SvgCanvas", "place_labels", "text_width", "ticks"]

AXIS_COLOUR = "#8c959f"
GRID_COLOUR = "#e6e9ed"
TEXT_COLOUR = "#59636e"
INK_COLOUR = "#1f2328"
# Average advance of a character of the page's sans-serif font, in font sizes. Digits are
# about 0.55 em wide in the usual system fonts; 0.6 leaves room for wider letters.
CHARACTER_WIDTH_EM = 0.6


def _f(value: float) -> str:
    return f"{value:.1f}"


class SvgCanvas:
    """A fixed-size SVG canvas with one rectangular plot area and linear scales.

    Callers draw in data units through `x()`/`y()` or in pixels directly. `plot` is the
    plot area as (left, top, right, bottom) pixels; domains map onto it linearly.
    """

    def __init__(
        self,
        width: int,
        height: int,
        *,
        label: str,
        plot: tuple[float, float, float, float],
        x_domain: tuple[float, float] = (0.0, 1.0),
        y_domain: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        self.width, self.height, self.label = width, height, label
        self.left, self.top, self.right, self.bottom = plot
        self.x_domain, self.y_domain = x_domain, y_domain
        self.parts: list[Markup] = []

    def x(self, value: float) -> float:
        low, high = self.x_domain
        return self.left + (value - low) / ((high - low) or 1.0) * (self.right - self.left)

    def y(self, value: float) -> float:
        low, high = self.y_domain
        return self.bottom - (value - low) / ((high - low) or 1.0) * (self.bottom - self.top)

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        *,
        stroke: str,
        width: float = 1.0,
        dash: str | None = None,
    ) -> None:
        dash_attribute = Markup(' stroke-dasharray="{}"').format(dash) if dash else Markup()
        self.parts.append(
            Markup(
                '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="{}"{}/>'
            ).format(_f(x1), _f(y1), _f(x2), _f(y2), stroke, width, dash_attribute)
        )

    def rect(
        self,
        x: float,
        y: float,
        width: float,
        height: float,
        *,
        fill: str,
        opacity: float = 1.0,
        tooltip: str | None = None,
    ) -> None:
        self.parts.append(
            Markup(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}" fill-opacity="{}">{}</rect>'
            ).format(
                _f(x),
                _f(y),
                _f(max(width, 0.0)),
                _f(max(height, 0.0)),
                fill,
                f"{opacity:.2f}",
                _tooltip(tooltip),
            )
        )

    def circle(
        self, cx: float, cy: float, radius: float, *, fill: str, tooltip: str | None = None
    ) -> None:
        self.parts.append(
            Markup(
                '<circle cx="{}" cy="{}" r="{}" fill="{}" fill-opacity="0.85" stroke="#ffffff" '
                'stroke-width="1">{}</circle>'
            ).format(_f(cx), _f(cy), _f(radius), fill, _tooltip(tooltip))
        )

    def polyline(self, points: Sequence[tuple[float, float]], *, stroke: str) -> None:
        if len(points) < 2:
            return
        coordinates = " ".join(f"{_f(px)},{_f(py)}" for px, py in points)
        self.parts.append(
            Markup(
                '<polyline points="{}" fill="none" stroke="{}" stroke-width="2" '
                'stroke-linejoin="round"/>'
            ).format(coordinates, stroke)
        )

    def text(
        self,
        x: float,
        y: float,
        content: str,
        *,
        anchor: str = "start",
        size: float = 11,
        fill: str = TEXT_COLOUR,
        weight: str | None = None,
        rotate: bool = False,
    ) -> None:
        extra = Markup(' font-weight="{}"').format(weight) if weight else Markup()
        if rotate:
            extra += Markup(' transform="rotate(-90 {} {})"').format(_f(x), _f(y))
        self.parts.append(
            Markup(
                '<text x="{}" y="{}" text-anchor="{}" font-size="{}" fill="{}"{}>{}</text>'
            ).format(_f(x), _f(y), anchor, size, fill, extra, content)
        )

    def axes(
        self,
        *,
        x_ticks: Sequence[float],
        y_ticks: Sequence[float],
        x_label: str,
        y_label: str,
        x_format: str = "{:.1f}",
        y_format: str = "{:.1f}",
    ) -> None:
        """Light grid lines at the ticks, the two axis lines, tick labels and axis titles."""
        for tick in y_ticks:
            self.line(self.left, self.y(tick), self.right, self.y(tick), stroke=GRID_COLOUR)
            self.text(self.left - 6, self.y(tick) + 4, y_format.format(tick), anchor="end")
        for tick in x_ticks:
            self.line(self.x(tick), self.top, self.x(tick), self.bottom, stroke=GRID_COLOUR)
            self.text(self.x(tick), self.bottom + 15, x_format.format(tick), anchor="middle")
        self.line(self.left, self.bottom, self.right, self.bottom, stroke=AXIS_COLOUR)
        self.line(self.left, self.top, self.left, self.bottom, stroke=AXIS_COLOUR)
        self.text((self.left + self.right) / 2, self.bottom + 32, x_label, anchor="middle")
        self.text(14, (self.top + self.bottom) / 2, y_label, anchor="middle", rotate=True)

    def legend(
        self,
        items: Sequence[tuple[str, str, str]],
        *,
        x: float,
        y: float,
        columns: int = 1,
        column_width: float = 0.0,
    ) -> None:
        """Items are (label, colour, mark) with mark "line", "dash" or "box", row by row."""
        for position, (label, colour, mark) in enumerate(items):
            row, column = divmod(position, columns)
            item_x, item_y = x + column * column_width, y + row * 16
            if mark == "box":
                self.rect(item_x, item_y - 8, 12, 10, fill=colour)
            else:
                dash = "4 3" if mark == "dash" else None
                self.line(
                    item_x, item_y - 3, item_x + 14, item_y - 3, stroke=colour, width=2, dash=dash
                )
            self.text(item_x + 19, item_y + 1, label, fill=INK_COLOUR)

    def labels(self, labels: Sequence[Label], *, y: float, size: float = 10) -> None:
        """One row of labels, each near its anchor, none overlapping or leaving the canvas.

        Each label gets a box of its estimated width (`text_width`, generous); a label left of
        its anchor is drawn right-aligned in its box, so one that did not have to move ends
        exactly `offset` before its anchor, however wide the font turns out to be.
        """
        widths = [text_width(label.text, size) for label in labels]
        wanted = [
            label.anchor_x + label.offset
            if label.side == "right"
            else label.anchor_x - label.offset - width
            for label, width in zip(labels, widths, strict=True)
        ]
        boxes = list(zip(wanted, widths, strict=True))
        starts = place_labels(boxes, low=2.0, high=self.width - 2.0)
        for label, start, width in zip(labels, starts, widths, strict=True):
            if label.side == "right":
                self.text(start, y, label.text, size=size, fill=label.colour)
            else:
                self.text(start + width, y, label.text, anchor="end", size=size, fill=label.colour)

    def render(self) -> Markup:
        return Markup(
            '<svg class="plot" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
            'aria-label="{label}" font-family="inherit"><title>{label}</title>{body}</svg>'
        ).format(w=self.width, h=self.height, label=self.label, body=Markup().join(self.parts))


def _tooltip(text: str | None) -> Markup:
    return Markup("<title>{}</title>").format(text) if text else Markup()


@dataclass(frozen=True)
class Label:
    """A text naming a mark at `anchor_x`, preferably `offset` pixels to one `side` of it."""

    text: str
    anchor_x: float
    side: Literal["left", "right"]
    colour: str = TEXT_COLOUR
    offset: float = 4.0


def text_width(text: str, size: float) -> float:
    """A generous estimate of the rendered width of `text` at font size `size`, in pixels."""
    return CHARACTER_WIDTH_EM * size * len(text)


def place_labels(
    boxes: Sequence[tuple[float, float]], *, low: float, high: float, gap: float = 6.0
) -> list[float]:
    """Left edges for boxes of (wanted left edge, width) on one line, in their wanted order.

    Boxes keep the order of their wanted positions, are at least `gap` apart and lie within
    [low, high]; each moves as little as a left-to-right then right-to-left sweep allows.
    Raises ValueError when the boxes cannot fit side by side in [low, high].
    """
    needed = sum(width for _, width in boxes) + gap * max(len(boxes) - 1, 0)
    if needed > high - low:
        raise ValueError(f"labels need {needed:.0f} px, only {high - low:.0f} px available")
    order = sorted(range(len(boxes)), key=lambda i: (boxes[i][0], i))
    starts = [0.0] * len(boxes)
    edge = low
    for i in order:  # push right: off the left edge and off the previous box
        wanted, width = boxes[i]
        starts[i] = max(wanted, edge)
        edge = starts[i] + width + gap
    edge = high
    for i in reversed(order):  # pull left: off the right edge and off the next box
        width = boxes[i][1]
        starts[i] = min(starts[i], edge - width)
        edge = starts[i] - gap
    return starts


def ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    value = math.ceil(low / step - 1e-9) * step
    values = []
    while value <= high + 1e-9:
        values.append(round(value, 10))
        value += step
    if values[-1] < high - 1e-9:
        # Axes end on a tick, so the largest value (a bar, a point) stays inside the plot.
        values.append(round(value, 10))
    return values
