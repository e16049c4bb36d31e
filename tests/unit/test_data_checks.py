"""Data checks on small frames whose outcomes are computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from dagster_project.quality.checks import class_balance, completeness, duplicate_rate, pii_residual
from dagster_project.quality.result import GateResult
from dagster_project.stages.pii import apply_policy


def as_json(outcome: GateResult) -> str:
    """The record as it is committed on the batch branch (fails if anything in it is not plain JSON)."""
    return outcome.to_json().decode()


# ------------------------------------------------------------------------------------------ completeness

INCOMPLETE = pd.DataFrame(
    {
        "record_id": ["r1", "r2", "r3", "r4"],
        "text": ["fine", "", "   ", "also fine"],
        "label": ["a", "b", None, "c"],
        "score": [0.1, np.nan, 0.3, 0.4],
    }
)


def test_completeness_hand_computed() -> None:
    # r1 and r4 have text and label; r2 has a blank text; r3 a whitespace-only text and no label -> 2/4.
    outcome = completeness(INCOMPLETE, ["text", "label"])
    assert outcome.value == 0.5
    assert not outcome.passed and outcome.threshold == 0.99 and outcome.comparison == ">="
    assert outcome.sample_size == 4
    assert outcome.worst == [
        {"record_id": "r3", "missing": ["text", "label"]},
        {"record_id": "r2", "missing": ["text"]},
    ]
    as_json(outcome)


def test_completeness_passes_at_its_threshold() -> None:
    assert completeness(INCOMPLETE, ["text", "label"], threshold=0.5).passed
    # Only "score" required: r2 has NaN -> 3/4.
    outcome = completeness(INCOMPLETE, ["score"], threshold=0.75)
    assert outcome.value == 0.75 and outcome.passed
    assert outcome.worst == [{"record_id": "r2", "missing": ["score"]}]


def test_completeness_of_a_missing_column_and_an_empty_frame() -> None:
    outcome = completeness(INCOMPLETE, ["label", "not_there"])
    assert outcome.value == 0.0 and len(outcome.worst) == 4
    assert outcome.worst[0] == {"record_id": "r3", "missing": ["label", "not_there"]}
    empty = completeness(INCOMPLETE.iloc[0:0], ["text"])
    assert empty.value == 1.0 and empty.passed and empty.sample_size == 0 and empty.worst == []


def test_completeness_keeps_only_ten_worst() -> None:
    frame = pd.DataFrame({"record_id": range(30), "text": [""] * 25 + ["x"] * 5})
    outcome = completeness(frame, ["text"])
    assert outcome.value == pytest.approx(5 / 30)
    assert [w["record_id"] for w in outcome.worst] == list(range(10))
    assert isinstance(outcome.worst[0]["record_id"], int)  # JSON-able, not a numpy integer


def test_completeness_with_a_duplicated_index() -> None:
    frame = INCOMPLETE.set_axis([0, 0, 1, 1])
    outcome = completeness(frame, ["text", "label"])
    assert outcome.value == 0.5 and [w["record_id"] for w in outcome.worst] == ["r3", "r2"]


def test_outcome_is_frozen() -> None:
    outcome = completeness(INCOMPLETE, ["text"])
    with pytest.raises(ValidationError):
        outcome.passed = True  # type: ignore[misc]


# ------------------------------------------------------------------------------------------ class balance


def test_class_balance_hand_computed() -> None:
    labels = pd.Series(["a"] * 6 + ["b"] * 3 + ["c"] * 1)
    # shares a 6/10, b 3/10, c 1/10, d never seen 0 -> value 0; under 0.15: d then c.
    outcome = class_balance(labels, ["a", "b", "c", "d"], min_share=0.15)
    assert outcome.value == 0.0 and not outcome.passed
    assert outcome.worst == [{"class": "d", "count": 0, "share": 0.0}, {"class": "c", "count": 1, "share": 0.1}]
    assert outcome.sample_size == 10 and outcome.comparison == ">="
    # Only a and b: the smallest share is 0.3 >= 0.25.
    passing = class_balance(labels, ["a", "b"], min_share=0.25)
    assert passing.value == pytest.approx(0.3) and passing.passed and passing.worst == []


def test_class_balance_counts_unknown_labels_and_skips_nulls() -> None:
    labels = pd.Series(["a", "a", "x", "x", None])
    # 4 non-null labels, 2 of them "a" -> 0.5
    outcome = class_balance(labels, ["a"], min_share=0.5)
    assert outcome.value == 0.5 and outcome.passed and outcome.sample_size == 4


def test_class_balance_of_no_labels_fails() -> None:
    outcome = class_balance(pd.Series([], dtype=object), ["a", "b"], min_share=0.1)
    assert outcome.value == 0.0 and not outcome.passed and len(outcome.worst) == 2


# ------------------------------------------------------------------------------------------ duplicates


def test_duplicate_rate() -> None:
    ok = duplicate_rate(5, 200, threshold=0.05)  # 5/200 = 0.025
    assert ok.value == 0.025 and ok.passed and ok.comparison == "<=" and ok.sample_size == 200
    bad = duplicate_rate(11, 200, threshold=0.05)  # 11/200 = 0.055
    assert bad.value == 0.055 and not bad.passed
    assert duplicate_rate(10, 200, threshold=0.05).passed  # exactly at the threshold
    assert duplicate_rate(0, 0, threshold=0.0).value == 0.0
    with pytest.raises(ValueError, match="n_duplicates"):
        duplicate_rate(3, 2, threshold=0.1)


# ------------------------------------------------------------------------------------------ PII residual

WITH_PII = pd.DataFrame(
    {
        "record_id": ["r1", "r2", "r3"],
        "text": [
            "Contact me at alex.smith@example.co.uk.",
            "Order 12345678 shipped on 2024-01-15.",
            "Card 4111 1111 1111 1111 or call 07700 900123.",
        ],
    }
)


def test_pii_residual_counts_matches_and_names_records_not_values() -> None:
    outcome = pii_residual(WITH_PII, "text")
    assert outcome.value == 3.0 and not outcome.passed and outcome.threshold == 0.0
    assert outcome.sample_size == 3
    assert outcome.worst == [
        {"record_id": "r3", "matches": 2, "kinds": ["card", "phone"]},
        {"record_id": "r1", "matches": 1, "kinds": ["email"]},
        {"findings_by_kind": {"card": 1, "email": 1, "phone": 1}},  # over every finding, not only the worst
        {"records_with_pii": "2 of 3"},
    ]
    text = as_json(outcome)
    assert "example.co.uk" not in text and "4111" not in text and "900123" not in text


def test_pii_residual_after_redaction_and_with_a_tolerance() -> None:
    redacted = apply_policy(WITH_PII, "text", "redact").records
    clean = pii_residual(redacted, "text")
    assert clean.value == 0.0 and clean.passed and clean.worst == []
    assert pii_residual(WITH_PII, "text", threshold=3).passed
