"""The demo's side-by-side table, from result documents."""

from __future__ import annotations

from typing import Any

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


def _result(*, agreement: float, twin: bool) -> dict[str, Any]:
    ece = {"value": 0.01, "ci_low": -0.01, "ci_high": 0.03}
    section = {
        "reference": {"accuracy": 0.82},
        "candidate": {"accuracy": 0.80},
        "agreement": agreement,
    }
    jaccard = {"jaccard_at_k": {"mean": 0.6}}
    return {
        "parity": {**section, "twin": {**section, "agreement": 0.93} if twin else None},
        "calibration": {"delta": {"ece": ece}, "twin": {"delta": {"ece": ece}} if twin else None},
        "alignment": {
            "lime": {**jaccard, "noise_floor": {"jaccard_at_k": {"mean": 0.7}},
                     "twin": jaccard if twin else None},
            "shap": {**jaccard, "noise_floor": {"deterministic": True},
                     "twin": jaccard if twin else None},
        },
        "gate": {
            "passed": False,
            "checks": [
                {"name": "agreement", "comparison": ">=", "value": agreement,
                 "threshold": 0.88, "passed": agreement >= 0.88,
                 "judged_relative_to": "twin" if twin else "absolute"},
            ],
        },
    }  # fmt: skip


def test_the_table_has_a_twin_row_and_columns_against_the_twin() -> None:
    from demo.run import summary_text, twin_row

    result = _result(agreement=0.85, twin=True)
    row = summary_row("pruned", result)
    assert row[6:8] == ["0.60 (0.70)", "0.60 (det.)"]  # SHAP is deterministic: no floor
    assert row[9:12] == ["—", "0.850 ≥ 0.880 FAIL", "—"]
    twin = twin_row(result)
    assert twin is not None and twin[0] == "twin (retrain)" and twin[2] == "0.930"
    text = summary_text([("pruned", result)])
    assert "twin (retrain)" in text and "agreement vs twin" in text
    assert twin_row(_result(agreement=0.9, twin=False)) is None
    assert summary_row("pruned", _result(agreement=0.9, twin=False))[10] == "—"


def test_every_audit_body_names_the_twin() -> None:
    from demo.run import audit_body
    from demo.settings import CandidateSettings, RunSettings

    settings = RunSettings(audit={"seed": 0})
    body = audit_body(settings, CandidateSettings(name="pruned", path="pruned"), "d1")
    assert body["twin"] == {"path": "twin"} and body["reference"] == {"path": "reference"}
    no_twin = settings.model_copy(update={"twin": None})
    assert "twin" not in audit_body(no_twin, CandidateSettings(name="p", path="p"), "d1")
