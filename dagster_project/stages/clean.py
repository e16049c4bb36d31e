"""The ``clean`` stage: normalise text and enforce the dataset's record schema.

Unicode is NFKC-normalised (full-width digits, ligatures and compatibility forms become what annotators and
models expect), control characters are removed, runs of spaces are collapsed, and every declared field is
typed and range-checked. A record that breaks the schema is quarantined with the first offending field and
every problem found, so the client can fix the source in one pass.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from dagster_project.layout import Stage
from dagster_project.records import LINEAGE_COLUMNS, QuarantineEntry, empty_quarantine, quarantine_frame
from dagster_project.stages.parts import PartOutput, PartTask, frame_bytes, read_frame
from dagster_project.tenants import FieldSpec, RecordSchema

# Cc (control) characters other than tab and newline, plus the Unicode line/paragraph separators.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_HORIZONTAL_SPACE = re.compile(r"[ \u00a0]+")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
_DTYPES = {"string": "string", "integer": "Int64", "number": "Float64", "boolean": "boolean"}


@dataclass
class CleanResult:
    records: pd.DataFrame
    quarantine: pd.DataFrame
    normalised_values: int
    """How many string values normalisation changed (a signal of encoding trouble at the source)."""


def normalise_text(value: str) -> str:
    """NFKC, control characters removed, runs of spaces collapsed, ends trimmed.

    Collapsing spaces matters downstream: "+44   7700   900123" must look like the phone number it is to the
    PII detector, and two texts that differ only in spacing are one text to annotators and to dedup.
    """
    if value.isascii() and value.isprintable() and "  " not in value:
        # The common case, without a regex: NFKC leaves ASCII as it is, and printable ASCII holds no control
        # character and no whitespace but the plain space, so only the ends can change.
        return value.strip()
    return _HORIZONTAL_SPACE.sub(" ", _CONTROL.sub("", unicodedata.normalize("NFKC", value))).strip()


class FieldError(ValueError):
    pass


def _coerce(name: str, spec: FieldSpec, value: Any) -> Any:
    """Type one value per its spec; raise FieldError with a message naming the field."""
    kind = spec.type
    if kind == "string":
        if isinstance(value, (dict, list)):
            raise FieldError(f"field '{name}' must be a string, found {type(value).__name__}")
        result: Any = str(value)
        if spec.max_length is not None and len(result) > spec.max_length:
            raise FieldError(f"field '{name}' is {len(result)} characters long, over the maximum {spec.max_length}")
    elif kind == "integer":
        if isinstance(value, bool):
            raise FieldError(f"field '{name}' must be an integer, found a boolean")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise FieldError(f"field '{name}' must be an integer, found {value!r}") from None
        if not math.isfinite(number) or number != int(number):
            raise FieldError(f"field '{name}' must be an integer, found {value!r}")
        result = int(number)
    elif kind == "number":
        if isinstance(value, bool):
            raise FieldError(f"field '{name}' must be a number, found a boolean")
        try:
            result = float(value)
        except (TypeError, ValueError):
            raise FieldError(f"field '{name}' must be a number, found {value!r}") from None
        if not math.isfinite(result):
            raise FieldError(f"field '{name}' must be a finite number, found {value!r}")
    elif kind == "boolean":
        if isinstance(value, bool):
            result = value
        elif str(value).strip().lower() in _TRUE:
            result = True
        elif str(value).strip().lower() in _FALSE:
            result = False
        else:
            raise FieldError(f"field '{name}' must be a boolean, found {value!r}")
    else:  # datetime
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise FieldError(f"field '{name}' must be an ISO-8601 date/time, found {value!r}") from None
        result = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if spec.allowed is not None and str(result) not in spec.allowed:
        raise FieldError(f"field '{name}' must be one of {', '.join(spec.allowed)}, found {result!r}")
    if spec.minimum is not None and kind in ("integer", "number") and result < spec.minimum:
        raise FieldError(f"field '{name}' is {result}, below the minimum {spec.minimum:g}")
    if spec.maximum is not None and kind in ("integer", "number") and result > spec.maximum:
        raise FieldError(f"field '{name}' is {result}, above the maximum {spec.maximum:g}")
    return result


def clean_records(raw: pd.DataFrame, schema: RecordSchema) -> CleanResult:
    """Validate raw records against the schema; return typed records and quarantined ones."""
    required = set(schema.required)
    columns: dict[str, list[Any]] = {name: [] for name in schema.fields}
    kept: list[int] = []
    quarantined: list[QuarantineEntry] = []
    normalised = 0
    for position, text in enumerate(raw["payload"].tolist()):
        payload: dict[str, Any] = json.loads(text)
        values: dict[str, Any] = {}
        problems: list[tuple[str, str]] = []
        for name, spec in schema.fields.items():
            value = payload.get(name)
            if name == schema.id_field and isinstance(value, str) and normalise_text(value) != value:
                # The client's id is lineage: kept exactly as sent, or the record is held back -- never altered.
                problems.append((name, f"field '{name}' (the client's record id) {value!r} holds control, "
                                       "non-normalised or surrounding space characters; ids are never changed"))
                continue
            if isinstance(value, str):
                cleaned = normalise_text(value)
                normalised += cleaned != value.strip()
                value = cleaned or None
            if value is None:
                if name in required:
                    problems.append((name, f"missing required field '{name}'"))
                values[name] = None
                continue
            try:
                values[name] = _coerce(name, spec, value)
            except FieldError as exc:
                problems.append((name, str(exc)))
        if problems:
            row = raw.iloc[position]
            quarantined.append(QuarantineEntry(
                row["record_id"], row["batch_id"], Stage.CLEAN, row["source_uri"],
                None if pd.isna(row["source_line"]) else int(row["source_line"]),
                problems[0][0], "; ".join(p for _, p in problems), text,
            ))
            continue
        kept.append(position)
        for name in schema.fields:
            columns[name].append(values[name])
    records = raw.iloc[kept][LINEAGE_COLUMNS].reset_index(drop=True).astype({"source_line": "Int64"})
    for name, spec in schema.fields.items():
        if spec.type == "datetime":
            records[name] = pd.to_datetime(pd.Series(columns[name], dtype=object), utc=True, format="ISO8601")
        else:
            records[name] = pd.Series(columns[name], dtype=object).astype(_DTYPES[spec.type])
    return CleanResult(records, quarantine_frame(quarantined) if quarantined else empty_quarantine(), normalised)


def clean_part(task: PartTask) -> PartOutput:
    """Worker side of the clean stage: one raw part in, its clean part and quarantine out."""
    result = clean_records(read_frame(task.data), task.options)
    return PartOutput(task.index, frame_bytes(result.records), result.quarantine,
                      counts={"normalised_values": result.normalised_values})
