"""The raw stage: every line of a drop becomes a record or a quarantine entry with its file, line and reason."""

from __future__ import annotations

import io
import json
import random

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dagster_project.layout import MANIFEST_NAME
from dagster_project.records import LINEAGE_COLUMNS, QUARANTINE_COLUMNS, record_id_for
from dagster_project.stages import ingest
from dagster_project.stages.ingest import IngestResult, file_format, ingest_drop, read_payloads

from .fakes import DROP_PREFIX, INGESTED_AT, VALID_MANIFEST, FakeS3, make_drop, uri

BATCH = "drop-1"


def run(files: dict[str, bytes], manifest: dict | bytes | None = VALID_MANIFEST) -> IngestResult:
    s3, drop = make_drop(files, manifest)
    result = ingest_drop(s3, drop, BATCH, INGESTED_AT)
    # The conservation identity holds for every drop, whatever it contains.
    assert result.records_in == len(result.records) + len(result.quarantine)
    return result


def quarantine_rows(result: IngestResult) -> list[tuple[str, int | None, str]]:
    q = result.quarantine
    return [
        (u, None if pd.isna(line) else int(line), reason)
        for u, line, reason in zip(q["source_uri"], q["source_line"], q["reason"], strict=True)
    ]


def record_lines(result: IngestResult) -> list[int]:
    return [int(x) for x in result.records["source_line"]]


def parquet_bytes(table: pa.Table, row_group_size: int) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=row_group_size)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------------- JSONL

JSONL = (
    b'{"id": "a", "text": "first"}\n'  # 1 ok
    b"\n"  # 2 blank: skipped, neither record nor quarantine
    b'{"id": "b", "text": \n'  # 3 broken JSON; the line is 20 characters, so the error is at column 21
    b"[1, 2, 3]\n"  # 4 an array, not an object
    b'{"text": "caf\xe9"}\n'  # 5 Latin-1 byte: not UTF-8
    b"   \r\n"  # 6 whitespace only: skipped
    b'{"id": "c", "text": "caf\xc3\xa9"}\r\n'  # 7 ok (UTF-8, CRLF ending)
    b'{"id": "d", "text": "last, no newline"}'  # 8 ok
)


def test_jsonl_good_and_bad_lines() -> None:
    result = run({"part.jsonl": JSONL})
    u = uri("part.jsonl")
    assert quarantine_rows(result) == [
        (u, 3, "invalid JSON: Expecting value at column 21"),
        (u, 4, "expected a JSON object, found list"),
        (u, 5, "not valid UTF-8 (byte 0xe9 at column 14)"),
    ]
    assert record_lines(result) == [1, 7, 8]
    assert read_payloads(result.records) == [
        {"id": "a", "text": "first"},
        {"id": "c", "text": "café"},
        {"id": "d", "text": "last, no newline"},
    ]
    assert result.records_in == 6  # 8 physical lines minus 2 blank ones


def test_jsonl_quarantine_entries_keep_lineage_and_payload() -> None:
    result = run({"part.jsonl": JSONL})
    q = result.quarantine
    assert list(q.columns) == QUARANTINE_COLUMNS
    assert str(q["source_line"].dtype) == "Int64"
    assert q["record_id"].tolist() == [record_id_for(uri("part.jsonl"), line) for line in (3, 4, 5)]
    assert set(q["batch_id"]) == {BATCH}
    assert set(q["stage"]) == {"raw"}
    assert q["field"].isna().all()
    # The payload keeps what was there; undecodable bytes are shown escaped, not lost.
    assert q["payload"].tolist() == ['{"id": "b", "text": ', "[1, 2, 3]", '{"text": "caf\\xe9"}']


def test_record_ids_are_stable_and_derived_from_uri_and_line() -> None:
    first = run({"part.jsonl": JSONL})
    second = run({"part.jsonl": JSONL})
    assert first.records["record_id"].tolist() == second.records["record_id"].tolist()
    assert first.quarantine["record_id"].tolist() == second.quarantine["record_id"].tolist()
    assert first.records["record_id"].tolist() == [record_id_for(uri("part.jsonl"), n) for n in (1, 7, 8)]
    all_ids = [*first.records["record_id"], *first.quarantine["record_id"]]
    assert len(set(all_ids)) == 6


def test_record_id_for_is_a_32_hex_digest_of_location() -> None:
    a = record_id_for("s3://b/k.jsonl", 1)
    assert a == record_id_for("s3://b/k.jsonl", 1)
    assert len(a) == 32 and int(a, 16) >= 0
    assert a != record_id_for("s3://b/k.jsonl", 2)
    assert a != record_id_for("s3://b/other.jsonl", 1)
    assert record_id_for("s3://b/k.jsonl", None) != record_id_for("s3://b/k.jsonl", 0)


def test_raw_records_carry_lineage_columns() -> None:
    result = run({"part.jsonl": b'{"x": 1}\n'})
    records = result.records
    assert list(records.columns) == [*LINEAGE_COLUMNS, "payload"]
    row = records.iloc[0]
    assert row["batch_id"] == BATCH
    assert row["source_uri"] == uri("part.jsonl")
    assert row["ingested_at"] == pd.Timestamp(INGESTED_AT)
    assert str(records["ingested_at"].dtype).startswith("datetime64") and records["ingested_at"].dt.tz is not None
    assert row["license"] == VALID_MANIFEST["license"]
    assert row["consent_basis"] == VALID_MANIFEST["consent_basis"]
    assert result.manifest is not None and result.manifest.source == "acme CRM export"
    assert result.manifest_problem is None
    assert result.files == [DROP_PREFIX + "part.jsonl"]


def test_payload_is_canonical_json_with_sorted_keys_and_unicode_kept() -> None:
    result = run({"part.jsonl": '{"z": 1, "a": "Grüße"}\n'.encode()})
    assert result.records["payload"].tolist() == ['{"a": "Grüße", "z": 1}']


def test_lines_split_across_read_chunks_are_reassembled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bodies are streamed in chunks; a line straddling a chunk boundary must still parse with its line number."""
    monkeypatch.setattr(ingest, "_CHUNK_BYTES", 7)
    result = run({"part.jsonl": JSONL})
    assert record_lines(result) == [1, 7, 8]
    assert [line for _, line, _ in quarantine_rows(result)] == [3, 4, 5]


# --------------------------------------------------------------------------------------------------------- CSV


def test_csv_rows_numbered_by_physical_line_with_header_as_line_1() -> None:
    body = (
        b"id,text,score\n"  # 1 header
        b"1,hello,3\n"  # 2
        b"2,too,many,cells\n"  # 3 wrong column count
        b"\n"  # 4 blank: skipped
        b"3,only two\n"  # 5 wrong column count
        b"4,bye,5\n"  # 6
    )
    result = run({"t.csv": body})
    u = uri("t.csv")
    assert quarantine_rows(result) == [
        (u, 3, "expected 3 columns, found 4"),
        (u, 5, "expected 3 columns, found 2"),
    ]
    assert result.quarantine["payload"].tolist() == ['["2", "too", "many", "cells"]', '["3", "only two"]']
    assert record_lines(result) == [2, 6]
    assert read_payloads(result.records) == [
        {"id": "1", "score": "3", "text": "hello"},
        {"id": "4", "score": "5", "text": "bye"},
    ]


def test_csv_quoted_multiline_field_is_one_record() -> None:
    """A quoted field spanning lines 3-4 is one record; the lines after it keep their physical numbers.

    The multi-line record is numbered by the line it ends on (the same as ``csv.reader.line_num``).
    """
    body = (
        b"id,text\n"  # 1
        b"1,plain\n"  # 2
        b'2,"first line\n'  # 3
        b'second, line"\n'  # 4
        b"3,x,extra\n"  # 5 wrong column count
        b'4,"say ""hi"""\n'  # 6 escaped quotes
    )
    result = run({"t.csv": body})
    assert read_payloads(result.records) == [
        {"id": "1", "text": "plain"},
        {"id": "2", "text": "first line\nsecond, line"},
        {"id": "4", "text": 'say "hi"'},
    ]
    assert record_lines(result) == [2, 4, 6]
    assert quarantine_rows(result) == [(uri("t.csv"), 5, "expected 2 columns, found 3")]
    assert result.records_in == 4


def test_csv_non_utf8_line_is_quarantined_and_the_others_parse() -> None:
    body = b"\xef\xbb\xbfid,text\r\n1,ok\r\n2,caf\xe9\r\n3,fine\r\n"  # UTF-8 BOM, CRLF, one Latin-1 line
    result = run({"t.csv": body})
    assert quarantine_rows(result) == [(uri("t.csv"), 3, "not valid UTF-8 (byte 0xe9 at column 6)")]
    assert result.quarantine["payload"].tolist() == ["2,caf\\xe9"]
    assert record_lines(result) == [2, 4]
    # The BOM is not part of the first column's name.
    assert read_payloads(result.records) == [{"id": "1", "text": "ok"}, {"id": "3", "text": "fine"}]


def test_csv_row_with_oversized_field_costs_one_record_not_the_drop() -> None:
    """A single 200 kB cell (over the csv module's default field limit) must not abort the whole ingest.

    Raw is documented as "a bad line costs one quarantined record, not the file": line 2 may be accepted
    (clean then rejects it) or quarantined, but line 3 must still be parsed and every line accounted for.
    """
    body = b"id,text\n1," + b"x" * 200_000 + b"\n2,fine\n"
    result = run({"t.csv": body})
    assert result.records_in == 2
    lines_seen = sorted([*record_lines(result), *(line for _, line, _ in quarantine_rows(result))])
    assert lines_seen == [2, 3]
    assert read_payloads(result.records[result.records["source_line"] == 3]) == [{"id": "2", "text": "fine"}]


# ----------------------------------------------------------------------------------------------------- Parquet


def test_parquet_with_two_row_groups_numbers_rows_from_1() -> None:
    table = pa.table({"id": ["a", "b", "c", "d", "e"], "n": [1, 2, 3, 4, None]})
    body = parquet_bytes(table, row_group_size=3)
    assert pq.ParquetFile(io.BytesIO(body)).num_row_groups == 2
    result = run({"p.parquet": body})
    assert result.quarantine.empty
    assert record_lines(result) == [1, 2, 3, 4, 5]
    assert read_payloads(result.records) == [
        {"id": "a", "n": 1},
        {"id": "b", "n": 2},
        {"id": "c", "n": 3},
        {"id": "d", "n": 4},
        {"id": "e", "n": None},
    ]
    assert result.records["record_id"].tolist() == [record_id_for(uri("p.parquet"), n) for n in range(1, 6)]


def test_corrupt_parquet_is_one_whole_file_quarantine_entry() -> None:
    garbage = random.Random(7).randbytes(4096)
    result = run({"bad.parquet": garbage, "ok.jsonl": b'{"id": 1}\n'})
    assert record_lines(result) == [1]
    assert result.records["source_uri"].tolist() == [uri("ok.jsonl")]
    [(source_uri, line, reason)] = quarantine_rows(result)
    assert (source_uri, line) == (uri("bad.parquet"), None)
    assert reason.startswith("unreadable parquet file: ")
    assert result.quarantine["record_id"].tolist() == [record_id_for(uri("bad.parquet"), None)]
    assert result.quarantine["payload"].tolist() == [""]


def test_truncated_parquet_contributes_no_rows() -> None:
    """Half a valid file: nothing from it may be accepted, only the one whole-file entry."""
    body = parquet_bytes(pa.table({"id": list(range(100))}), row_group_size=10)
    result = run({"cut.parquet": body[: len(body) // 2]})
    assert result.records.empty
    assert [(u, line) for u, line, _ in quarantine_rows(result)] == [(uri("cut.parquet"), None)]


# ---------------------------------------------------------------------------------------- files and manifests


def test_unsupported_extension_is_one_quarantine_entry_without_reading_it() -> None:
    s3, drop = make_drop({"notes.txt": b"hello\nworld\n"})
    result = ingest_drop(s3, drop, BATCH, INGESTED_AT)
    assert result.records.empty
    assert quarantine_rows(result) == [
        (uri("notes.txt"), None, "unsupported file type (expected one of .jsonl, .ndjson, .json, .csv, .parquet)")
    ]
    assert s3.reads == [DROP_PREFIX + MANIFEST_NAME]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("a/b.jsonl", "jsonl"),
        ("a/b.NDJSON", "jsonl"),
        ("a/b.json", "jsonl"),
        ("a/b.Csv", "csv"),
        ("a/b.parquet", "parquet"),
        ("a/b.txt", None),
        ("a/b.csv.gz", None),
    ],
)
def test_file_format_by_suffix(key: str, expected: str | None) -> None:
    assert file_format(key) == expected


def test_drop_without_manifest_quarantines_every_parsed_record() -> None:
    files = {"part.jsonl": JSONL, "t.csv": b"id,text\n1,a\n2,b\n"}
    result = run(files, manifest=None)
    assert result.records.empty
    assert result.manifest is None
    expected_reason = f"drop s3://landing/{DROP_PREFIX} has no manifest.json: license and consent basis unknown"
    assert result.manifest_problem == expected_reason
    assert result.records_in == 6 + 2  # 6 non-blank JSONL lines, 2 CSV data rows
    q = result.quarantine
    # Parse errors keep their own reason; every parsable record gets the manifest reason.
    lines = zip(q["source_uri"], q["source_line"].astype(int), strict=True)
    by_line = dict(zip(lines, q["reason"], strict=True))
    assert by_line == {
        (uri("part.jsonl"), 1): expected_reason,
        (uri("part.jsonl"), 3): "invalid JSON: Expecting value at column 21",
        (uri("part.jsonl"), 4): "expected a JSON object, found list",
        (uri("part.jsonl"), 5): "not valid UTF-8 (byte 0xe9 at column 14)",
        (uri("part.jsonl"), 7): expected_reason,
        (uri("part.jsonl"), 8): expected_reason,
        (uri("t.csv"), 2): expected_reason,
        (uri("t.csv"), 3): expected_reason,
    }
    assert json.loads(q.loc[q["source_line"] == 2, "payload"].iloc[0]) == {"id": "1", "text": "a"}


def test_manifest_missing_a_required_field_names_it() -> None:
    manifest = {k: v for k, v in VALID_MANIFEST.items() if k != "license"}
    result = run({"part.jsonl": b'{"a": 1}\n{"a": 2}\n'}, manifest=manifest)
    expected = f"manifest.json in s3://landing/{DROP_PREFIX} is invalid: license: Field required"
    assert result.manifest_problem == expected
    assert result.records.empty
    assert quarantine_rows(result) == [(uri("part.jsonl"), 1, expected), (uri("part.jsonl"), 2, expected)]


def test_manifest_that_is_not_json() -> None:
    result = run({"part.jsonl": b'{"a": 1}\n'}, manifest=b"{license: oops")
    assert result.manifest_problem is not None
    assert result.manifest_problem.startswith(f"manifest.json in s3://landing/{DROP_PREFIX} is not valid JSON: ")
    assert len(result.quarantine) == 1 and result.records.empty


def test_records_in_sums_over_all_files() -> None:
    table = pa.table({"id": [1, 2, 3]})
    files = {
        "a.jsonl": JSONL,  # 3 records + 3 quarantined
        "b.csv": b"id\n1\n2\n",  # 2 records
        "c.parquet": parquet_bytes(table, 2),  # 3 records
        "d.parquet": b"PAR1 nope",  # 1 quarantined
        "e.txt": b"x",  # 1 quarantined
    }
    result = run(files)
    assert (len(result.records), len(result.quarantine), result.records_in) == (8, 5, 13)
    assert result.files == [DROP_PREFIX + name for name in sorted(files)]


def test_empty_drop_gives_typed_empty_frames() -> None:
    s3, drop = make_drop({})
    result = ingest_drop(s3, drop, BATCH, INGESTED_AT)
    assert result.records_in == 0
    assert list(result.records.columns) == [*LINEAGE_COLUMNS, "payload"]
    assert list(result.quarantine.columns) == QUARANTINE_COLUMNS


def test_fake_s3_is_only_read_for_known_keys() -> None:
    """Guards the fake: an unknown key must fail loudly rather than return an empty body."""
    with pytest.raises(KeyError):
        FakeS3().get_object(Bucket="landing", Key="missing")
