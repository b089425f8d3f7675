"""The demo's side-by-side table, from result documents."""

from __future__ import annotations

from demo.run import format_table, summary_row


def test_the_demo_table_shows_negative_flips_and_the_worst_judged_slice() -> None:
    result = {
        "parity": {
            "reference": {"accuracy": 0.82},
            "candidate": {"accuracy": 0.79},
            "agreement": 0.9,
            "negative_flip_rate": {"value": 0.061},
        },
        "calibration": {"delta": {"ece": {"value": 0.01, "ci_low": -0.01, "ci_high": 0.03}}},
        "alignment": {},
        "slices": {
            "slices": [
                {"column": "length", "value": "Q1: 1–5 words", "judged": False,
                 "agreement": {"value": 0.5}},
                {"column": "gold label", "value": "negative", "judged": True,
                 "agreement": {"value": 0.84}},
                {"column": "length", "value": "Q4: 30–80 words", "judged": True,
                 "agreement": {"value": 0.88}},
            ]
        },
        "gate": {"passed": False},
    }  # fmt: skip
    row = summary_row("int8", result)
    assert row[3:5] == ["0.061", "0.840 (gold label: negative)"]
    table = format_table([row])
    assert "neg. flips" in table and "worst slice agreement" in table
    # A document from before the new sections still fills the row.
    del result["slices"], result["parity"]["negative_flip_rate"]
    assert summary_row("int8", result)[3:5] == ["—", "—"]
