"""The ``raw`` stage: parse a drop's files into records with lineage, quarantining what cannot be parsed.

Raw is lossless: each record keeps its original fields as a JSON ``payload`` (typing and validation are the
``clean`` stage's job), plus lineage columns. Files are streamed line by line (JSONL, CSV) or row group by
row group (Parquet), so a bad line costs one quarantined record, not the file: a non-UTF-8 line, a broken
JSON line or a CSV row with the wrong number of columns is quarantined with its file, line and reason.
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from dagster_project.layout import Stage
from dagster_project.records import LINEAGE_COLUMNS, QuarantineEntry, quarantine_frame, record_id_for
from dagster_project.stages.json_limits import MAX_RECORD_BYTES, JsonRejected, parse_json
from dagster_project.stages.landing import (
    Drop,
    LandingFile,
    Manifest,
    SourceUnavailable,
    landing_access,
    open_object,
    read_manifest,
)

RAW_COLUMNS = [*LINEAGE_COLUMNS, "payload"]
SUPPORTED_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_CHUNK_BYTES = 1 << 20
CSV_FIELD_LIMIT = 64 << 20
"""Largest CSV cell accepted (the csv module's default of 128 KiB rejects long free-text tickets)."""


@dataclass
class IngestResult:
    records: pd.DataFrame
    quarantine: pd.DataFrame
    manifest: Manifest | None
    manifest_problem: str | None
    files: list[str]

    @property
    def records_in(self) -> int:
        return len(self.records) + len(self.quarantine)


@dataclass(frozen=True)
class _Parsed:
    line: int | None
    payload: str
    error: str | None = None


def _json_payload(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)


def _iter_lines(body: Any) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, raw line bytes without the newline) from a streaming body."""
    pending = b""
    number = 0
    while chunk := body.read(_CHUNK_BYTES):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            number += 1
            yield number, line.rstrip(b"\r")
    if pending:
        yield number + 1, pending.rstrip(b"\r")


def _undecodable(raw: bytes, exc: UnicodeDecodeError) -> str:
    return f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"


class FileRejected(ValueError):
    """The whole file cannot be read as its format (e.g. UTF-16 text); the message is the quarantine reason."""


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _refuse_utf16(number: int, raw: bytes) -> None:
    if number == 1 and raw.startswith(_UTF16_BOMS):
        raise FileRejected("UTF-16 encoded text (byte order mark at the start); export the file as UTF-8")


def _parse_jsonl(body: Any) -> Iterator[_Parsed]:
    for number, raw in _iter_lines(body):
        _refuse_utf16(number, raw)
        if not raw.strip():
            continue
        if len(raw) > MAX_RECORD_BYTES:
            yield _Parsed(number, raw[:4096].decode("utf-8", "backslashreplace") + " ...[truncated]",
                          f"record of {len(raw)} bytes (at most {MAX_RECORD_BYTES} are accepted)")
            continue
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a BOM before the first record is fine
        except UnicodeDecodeError as exc:
            yield _Parsed(number, raw.decode("utf-8", "backslashreplace"), _undecodable(raw, exc))
            continue
        try:
            value = parse_json(text)
        except JsonRejected as exc:
            yield _Parsed(number, text, str(exc))
            continue
        if not isinstance(value, dict):
            yield _Parsed(number, text, f"expected a JSON object, found {type(value).__name__}")
            continue
        yield _Parsed(number, _json_payload(value))


def _parse_csv(body: Any) -> Iterator[_Parsed]:
    """CSV with a header row; line numbers are physical lines (header = line 1; a quoted multi-line record
    reports the line it ends on). A row the csv module rejects is quarantined and parsing goes on."""
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    bad_lines: list[_Parsed] = []
    position: dict[str, Any] = {"line": 0, "text": ""}

    def decoded_lines() -> Iterator[str]:
        for number, raw in _iter_lines(body):
            _refuse_utf16(number, raw)
            position["line"] = number
            try:
                position["text"] = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                bad_lines.append(_Parsed(number, raw.decode("utf-8", "backslashreplace"), _undecodable(raw, exc)))
                continue
            yield position["text"] + "\n"

    reader = csv.reader(decoded_lines())
    header: list[str] | None = None
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            yield from bad_lines
            bad_lines.clear()
            yield _Parsed(position["line"], position["text"], f"unparsable CSV row: {exc}")
            continue
        yield from bad_lines
        bad_lines.clear()
        line = position["line"]
        if header is None:
            header = [h.strip() for h in row]
            continue
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield _Parsed(line, json.dumps(row, ensure_ascii=False),
                          f"expected {len(header)} columns, found {len(row)}")
            continue
        yield _Parsed(line, _json_payload(dict(zip(header, row, strict=True))))
    yield from bad_lines


def _parse_parquet(body: Any) -> Iterator[_Parsed]:
    """Parquet needs random access: spool to a temporary file, then read one row group at a time.

    Reading the body can fail because of the network: the guarded body raises :class:`SourceUnavailable` then,
    which is never taken for a corrupt file."""
    with tempfile.TemporaryFile() as spool:
        while chunk := body.read(_CHUNK_BYTES):
            try:
                spool.write(chunk)
            except OSError as exc:  # a full local disk is the platform's trouble, not a corrupt file
                raise SourceUnavailable(f"spooling the file to local disk failed: {exc}") from exc
        spool.seek(0)
        parquet = pq.ParquetFile(spool)
        row = 0
        for group in range(parquet.num_row_groups):
            for record in parquet.read_row_group(group).to_pylist():
                row += 1
                yield _text_record(row, record)


def _text_record(row: int, record: dict[str, Any]) -> _Parsed:
    """A Parquet row as a payload: binary columns holding UTF-8 text become text; other binary is quarantined
    (written as ``"b'...'"`` it would reach main as a string nobody sent)."""
    for name, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            record[name] = None  # JSON has no NaN: a missing value is null, never the text "nan" downstream
        elif isinstance(value, bytes):
            try:
                record[name] = value.decode("utf-8")
            except UnicodeDecodeError:
                preview = {k: (v.hex()[:64] if isinstance(v, bytes) else v) for k, v in record.items()}
                return _Parsed(row, _json_payload(preview), f"field '{name}' holds binary data, not UTF-8 text")
    return _Parsed(row, _json_payload(record))


_PARSERS = {"jsonl": _parse_jsonl, "csv": _parse_csv, "parquet": _parse_parquet}


def file_format(key: str) -> str | None:
    lowered = key.lower()
    for suffix, fmt in SUPPORTED_SUFFIXES.items():
        if lowered.endswith(suffix):
            return fmt
    return None


def ingest_drop(s3: Any, drop: Drop, batch_id: str, ingested_at: datetime) -> IngestResult:
    """Parse every data file of a drop into raw records and quarantine entries; nothing is dropped."""
    manifest, manifest_problem = read_manifest(s3, drop)
    rows: list[dict[str, Any]] = []
    quarantined: list[QuarantineEntry] = []
    lineage = {
        "batch_id": batch_id,
        "ingested_at": ingested_at,
        "license": manifest.license if manifest else None,
        "consent_basis": manifest.consent_basis if manifest else None,
    }

    def reject(uri: str, line: int | None, reason: str, payload: str) -> None:
        quarantined.append(
            QuarantineEntry(record_id_for(uri, line), batch_id, Stage.RAW, uri, line, None, reason, payload)
        )

    for landing_file in drop.data_files:
        _ingest_file(s3, drop, landing_file, manifest_problem, lineage, rows, reject)
    for landing_file, reason in drop.held_back:  # every object under the drop ends in a visible state
        reject(f"s3://{drop.bucket}/{landing_file.key}", None, reason, "")

    records = pd.DataFrame(rows, columns=RAW_COLUMNS).astype({"source_line": "Int64"})
    records["ingested_at"] = pd.to_datetime(records["ingested_at"], utc=True)
    return IngestResult(
        records=records,
        quarantine=quarantine_frame(quarantined),
        manifest=manifest,
        manifest_problem=manifest_problem,
        files=[f.key for f in drop.data_files],
    )


def _ingest_file(s3, drop: Drop, landing_file: LandingFile, manifest_problem, lineage, rows, reject) -> None:
    uri = f"s3://{drop.bucket}/{landing_file.key}"
    fmt = file_format(landing_file.key)
    if fmt is None:
        reject(uri, None, f"unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)})", "")
        return
    body = open_object(s3, drop.bucket, landing_file.key)
    accepted: list[dict[str, Any]] = []
    rejected: list[tuple[int | None, str, str]] = []
    try:
        for parsed in _PARSERS[fmt](body):
            if parsed.error is not None:
                rejected.append((parsed.line, parsed.error, parsed.payload))
            elif manifest_problem is not None:
                rejected.append((parsed.line, manifest_problem, parsed.payload))
            else:
                accepted.append({**lineage, "record_id": record_id_for(uri, parsed.line), "source_uri": uri,
                                 "source_line": parsed.line, "payload": parsed.payload})
    except SourceUnavailable:  # retried by the step, then fails loudly; nothing is quarantined
        raise
    except FileRejected as exc:
        reject(uri, None, str(exc), "")
        return
    except Exception as exc:
        if fmt != "parquet":
            raise
        # A corrupt Parquet file has no trustworthy rows: quarantine it whole, as one entry.
        reject(uri, None, f"unreadable parquet file: {exc}", "")
        return
    rows.extend(accepted)
    for line, reason, payload in rejected:
        reject(uri, line, reason, payload)


def read_payloads(records: pd.DataFrame) -> list[dict[str, Any]]:
    return [json.loads(p) for p in records["payload"]]


GOLD_COLUMNS = ["gold_id", "text", "label"]


class GoldSetError(ValueError):
    """The dataset's gold set is unusable; the message names the file, line and field."""


def gold_prefix(landing_prefix: str, dataset: str) -> str:
    return f"{landing_prefix}/{dataset}/gold/"


def read_gold_set(s3: Any, bucket: str, landing_prefix: str, dataset: str, text_field: str,
                  labels: list[str]) -> pd.DataFrame:
    """Known-answer items the data owner curates at ``<prefix>/<dataset>/gold/`` (JSONL, CSV or Parquet with
    the dataset's text field and ``label``). Gold is reference data, so a bad row fails loudly instead of being
    quarantined: a wrong gold label would silently grade every annotator against it."""
    rows: list[dict[str, str]] = []
    prefix = gold_prefix(landing_prefix, dataset)
    with landing_access(f"listing s3://{bucket}/{prefix} failed"):
        keys = [obj["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for obj in page.get("Contents", []) if obj["Size"] > 0]
    for key in sorted(keys):
        fmt = file_format(key)
        uri = f"s3://{bucket}/{key}"
        if fmt is None:
            raise GoldSetError(f"{uri}: unsupported gold file type")
        for parsed in _PARSERS[fmt](open_object(s3, bucket, key)):
            where = f"{uri} line {parsed.line}"
            if parsed.error is not None:
                raise GoldSetError(f"{where}: {parsed.error}")
            record = json.loads(parsed.payload)
            text, label = record.get(text_field), record.get("label")
            if not isinstance(text, str) or not text.strip():
                raise GoldSetError(f"{where}: field '{text_field}' is missing or empty")
            if label not in labels:
                raise GoldSetError(f"{where}: field 'label' is {label!r}, not one of {', '.join(labels)}")
            gold_id = str(record.get("gold_id") or record_id_for(uri, parsed.line))
            rows.append({"gold_id": gold_id, "text": text, "label": label})
    gold = pd.DataFrame(rows, columns=GOLD_COLUMNS)
    duplicated = gold["gold_id"][gold["gold_id"].duplicated()]
    if not duplicated.empty:
        raise GoldSetError(f"gold set under s3://{bucket}/{gold_prefix(landing_prefix, dataset)} repeats gold_id "
                           f"{duplicated.iloc[0]!r}")
    return gold
