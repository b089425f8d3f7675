"""Numbers as people read them, one set of rules for the HTML report and the CLI summary.

A value is shown with a fixed number of digits; a value that rounds to zero is shown without
a sign (never "-0.000"); a missing or non-finite value is shown as one agreed placeholder,
never as "None" or "nan". The page and the terminal differ only in their `NumberStyle`: the
page uses the typographic minus sign and an em dash, the terminal stays ASCII so that any
console encoding can print it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeGuard

__all__ = [
    "PAGE",
    "TERMINAL",
    "NumberStyle",
    "format_interval",
    "format_number",
    "format_p_value",
    "is_finite",
]


@dataclass(frozen=True)
class NumberStyle:
    """How one medium writes numbers: default digits, the minus sign, the missing value."""

    digits: int
    minus: str
    missing: str


PAGE = NumberStyle(digits=3, minus="−", missing="—")
TERMINAL = NumberStyle(digits=4, minus="-", missing="n/a")


def is_finite(value: float | None) -> TypeGuard[float]:
    """True for a real, finite number; False for None, NaN and ±inf."""
    return value is not None and math.isfinite(value)


def format_number(
    value: float | None,
    *,
    digits: int | None = None,
    signed: bool = False,
    style: NumberStyle = PAGE,
) -> str:
    """`value` with `digits` decimals (the style's by default); `signed` adds "+" to positives.

    A value that rounds to zero at `digits` decimals is written "0.000", unsigned; a missing
    or non-finite value is written as `style.missing`.
    """
    if not is_finite(value):
        return style.missing
    places = style.digits if digits is None else digits
    if round(value, places) == 0:
        return f"{0.0:.{places}f}"
    text = f"{value:+.{places}f}" if signed else f"{value:.{places}f}"
    return text.replace("-", style.minus)


def format_interval(
    low: float | None,
    high: float | None,
    *,
    digits: int | None = None,
    signed: bool = False,
    style: NumberStyle = PAGE,
) -> str:
    """ "[low, high]"; `style.missing` when either bound is missing or non-finite."""
    if not (is_finite(low) and is_finite(high)):
        return style.missing
    bounds = (
        format_number(bound, digits=digits, signed=signed, style=style) for bound in (low, high)
    )
    return "[{}, {}]".format(*bounds)


def format_p_value(value: float | None, *, style: NumberStyle = PAGE) -> str:
    """A p-value with three decimals; below 0.001 it is written "< 0.001"."""
    if not is_finite(value):
        return style.missing
    return "< 0.001" if value < 0.001 else f"{value:.3f}"
