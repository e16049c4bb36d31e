"""Exact deduplication by normalised-text hash, within the batch and against what is already on main."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from dagster_project.stages.dedup import (
    DEDUP_INDEX_COLUMNS,
    DUPLICATE_COLUMNS,
    deduplicate,
    index_entries,
    normalised_text_hash,
)

EMPTY_INDEX = pd.DataFrame(columns=DEDUP_INDEX_COLUMNS)


def batch(*texts: str, batch_id: str = "b2") -> pd.DataFrame:
    """Clean-stage-like records r1..rn with the given texts, in batch order."""
    return pd.DataFrame(
        {
            "record_id": [f"r{i}" for i in range(1, len(texts) + 1)],
            "batch_id": batch_id,
            "text": pd.array(texts, dtype="string"),
        }
    )


def dupes(result_duplicates: pd.DataFrame) -> list[tuple[str, str, str]]:
    return list(
        zip(result_duplicates["record_id"], result_duplicates["duplicate_of"], result_duplicates["scope"], strict=True)
    )


# ------------------------------------------------------------------------------------------------------- hash


@pytest.mark.parametrize(
    "variant",
    [
        "Card was declined twice",
        "card was declined twice",
        "CARD WAS DECLINED TWICE",
        "  Card   was\tdeclined\n twice  ",
        "Ｃａｒｄ　ｗａｓ　ｄｅｃｌｉｎｅｄ　ｔｗｉｃｅ",  # full-width letters and ideographic spaces
    ],
)
def test_hash_is_equal_across_case_whitespace_and_nfkc_variants(variant: str) -> None:
    assert normalised_text_hash(variant) == normalised_text_hash("Card was declined twice")


def test_hash_is_the_first_16_bytes_of_the_sha256_of_the_canonical_text() -> None:
    assert normalised_text_hash("  Hello\n World ") == hashlib.sha256(b"hello world").digest()[:16]


def test_an_index_written_with_hex_digests_still_finds_its_duplicates() -> None:
    legacy = pd.DataFrame({"text_hash": [hashlib.sha256(b"beta").hexdigest()], "record_id": ["m1"]})
    result = deduplicate(batch("alpha", "Beta"), "text", legacy)
    assert dupes(result.duplicates) == [("r2", "m1", "main")]


def test_hash_casefolds_beyond_lower() -> None:
    assert normalised_text_hash("STRASSE") == normalised_text_hash("straße")  # casefold("ß") == "ss"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Card was declined twice", "Card was declined once"),
        ("card declined", "carddeclined"),  # whitespace runs collapse to one space, they do not vanish
        ("card declined.", "card declined"),
        ("café", "cafe"),
    ],
)
def test_hash_differs_for_different_texts(a: str, b: str) -> None:
    assert normalised_text_hash(a) != normalised_text_hash(b)


# ---------------------------------------------------------------------------------------------------- in batch


def test_first_occurrence_in_batch_order_is_kept() -> None:
    records = batch("alpha", "beta", "ALPHA", "gamma", "  beta ", "alpha")
    result = deduplicate(records, "text", EMPTY_INDEX)
    assert result.records["record_id"].tolist() == ["r1", "r2", "r4"]
    assert dupes(result.duplicates) == [("r3", "r1", "batch"), ("r5", "r2", "batch"), ("r6", "r1", "batch")]
    assert len(result.records) + len(result.duplicates) == len(records)


def test_kept_records_get_their_text_hash_and_a_fresh_index() -> None:
    result = deduplicate(batch("alpha", "Alpha", "beta"), "text", EMPTY_INDEX)
    assert result.records["text_hash"].tolist() == [normalised_text_hash("alpha"), normalised_text_hash("beta")]
    assert result.records.index.tolist() == [0, 1]
    assert result.records["text"].tolist() == ["alpha", "beta"]  # the kept text is unchanged


def test_duplicates_frame_shape_and_values() -> None:
    result = deduplicate(batch("x", "X"), "text", EMPTY_INDEX)
    assert list(result.duplicates.columns) == DUPLICATE_COLUMNS
    assert result.duplicates.to_dict("records") == [
        {
            "record_id": "r2",
            "batch_id": "b2",
            "duplicate_of": "r1",
            "text_hash": normalised_text_hash("x"),
            "scope": "batch",
            "similarity": 1.0,
        }
    ]
    texts = [dtype for name, dtype in result.duplicates.dtypes.items() if name not in ("text_hash", "similarity")]
    assert all(str(dtype) == "string" for dtype in texts)
    assert isinstance(result.duplicates["text_hash"].iloc[0], bytes)  # a 16-byte digest, not a hex string


def test_no_duplicates() -> None:
    records = batch("a", "b", "c")
    result = deduplicate(records, "text", EMPTY_INDEX)
    assert result.records["record_id"].tolist() == ["r1", "r2", "r3"]
    assert result.duplicates.empty
    assert list(result.duplicates.columns) == DUPLICATE_COLUMNS


# -------------------------------------------------------------------------------------------------- against main


def test_texts_already_on_main_point_at_the_main_record() -> None:
    published = pd.DataFrame(
        {"text_hash": [normalised_text_hash("beta"), normalised_text_hash("delta")], "record_id": ["m7", "m9"]}
    )
    records = batch("alpha", "BETA", "gamma", "beta", "alpha")
    result = deduplicate(records, "text", published)
    assert result.records["record_id"].tolist() == ["r1", "r3"]
    # Both occurrences of "beta" duplicate main's record, not each other; main duplicates are listed first.
    assert dupes(result.duplicates) == [("r2", "m7", "main"), ("r4", "m7", "main"), ("r5", "r1", "batch")]
    assert len(result.records) + len(result.duplicates) == len(records)


def test_repeated_hash_in_the_main_index_uses_its_first_entry() -> None:
    published = pd.DataFrame({"text_hash": [normalised_text_hash("x")] * 2, "record_id": ["m1", "m2"]})
    result = deduplicate(batch("x"), "text", published)
    assert dupes(result.duplicates) == [("r1", "m1", "main")]
    assert result.records.empty


def test_index_entries_of_published_batch_feed_the_next_batch() -> None:
    first = deduplicate(batch("alpha", "beta", "alpha", batch_id="b1"), "text", EMPTY_INDEX)
    index = index_entries(first.records)
    assert list(index.columns) == DEDUP_INDEX_COLUMNS
    assert index["record_id"].tolist() == ["r1", "r2"]
    second_batch = pd.DataFrame({"record_id": ["s1", "s2"], "batch_id": "b2", "text": ["Beta", "omega"]})
    second = deduplicate(second_batch, "text", index)
    assert dupes(second.duplicates) == [("s1", "r2", "main")]
    assert second.records["record_id"].tolist() == ["s2"]
