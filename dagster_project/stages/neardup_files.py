"""Near-duplicates in local files, for ``trainyard near-dups``: the same engine as the ``dedup`` stage.

Files are JSONL, CSV or Parquet, picked by suffix and parsed by the ``raw`` stage's own parsers, so a file that
ingests reads here with the same limits and line numbers. Unlike ingest, nothing is quarantined: a bad row or a
missing field stops the command with one line naming the file, the line (row, for Parquet) and the field, since a
near-duplicate report over part of a file would silently miss pairs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from dagster_project.stages.ingest import PARSERS, SUPPORTED_SUFFIXES, FileRejected, file_format
from dagster_project.stages.neardup import NearDupParams, SignatureIndex, find_near_duplicates


class RecordsError(ValueError):
    """The records cannot be read; the message names the file, line and field."""


def _field(record: dict[str, Any], name: str, where: str) -> Any:
    if name not in record:
        fields = ", ".join(sorted(record)[:12]) or "none"
        raise RecordsError(f"{where}: no field '{name}' (its fields: {fields})")
    return record[name]


def read_records(path: Path, id_field: str, text_field: str) -> tuple[list[str], list[str]]:
    """(ids, texts) in file order. Ids are kept as given, as strings (a JSON integer 7 is "7"); they must be unique,
    since duplicates are reported by id."""
    fmt = file_format(path.name)
    if fmt is None:
        raise RecordsError(f"{path}: unsupported file type (expected one of {', '.join(SUPPORTED_SUFFIXES)})")
    unit = "row" if fmt == "parquet" else "line"
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, int | None] = {}
    try:
        with path.open("rb") as body:
            for parsed in PARSERS[fmt](body):
                where = f"{path} {unit} {parsed.line}"
                if parsed.error is not None:
                    raise RecordsError(f"{where}: {parsed.error}")
                record = json.loads(parsed.payload)
                record_id, text = _field(record, id_field, where), _field(record, text_field, where)
                if isinstance(record_id, bool) or not isinstance(record_id, str | int) or record_id == "":
                    raise RecordsError(f"{where}: field '{id_field}' is {json.dumps(record_id)[:40]}, not an id "
                                       "(a non-empty string or an integer)")
                if not isinstance(text, str):
                    raise RecordsError(f"{where}: field '{text_field}' is {json.dumps(text)[:40]}, not text")
                record_id = str(record_id)
                if record_id in seen:
                    raise RecordsError(f"{where}: id {record_id!r} (field '{id_field}') repeats {unit} "
                                       f"{seen[record_id]}")
                seen[record_id] = parsed.line
                ids.append(record_id)
                texts.append(text)
    except OSError as exc:
        raise RecordsError(f"{path}: {exc.strerror or exc}") from exc
    except FileRejected as exc:
        raise RecordsError(f"{path}: {exc}") from exc
    except RecordsError:
        raise
    except Exception as exc:  # pyarrow's errors for a file that is not Parquet
        if fmt != "parquet":
            raise
        raise RecordsError(f"{path}: unreadable parquet file: {exc}") from exc
    return ids, texts


def report_near_duplicates(path: Path, against: Path | None, id_field: str, text_field: str, threshold: float,
                           out: TextIO) -> tuple[int, int]:
    """Write one JSON line ``{"id", "duplicate_of", "similarity"}`` per record of ``path`` that near-duplicates an
    earlier record of it or one of ``against``; return (duplicates, records)."""
    try:
        params = NearDupParams.for_threshold(threshold)
    except ValueError as exc:
        raise RecordsError(f"--threshold: {exc}") from exc
    ids, texts = read_records(path, id_field, text_field)
    index, published = None, None
    if against is not None:
        against_ids, against_texts = read_records(against, id_field, text_field)
        index = SignatureIndex.build(against_ids, against_texts, params)
        published = dict(zip(against_ids, against_texts, strict=True))
    found = find_near_duplicates(ids, texts, params, against=index, against_texts=published)
    for duplicate in found:
        out.write(json.dumps({"id": duplicate.record_id, "duplicate_of": duplicate.duplicate_of,
                              "similarity": round(duplicate.similarity, 4)}, ensure_ascii=False) + "\n")
    return len(found), len(ids)
