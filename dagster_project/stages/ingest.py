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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from dagster_project.layout import Stage
from dagster_project.records import LINEAGE_COLUMNS, QuarantineEntry, quarantine_frame, record_id_for
from dagster_project.stages.json_limits import MAX_RECORD_BYTES, JsonRejected, parse_json
from dagster_project.stages.landing import (
    Drop,
    Manifest,
    SourceUnavailable,
    open_object,
    read_manifest,
)
from dagster_project.stages.parts import PART_ROWS, frame_bytes, map_in_order, read_frame

RAW_COLUMNS = [*LINEAGE_COLUMNS, "payload"]
SUPPORTED_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_CHUNK_BYTES = 1 << 20
_PARQUET_ROWS = 4096
CSV_FIELD_LIMIT = 64 << 20
"""Largest CSV cell accepted (the csv module's default of 128 KiB rejects long free-text tickets)."""


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


def _jsonl_lines(body: Any) -> Iterator[tuple[int, bytes]]:
    """A JSONL body's non-blank lines; a UTF-16 file is refused before any of it is taken."""
    for number, raw in _iter_lines(body):
        _refuse_utf16(number, raw)
        if raw.strip():
            yield number, raw


def _parse_jsonl_line(number: int, raw: bytes) -> _Parsed:
    if len(raw) > MAX_RECORD_BYTES:
        return _Parsed(number, raw[:4096].decode("utf-8", "backslashreplace") + " ...[truncated]",
                       f"record of {len(raw)} bytes (at most {MAX_RECORD_BYTES} are accepted)")
    try:
        text = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a BOM before the first record is fine
    except UnicodeDecodeError as exc:
        return _Parsed(number, raw.decode("utf-8", "backslashreplace"), _undecodable(raw, exc))
    try:
        value = parse_json(text)
    except JsonRejected as exc:
        return _Parsed(number, text, str(exc))
    if not isinstance(value, dict):
        return _Parsed(number, text, f"expected a JSON object, found {type(value).__name__}")
    return _Parsed(number, _json_payload(value))


def _parse_jsonl(body: Any) -> Iterator[_Parsed]:
    for number, raw in _jsonl_lines(body):
        yield _parse_jsonl_line(number, raw)


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
    """Parquet needs random access: spool to a temporary file, then read it a few thousand rows at a time (a
    writer may put a whole file in one row group; as Python rows, 300k records would take gigabytes).

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
        for rows in parquet.iter_batches(batch_size=_PARQUET_ROWS):
            for record in rows.to_pylist():
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


PARSERS = {"jsonl": _parse_jsonl, "csv": _parse_csv, "parquet": _parse_parquet}


def file_format(key: str) -> str | None:
    lowered = key.lower()
    for suffix, fmt in SUPPORTED_SUFFIXES.items():
        if lowered.endswith(suffix):
            return fmt
    return None


@dataclass(frozen=True)
class RawBlock:
    """Up to :data:`~dagster_project.stages.parts.PART_ROWS` lines of one file, on their way to a worker.

    JSONL lines travel unparsed (parsing is the expensive part, so the workers do it); CSV and Parquet rows
    arrive parsed, since neither format can be split at arbitrary lines."""

    index: int
    uri: str
    lines: list[tuple[int, bytes]] | list[_Parsed]
    lineage: dict[str, Any]
    manifest_problem: str | None

    @property
    def rows(self) -> int:
        return len(self.lines)


@dataclass(frozen=True)
class FileFailed:
    """A file that cannot be read as its format: quarantined whole, as one entry, with this reason."""

    uri: str
    reason: str


@dataclass(frozen=True)
class RawPart:
    """What a worker made of one block: the accepted records as Parquet, and the lines it rejected."""

    index: int
    uri: str
    data: bytes
    rows: int
    rejected: list[QuarantineEntry]


def raw_part(task: RawBlock | FileFailed) -> RawPart | FileFailed:
    """Worker side of the raw stage: parse a block into raw records and quarantine entries."""
    if isinstance(task, FileFailed):
        return task
    accepted: list[dict[str, Any]] = []
    rejected: list[QuarantineEntry] = []
    batch_id = task.lineage["batch_id"]
    for item in task.lines:
        parsed = _parse_jsonl_line(*item) if isinstance(item, tuple) else item
        reason = parsed.error if parsed.error is not None else task.manifest_problem
        if reason is not None:
            rejected.append(QuarantineEntry(record_id_for(task.uri, parsed.line), batch_id, Stage.RAW, task.uri,
                                            parsed.line, None, reason, parsed.payload))
        else:
            accepted.append({**task.lineage, "record_id": record_id_for(task.uri, parsed.line),
                             "source_uri": task.uri, "source_line": parsed.line, "payload": parsed.payload})
    records = pd.DataFrame(accepted, columns=RAW_COLUMNS).astype({"source_line": "Int64"})
    records["ingested_at"] = pd.to_datetime(records["ingested_at"], utc=True)
    return RawPart(task.index, task.uri, frame_bytes(records), len(records), rejected)


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(islice(items, size)):
        yield chunk


def _blocks(s3: Any, drop: Drop, lineage: dict[str, Any], manifest_problem: str | None,
            part_rows: int) -> Iterator[RawBlock | FileFailed]:
    index = 0
    for landing_file in drop.data_files:
        uri = f"s3://{drop.bucket}/{landing_file.key}"
        fmt = file_format(landing_file.key)
        if fmt is None:
            yield FileFailed(uri, f"unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)})")
            continue
        body = open_object(s3, drop.bucket, landing_file.key)
        lines = _jsonl_lines(body) if fmt == "jsonl" else PARSERS[fmt](body)
        try:
            for chunk in _chunks(lines, part_rows):
                yield RawBlock(index, uri, chunk, lineage, manifest_problem)
                index += 1
        except SourceUnavailable:  # retried by the step, then fails loudly; nothing is quarantined
            raise
        except FileRejected as exc:
            yield FileFailed(uri, str(exc))
        except Exception as exc:
            if fmt != "parquet":
                raise
            # A corrupt Parquet file has no trustworthy rows: quarantine it whole, as one entry.
            yield FileFailed(uri, f"unreadable parquet file: {exc}")


@dataclass
class IngestSummary:
    """Everything the raw stage learnt about a drop besides the records, which went out as parts."""

    records: int
    quarantine: pd.DataFrame
    manifest: Manifest | None
    manifest_problem: str | None
    files: list[str]

    @property
    def records_in(self) -> int:
        return self.records + len(self.quarantine)


@dataclass
class IngestResult:
    """An :class:`IngestSummary` with the records as one frame (tests and small drops)."""

    records: pd.DataFrame
    summary: IngestSummary

    def __getattr__(self, name: str) -> Any:  # quarantine, manifest, manifest_problem, files, records_in
        return getattr(self.summary, name)


def stream_drop(s3: Any, drop: Drop, batch_id: str, ingested_at: datetime, put_part: Callable[[int, bytes], None],
                discard_parts: Callable[[list[int]], None], workers: int = 1,
                part_rows: int = PART_ROWS) -> IngestSummary:
    """Parse every data file of a drop into raw parts (``put_part(index, parquet)``, in order) and quarantine
    entries; nothing is dropped. A file that fails half-way takes its parts back (``discard_parts``) and is
    quarantined whole."""
    manifest, manifest_problem = read_manifest(s3, drop)
    lineage = {
        "batch_id": batch_id,
        "ingested_at": ingested_at,
        "license": manifest.license if manifest else None,
        "consent_basis": manifest.consent_basis if manifest else None,
    }
    quarantined: list[QuarantineEntry] = []
    parts_of: dict[str, list[tuple[int, int, int]]] = {}  # uri -> (part, rows, quarantine entries before it)
    records = 0
    for result in map_in_order(raw_part, _blocks(s3, drop, lineage, manifest_problem, part_rows), workers):
        if isinstance(result, FileFailed):
            taken = parts_of.pop(result.uri, [])
            if taken:
                discard_parts([index for index, _, _ in taken])
                records -= sum(rows for _, rows, _ in taken)
                del quarantined[taken[0][2]:]  # the file's own rejected lines: it is quarantined as one entry
            quarantined.append(QuarantineEntry(record_id_for(result.uri, None), batch_id, Stage.RAW, result.uri,
                                               None, None, result.reason, ""))
            continue
        put_part(result.index, result.data)
        parts_of.setdefault(result.uri, []).append((result.index, result.rows, len(quarantined)))
        records += result.rows
        quarantined.extend(result.rejected)
    for landing_file, reason in drop.held_back:  # every object under the drop ends in a visible state
        quarantined.append(QuarantineEntry(record_id_for(f"s3://{drop.bucket}/{landing_file.key}", None), batch_id,
                                           Stage.RAW, f"s3://{drop.bucket}/{landing_file.key}", None, None, reason, ""))
    return IngestSummary(records, quarantine_frame(quarantined), manifest, manifest_problem,
                         [f.key for f in drop.data_files])


def empty_raw_frame() -> pd.DataFrame:
    records = pd.DataFrame(columns=RAW_COLUMNS).astype({"source_line": "Int64"})
    records["ingested_at"] = pd.to_datetime(records["ingested_at"], utc=True)
    return records


def ingest_drop(s3: Any, drop: Drop, batch_id: str, ingested_at: datetime, workers: int = 1,
                part_rows: int = PART_ROWS) -> IngestResult:
    """:func:`stream_drop` into one frame: for tests and small drops."""
    parts: dict[int, bytes] = {}
    summary = stream_drop(s3, drop, batch_id, ingested_at, parts.__setitem__,
                          lambda taken: [parts.pop(i) for i in taken], workers, part_rows)
    records = pd.concat([read_frame(parts[i]) for i in sorted(parts)], ignore_index=True) if parts else \
        empty_raw_frame()
    return IngestResult(records, summary)


def read_payloads(records: pd.DataFrame) -> list[dict[str, Any]]:
    return [json.loads(p) for p in records["payload"]]
