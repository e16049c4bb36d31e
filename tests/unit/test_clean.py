"""The clean stage: text normalisation, schema typing and range checks, with precise quarantine reasons."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest

from dagster_project.records import LINEAGE_COLUMNS, QUARANTINE_COLUMNS, record_id_for
from dagster_project.stages.clean import CleanResult, clean_records, normalise_text
from dagster_project.tenants import FieldSpec, RecordSchema

from .fakes import INGESTED_AT

SOURCE = "s3://landing/acme/reviews/incoming/drop-1/part.jsonl"

SCHEMA = RecordSchema(
    fields={
        "review_id": FieldSpec(type="string"),
        "text": FieldSpec(type="string", max_length=20),
        "stars": FieldSpec(type="integer", minimum=1, maximum=5),
        "score": FieldSpec(type="number", minimum=0, maximum=1),
        "verified": FieldSpec(type="boolean"),
        "posted_at": FieldSpec(type="datetime"),
        "channel": FieldSpec(type="string", allowed=["web", "app"]),
    },
    required=["review_id", "text", "stars"],
    text_field="text",
    id_field="review_id",
)

VALID: dict[str, Any] = {
    "review_id": "R1",
    "text": "good",
    "stars": 4,
    "score": 0.5,
    "verified": True,
    "posted_at": "2026-11-01T08:00:00Z",
    "channel": "web",
}


def raw_frame(*payloads: dict[str, Any]) -> pd.DataFrame:
    """Raw-stage rows (lineage + JSON payload) for the given payloads, at lines 1..n of one file."""
    rows = [
        {
            "record_id": record_id_for(SOURCE, line),
            "batch_id": "drop-1",
            "source_uri": SOURCE,
            "source_line": line,
            "ingested_at": INGESTED_AT,
            "license": "client-owned",
            "consent_basis": "contract",
            "payload": json.dumps(payload, ensure_ascii=False),
        }
        for line, payload in enumerate(payloads, start=1)
    ]
    frame = pd.DataFrame(rows, columns=[*LINEAGE_COLUMNS, "payload"]).astype({"source_line": "Int64"})
    frame["ingested_at"] = pd.to_datetime(frame["ingested_at"], utc=True)
    return frame


def clean_one(**changes: Any) -> CleanResult:
    return clean_records(raw_frame({**VALID, **changes}), SCHEMA)


def reasons(result: CleanResult) -> list[tuple[str, str]]:
    return list(zip(result.quarantine["field"], result.quarantine["reason"], strict=True))


# ----------------------------------------------------------------------------------------------- normalisation


def test_nfkc_turns_full_width_characters_into_ascii() -> None:
    result = clean_one(text="ｆｉｎｅ　ｔｅｘｔ")  # full-width letters and space
    assert result.quarantine.empty
    assert result.records.loc[0, "text"] == "fine text"
    assert result.normalised_values == 1


def test_a_client_id_that_normalisation_would_change_is_held_back_not_changed() -> None:
    result = clean_one(review_id="ＡＢＣ１２３")  # the client's id, in full-width characters
    assert result.records.empty
    [(field, reason)] = reasons(result)
    assert field == "review_id" and "ids are never changed" in reason


def test_ligatures_and_control_characters() -> None:
    # "ﬁ" (U+FB01) -> "fi"; NUL, BEL, ESC, DEL, a C1 control and U+2028 are removed; tab and newline are kept.
    result = clean_one(text="\ufb01ne\x00\x07\x1b\x7f\x85\u2028 a\tb\nc")
    assert result.quarantine.empty
    assert result.records.loc[0, "text"] == "fine a\tb\nc"
    assert result.normalised_values == 1


def test_surrounding_whitespace_is_stripped_but_not_counted_as_normalisation() -> None:
    result = clean_one(text="  good  ")
    assert result.records.loc[0, "text"] == "good"
    assert result.normalised_values == 0


def test_normalise_text_directly() -> None:
    assert normalise_text(" Ｈｅｌｌｏ\x00 ") == "Hello"
    assert normalise_text("①") == "1"
    assert normalise_text("x\u2029y") == "xy"


@pytest.mark.parametrize("blank", ["", "   ", "\t\n", "\x00\x01", "\u3000"])  # \u3000 = ideographic space
def test_blank_required_field_counts_as_missing(blank: str) -> None:
    result = clean_one(text=blank)
    assert result.records.empty
    assert reasons(result) == [("text", "missing required field 'text'")]


def test_absent_and_null_optional_fields_are_null_not_errors() -> None:
    payload = {k: v for k, v in VALID.items() if k != "score"} | {"verified": None, "channel": "   "}
    result = clean_records(raw_frame(payload), SCHEMA)
    assert result.quarantine.empty
    row = result.records.iloc[0]
    assert pd.isna(row["score"]) and pd.isna(row["verified"]) and pd.isna(row["channel"])


# ------------------------------------------------------------------------------------------------------ typing


@pytest.mark.parametrize(("value", "expected"), [(4, 4), ("4", 4), (" 3 ", 3), ("5.0", 5), (2.0, 2), ("1e0", 1)])
def test_integer_coercion(value: Any, expected: int) -> None:
    result = clean_one(stars=value)
    assert result.quarantine.empty
    assert result.records.loc[0, "stars"] == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("12.5", "field 'stars' must be an integer, found '12.5'"),
        (2.5, "field 'stars' must be an integer, found 2.5"),
        ("four", "field 'stars' must be an integer, found 'four'"),
        (True, "field 'stars' must be an integer, found a boolean"),
        ("inf", "field 'stars' must be an integer, found 'inf'"),
        ([4], "field 'stars' must be an integer, found [4]"),
    ],
)
def test_integer_failures(value: Any, message: str) -> None:
    assert reasons(clean_one(stars=value)) == [("stars", message)]


@pytest.mark.parametrize(("value", "expected"), [(0.25, 0.25), ("0.75", 0.75), (1, 1.0), ("0", 0.0)])
def test_number_coercion(value: Any, expected: float) -> None:
    result = clean_one(score=value)
    assert result.records.loc[0, "score"] == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("nan", "field 'score' must be a finite number, found 'nan'"),
        ("half", "field 'score' must be a number, found 'half'"),
        (False, "field 'score' must be a number, found a boolean"),
    ],
)
def test_number_failures(value: Any, message: str) -> None:
    assert reasons(clean_one(score=value)) == [("score", message)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("yes", True), ("Y", True), ("1", True), ("TRUE", True), (False, False), ("no", False), ("f", False), (0, False)],
)
def test_boolean_coercion(value: Any, expected: bool) -> None:
    result = clean_one(verified=value)
    assert result.quarantine.empty
    assert result.records["verified"].tolist() == [expected]


def test_boolean_failure() -> None:
    assert reasons(clean_one(verified="maybe")) == [("verified", "field 'verified' must be a boolean, found 'maybe'")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-01T08:00:00Z", datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),
        ("2026-11-01T10:00:00+02:00", datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),
        ("2026-11-01 08:00", datetime(2026, 11, 1, 8, 0, tzinfo=UTC)),  # naive means UTC
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
    ],
)
def test_datetime_coercion_to_utc(value: str, expected: datetime) -> None:
    result = clean_one(posted_at=value)
    assert result.quarantine.empty
    assert result.records.loc[0, "posted_at"] == pd.Timestamp(expected)


@pytest.mark.parametrize("value", ["2026-13-01", "yesterday", "01/11/2026"])
def test_datetime_failures(value: str) -> None:
    assert reasons(clean_one(posted_at=value)) == [
        ("posted_at", f"field 'posted_at' must be an ISO-8601 date/time, found '{value}'")
    ]


def test_string_field_rejects_objects_and_stringifies_scalars() -> None:
    assert reasons(clean_one(review_id={"a": 1})) == [("review_id", "field 'review_id' must be a string, found dict")]
    assert clean_one(review_id=42).records.loc[0, "review_id"] == "42"


# ---------------------------------------------------------------------------------------------- range checks


def test_allowed_values() -> None:
    assert clean_one(channel="app").quarantine.empty
    assert reasons(clean_one(channel="fax")) == [("channel", "field 'channel' must be one of web, app, found 'fax'")]


def test_allowed_is_checked_after_normalisation() -> None:
    assert clean_one(channel="ｗｅｂ").records.loc[0, "channel"] == "web"  # full-width "web"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"stars": 0}, ("stars", "field 'stars' is 0, below the minimum 1")),
        ({"stars": "6"}, ("stars", "field 'stars' is 6, above the maximum 5")),
        ({"score": -0.5}, ("score", "field 'score' is -0.5, below the minimum 0")),
        ({"score": 1.25}, ("score", "field 'score' is 1.25, above the maximum 1")),
    ],
)
def test_minimum_and_maximum(changes: dict[str, Any], expected: tuple[str, str]) -> None:
    assert reasons(clean_one(**changes)) == [expected]


def test_bounds_are_inclusive() -> None:
    result = clean_records(raw_frame({**VALID, "stars": 1, "score": 0}, {**VALID, "stars": 5, "score": 1}), SCHEMA)
    assert result.quarantine.empty
    assert result.records["stars"].tolist() == [1, 5]


def test_max_length_counts_characters_after_normalisation() -> None:
    assert clean_one(text="x" * 20).quarantine.empty
    assert clean_one(text="é" * 20).quarantine.empty  # 20 characters, 40 UTF-8 bytes
    assert reasons(clean_one(text="x" * 21)) == [("text", "field 'text' is 21 characters long, over the maximum 20")]


# ------------------------------------------------------------------------------------------------- quarantine


def test_quarantine_names_first_offending_field_and_lists_every_problem() -> None:
    """Problems are reported in schema field order; ``field`` is the first of them."""
    payload = {**VALID, "channel": "fax", "stars": "12.5", "verified": "maybe"}
    del payload["review_id"]
    result = clean_records(raw_frame(payload), SCHEMA)
    assert result.records.empty
    assert list(result.quarantine.columns) == QUARANTINE_COLUMNS
    row = result.quarantine.iloc[0]
    assert row["field"] == "review_id"
    assert row["reason"] == (
        "missing required field 'review_id'; "
        "field 'stars' must be an integer, found '12.5'; "
        "field 'verified' must be a boolean, found 'maybe'; "
        "field 'channel' must be one of web, app, found 'fax'"
    )
    assert row["stage"] == "clean"
    assert row["record_id"] == record_id_for(SOURCE, 1)
    assert row["source_uri"] == SOURCE
    assert row["source_line"] == 1
    assert row["batch_id"] == "drop-1"
    assert json.loads(row["payload"]) == payload  # the original payload, not the normalised one


def test_mixed_batch_keeps_order_and_partitions_every_record() -> None:
    payloads = [
        {**VALID, "review_id": "R1"},
        {**VALID, "review_id": "R2", "stars": 9},
        {**VALID, "review_id": "R3"},
        {**VALID, "review_id": "R4", "text": ""},
        {**VALID, "review_id": "R5", "extra": "ignored"},
    ]
    result = clean_records(raw_frame(*payloads), SCHEMA)
    assert result.records["review_id"].tolist() == ["R1", "R3", "R5"]
    assert result.records["source_line"].tolist() == [1, 3, 5]
    assert result.quarantine["source_line"].tolist() == [2, 4]
    assert result.quarantine["field"].tolist() == ["stars", "text"]
    assert "extra" not in result.records.columns


# ---------------------------------------------------------------------------------------------------- output


def test_output_columns_and_dtypes() -> None:
    result = clean_records(raw_frame(VALID, {**VALID, "score": None, "posted_at": None}), SCHEMA)
    records = result.records
    assert list(records.columns) == [*LINEAGE_COLUMNS, *SCHEMA.fields]
    assert str(records["stars"].dtype) == "Int64"
    assert str(records["score"].dtype) == "Float64"
    assert str(records["verified"].dtype) == "boolean"
    assert str(records["review_id"].dtype) == "string"
    assert str(records["source_line"].dtype) == "Int64"
    assert isinstance(records["posted_at"].dtype, pd.DatetimeTZDtype)
    assert str(records["posted_at"].dt.tz) == "UTC"
    assert records["posted_at"].isna().tolist() == [False, True]
    assert records["score"].isna().tolist() == [False, True]
    # Lineage passes through unchanged.
    assert records["record_id"].tolist() == [record_id_for(SOURCE, 1), record_id_for(SOURCE, 2)]
    assert (records["ingested_at"] == pd.Timestamp(INGESTED_AT)).all()


def test_all_rejected_still_gives_typed_empty_frame() -> None:
    result = clean_records(raw_frame({"text": "no id"}), SCHEMA)
    assert result.records.empty
    assert str(result.records["stars"].dtype) == "Int64"
    assert isinstance(result.records["posted_at"].dtype, pd.DatetimeTZDtype)
    assert len(result.quarantine) == 1
