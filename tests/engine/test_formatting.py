"""Shared number formatting: the report's and the CLI summary's rules, written down once."""

from __future__ import annotations

import math

import pytest

from trustdiff.formatting import (
    PAGE,
    TERMINAL,
    format_interval,
    format_number,
    format_p_value,
    is_finite,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.12345, "0.123"), (1.0, "1.000"), (-0.25, "−0.250"), (12.5, "12.500"), (0.0, "0.000")],
)
def test_page_numbers_use_three_digits_and_a_true_minus(value: float, expected: str) -> None:
    assert format_number(value) == expected


def test_terminal_numbers_are_ascii_with_four_digits() -> None:
    assert format_number(-0.25, style=TERMINAL) == "-0.2500"
    assert format_number(0.12345, signed=True, style=TERMINAL) == "+0.1235"
    assert format_interval(-0.02, 0.01, style=TERMINAL) == "[-0.0200, 0.0100]"
    assert format_number(None, style=TERMINAL) == "n/a"
    for text in (format_number(-1e9, style=TERMINAL), format_interval(-1, 1, style=TERMINAL)):
        assert text.isascii()


@pytest.mark.parametrize("value", [-0.0004, 0.0, -0.0, 0.0004])
def test_a_value_that_rounds_to_zero_has_no_sign(value: float) -> None:
    assert format_number(value) == "0.000"
    assert format_number(value, signed=True) == "0.000"
    assert format_number(value, digits=2, signed=True, style=TERMINAL) == "0.00"


def test_signed_numbers_carry_plus_and_minus() -> None:
    assert format_number(0.0125, signed=True) == "+0.013"  # 0.0125 is stored just above
    assert format_number(-0.5, signed=True) == "−0.500"
    assert format_number(3.0, digits=0, signed=True) == "+3"


@pytest.mark.parametrize("value", [None, math.nan, math.inf, -math.inf])
def test_missing_and_non_finite_values_are_the_style_placeholder(value: float | None) -> None:
    assert not is_finite(value)
    assert format_number(value) == PAGE.missing == "—"
    assert format_number(value, signed=True, style=TERMINAL) == "n/a"
    assert format_interval(value, 1.0) == "—"
    assert format_interval(0.0, value, style=TERMINAL) == "n/a"
    assert format_p_value(value) == "—"


def test_intervals_format_both_bounds_alike() -> None:
    assert format_interval(0.012, 0.05) == "[0.012, 0.050]"
    assert format_interval(0.012, 0.05, signed=True) == "[+0.012, +0.050]"
    assert format_interval(-0.02, 0.01, signed=True) == "[−0.020, +0.010]"
    assert format_interval(0.5, 0.75, digits=1) == "[0.5, 0.8]"


def test_p_values_below_a_thousandth_are_bounded() -> None:
    assert format_p_value(0.0004) == "< 0.001"
    assert format_p_value(0.001) == "0.001"
    assert format_p_value(0.5) == "0.500"
