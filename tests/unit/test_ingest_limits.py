"""One pathological record is quarantined on its own, with a reason; the rest of the drop is ingested. A file that
cannot be read because of the network is a failing dependency (the step fails and is retried), never the data's
fault. Every case here used to raise in ``raw`` and stop the whole drop, or quarantine the wrong thing."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from dagster_project.stages.ingest import ingest_drop
from dagster_project.stages.json_limits import MAX_DEPTH, JsonRejected, parse_json
from dagster_project.stages.landing import SourceUnavailable, scan_incoming

from .fakes import INGESTED_AT, make_drop

GOOD = b'{"id": "ok-1", "text": "fine"}'


def ingest(files: dict[str, bytes]):
    s3, drop = make_drop(files)
    result = ingest_drop(s3, drop, "drop-1", INGESTED_AT)
    assert result.records_in == len(result.records) + len(result.quarantine)
    return result


def reasons(result) -> dict[int | None, str]:
    return {None if pd.isna(line) else int(line): reason
            for line, reason in zip(result.quarantine["source_line"], result.quarantine["reason"], strict=True)}


@pytest.mark.parametrize(("line", "reason"), [
    (b"[" * 100_000 + b"]" * 100_000, f"nested deeper than {MAX_DEPTH} levels"),
    (b'{"a": ' + b"[" * (MAX_DEPTH + 5) + b"]" * (MAX_DEPTH + 5) + b"}", f"nested deeper than {MAX_DEPTH} levels"),
    (b'{"id": "x", "n": ' + b"9" * 5000 + b"}", "integer with 5000 digits (at most 19 are accepted)"),
    (b'{"id": "x", "text": "\\ud800 alone"}', "contains an unpaired surrogate escape (\\ud800): not valid Unicode"),
    (b'{"id": "x", "score": NaN}', "NaN is not a JSON value"),
    (b'{"id": "x", "score": 1e999}', "number 1e999 is out of range"),
])
def test_a_pathological_line_costs_one_record_not_the_drop(line: bytes, reason: str) -> None:
    result = ingest({"records.jsonl": GOOD + b"\n" + line + b"\n" + GOOD.replace(b"ok-1", b"ok-3") + b"\n"})
    assert len(result.records) == 2 and reasons(result) == {2: reason}


def test_a_bom_before_the_first_jsonl_record_keeps_that_record() -> None:
    result = ingest({"records.jsonl": b"\xef\xbb\xbf" + GOOD + b"\n" + GOOD.replace(b"ok-1", b"ok-2") + b"\n"})
    assert len(result.records) == 2 and result.quarantine.empty


@pytest.mark.parametrize("bom", [b"\xff\xfe", b"\xfe\xff"])
@pytest.mark.parametrize("name", ["records.jsonl", "records.csv"])
def test_a_utf16_file_is_one_quarantine_entry_with_the_right_reason(bom: bytes, name: str) -> None:
    encoding = "utf-16-le" if bom == b"\xff\xfe" else "utf-16-be"
    text = '{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n' if name.endswith("jsonl") else "id,text\na,x\n"
    result = ingest({name: bom + text.encode(encoding), "good.jsonl": GOOD + b"\n"})
    assert len(result.records) == 1
    [(uri, line, reason)] = list(zip(result.quarantine["source_uri"], result.quarantine["source_line"],
                                     result.quarantine["reason"], strict=True))
    assert uri.endswith(name) and pd.isna(line) and reason.startswith("UTF-16 encoded text")  # a whole file


def test_a_record_too_large_is_quarantined_with_a_truncated_payload(monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster_project.stages import ingest as module

    monkeypatch.setattr(module, "MAX_RECORD_BYTES", 64)
    big = b'{"id": "big", "text": "' + b"x" * 200 + b'"}'
    result = ingest({"records.jsonl": GOOD + b"\n" + big + b"\n"})
    assert len(result.records) == 1 and reasons(result) == {2: f"record of {len(big)} bytes (at most 64 are accepted)"}


def test_a_deeply_nested_manifest_quarantines_the_drop_with_a_reason() -> None:
    s3, drop = make_drop({"records.jsonl": GOOD + b"\n"}, manifest=b"[" * 100_000 + b"]" * 100_000)
    result = ingest_drop(s3, drop, "drop-1", INGESTED_AT)
    assert result.manifest is None and result.manifest_problem.endswith(f"is not valid JSON: nested deeper than "
                                                                        f"{MAX_DEPTH} levels")


class _Stalls(io.RawIOBase):
    """A body that delivers part of the file and then times out, as a read from a stalled S3 would."""

    def __init__(self, first: bytes) -> None:
        self.first = first

    def read(self, size: int = -1) -> bytes:
        if self.first:
            chunk, self.first = self.first, b""
            return chunk
        raise TimeoutError("Read timed out")


def test_a_parquet_read_that_times_out_fails_the_step_and_quarantines_nothing() -> None:
    s3, drop = make_drop({"part.parquet": b"PAR1" + b"\0" * 100})
    s3.get_object = lambda Bucket, Key: {"Body": _Stalls(b"PAR1")}  # noqa: N803 - boto3's spelling
    with pytest.raises(SourceUnavailable, match=r"part\.parquet: reading the file failed: TimeoutError"):
        ingest_drop(s3, drop, "drop-1", INGESTED_AT)


def _client_error(status: int, code: str):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


@pytest.mark.parametrize("file_name", ["part.jsonl", "part.csv", "part.parquet", "manifest.json"])
def test_any_landing_read_cut_by_the_network_is_a_dependency_failure_never_bad_data(file_name: str) -> None:
    body = {"part.jsonl": GOOD + b"\n" + GOOD, "part.csv": b"id,text\nok-1,fine\n",
            "part.parquet": b"PAR1" + b"\0" * 100}.get(file_name, b"")
    s3, drop = make_drop({"other.jsonl": GOOD} if file_name == "manifest.json" else {file_name: body})
    real = s3.get_object
    delivered = 0 if file_name == "manifest.json" else 6  # the manifest is read whole: it stalls at once
    s3.get_object = lambda Bucket, Key: (  # noqa: N803 - boto3's spelling
        {"Body": _Stalls(real(Bucket=Bucket, Key=Key)["Body"].read()[:delivered])} if Key.endswith(file_name)
        else real(Bucket=Bucket, Key=Key))
    with pytest.raises(SourceUnavailable, match=rf"{file_name.replace('.', '[.]')}: reading the file failed"):
        ingest_drop(s3, drop, "drop-1", INGESTED_AT)  # the manifest too: a cut read is not an invalid manifest


@pytest.mark.parametrize(("status", "code", "unavailable"), [
    (503, "SlowDown", True), (500, "InternalError", True), (403, "AccessDenied", False)])
def test_s3_answers_are_told_apart_from_s3_trouble(status: int, code: str, unavailable: bool) -> None:
    from botocore.exceptions import ClientError

    s3, drop = make_drop({"part.jsonl": GOOD})

    def refuse(Bucket, Key):  # noqa: N803 - boto3's spelling
        raise _client_error(status, code)

    s3.get_object = refuse
    with pytest.raises(SourceUnavailable if unavailable else ClientError, match=code):  # neither is quarantined
        ingest_drop(s3, drop, "drop-1", INGESTED_AT)


def test_a_tls_failure_mid_download_is_a_dependency_failure_not_a_corrupt_parquet_file() -> None:
    import urllib3

    class BrokenTls:
        def read(self, size: int = -1) -> bytes:
            raise urllib3.exceptions.SSLError("[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC]")  # botocore passes it on

    s3, drop = make_drop({"part.parquet": b"PAR1" + b"\0" * 100})
    s3.get_object = lambda Bucket, Key: {"Body": BrokenTls()}  # noqa: N803 - boto3's spelling
    with pytest.raises(SourceUnavailable, match="SSLError"):
        ingest_drop(s3, drop, "drop-1", INGESTED_AT)


def test_a_full_local_disk_while_spooling_parquet_is_a_dependency_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import tempfile

    class FullDisk(io.BytesIO):
        def write(self, data) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", FullDisk)
    s3, drop = make_drop({"part.parquet": b"PAR1" + b"\0" * 100})
    with pytest.raises(SourceUnavailable, match="No space left"):
        ingest_drop(s3, drop, "drop-1", INGESTED_AT)


def test_a_refused_listing_is_a_dependency_failure() -> None:
    from botocore.exceptions import EndpointConnectionError

    class Refusing:
        def get_paginator(self, name: str):
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    with pytest.raises(SourceUnavailable, match="listing s3://landing/.*EndpointConnectionError"):
        scan_incoming(Refusing(), "landing", "northbank", "support_intents")


def test_parse_json_accepts_ordinary_values() -> None:
    assert parse_json('{"a": [1, 2.5, "é", {"b": null}], "big": 1234567890123456789}')["big"] == 1234567890123456789
    with pytest.raises(JsonRejected, match="invalid JSON"):
        parse_json("{")


@pytest.mark.parametrize("license_", ["", "  ", "unknown", "UNKNOWN", "n/a"])
def test_a_manifest_with_an_undeclared_license_quarantines_the_drop(license_: str) -> None:
    from .fakes import VALID_MANIFEST

    s3, drop = make_drop({"records.jsonl": GOOD + b"\n"}, manifest={**VALID_MANIFEST, "license": license_})
    result = ingest_drop(s3, drop, "drop-1", INGESTED_AT)
    assert result.records.empty and result.manifest is None
    assert "license: Value error, license must be declared" in result.manifest_problem


def test_binary_parquet_text_is_decoded_and_binary_data_is_quarantined() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": ["a", "b"], "text": pa.array([b"caf\xc3\xa9", b"\xff\xfe\x00"], pa.binary())}),
                   buffer)
    result = ingest({"p.parquet": buffer.getvalue()})
    assert [json.loads(p)["text"] for p in result.records["payload"]] == ["café"]  # not "b'caf\\xc3\\xa9'"
    assert reasons(result) == {2: "field 'text' holds binary data, not UTF-8 text"}


@pytest.mark.parametrize("client_id", ["TCK\x00-17", "TCK-17\x1b", " TCK-17", "ＴＣＫ-17"])
def test_a_client_id_is_never_changed_silently(client_id: str, example_config) -> None:
    import pandas as pd

    from dagster_project.records import LINEAGE_COLUMNS
    from dagster_project.stages.clean import clean_records

    dataset = example_config.tenant("northbank").dataset("support_intents")
    schema = dataset.record_schema
    good = {"ticket_id": "TCK-16", "channel": "chat", "text": "my card was charged twice",
            "created_at": "2026-11-30T10:00:00Z"}
    assert schema.id_field == "ticket_id"
    raw = ingest({"r.jsonl": (json.dumps(good) + "\n" + json.dumps({**good, schema.id_field: client_id})
                              + "\n").encode()}).records
    result = clean_records(raw[[*LINEAGE_COLUMNS, "payload"]], schema)
    assert result.records[schema.id_field].tolist() == ["TCK-16"]
    [reason] = result.quarantine["reason"].tolist()
    assert reason.startswith(f"field '{schema.id_field}' (the client's record id)") and "never changed" in reason
    assert isinstance(result.quarantine, pd.DataFrame)


def test_a_parquet_nan_is_a_missing_value_not_the_text_nan(example_config) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dagster_project.records import LINEAGE_COLUMNS
    from dagster_project.stages.clean import clean_records

    buffer = io.BytesIO()
    pq.write_table(pa.table({"ticket_id": ["a", "b"], "channel": ["chat", "chat"],
                             "created_at": ["2026-11-30T10:00:00Z"] * 2,
                             "text": pa.array([float("nan"), 1.5])}), buffer)
    raw = ingest({"p.parquet": buffer.getvalue()}).records
    assert json.loads(raw["payload"][0])["text"] is None  # valid JSON, null
    schema = example_config.tenant("northbank").dataset("support_intents").record_schema
    result = clean_records(raw[[*LINEAGE_COLUMNS, "payload"]], schema)
    assert result.records["text"].tolist() == ["1.5"]
    assert result.quarantine["reason"].tolist() == ["missing required field 'text'"]
