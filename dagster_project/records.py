"""Record identity, lineage columns and the quarantine table shared by every stage.

Every raw record gets a ``record_id`` that is a stable hash of where it came from (source object and line),
so re-ingesting the same drop yields the same ids and every terminal state (published, quarantined,
duplicate_of) can be reconciled record by record. Rejected rows are never dropped: they go to a quarantine
table with the file, line, field and reason, written next to the batch data on its branch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

LINEAGE_COLUMNS = ["record_id", "batch_id", "source_uri", "source_line", "ingested_at", "license", "consent_basis"]
QUARANTINE_COLUMNS = ["record_id", "batch_id", "stage", "source_uri", "source_line", "field", "reason", "payload"]


def record_id_for(source_uri: str, source_line: int | None) -> str:
    """Stable id of one raw record: the same file and line always give the same id."""
    location = f"{source_uri}#{'file' if source_line is None else source_line}"
    return hashlib.sha256(location.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class QuarantineEntry:
    record_id: str
    batch_id: str
    stage: str
    source_uri: str
    source_line: int | None
    field: str | None
    reason: str
    payload: str


def quarantine_frame(entries: Iterable[QuarantineEntry]) -> pd.DataFrame:
    frame = pd.DataFrame([e.__dict__ for e in entries], columns=QUARANTINE_COLUMNS)
    return frame.astype({"source_line": "Int64"})


def empty_quarantine() -> pd.DataFrame:
    return quarantine_frame([])


def quarantine_rows(rows: pd.DataFrame, stage: str, reason: str, field: str | None = None) -> pd.DataFrame:
    """Quarantine whole records of a stage's frame (which carries the lineage columns) with one reason."""
    if rows.empty:
        return empty_quarantine()
    payload_cols = [c for c in rows.columns if c not in LINEAGE_COLUMNS]
    payloads = rows[payload_cols].to_json(orient="records", lines=True, date_format="iso").splitlines()
    frame = pd.DataFrame(
        {
            "record_id": rows["record_id"].to_numpy(),
            "batch_id": rows["batch_id"].to_numpy(),
            "stage": stage,
            "source_uri": rows["source_uri"].to_numpy(),
            "source_line": rows["source_line"].to_numpy(),
            "field": field,
            "reason": reason,
            "payload": payloads,
        },
        columns=QUARANTINE_COLUMNS,
    )
    return frame.astype({"source_line": "Int64"})
