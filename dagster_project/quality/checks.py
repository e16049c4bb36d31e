"""Data checks that decide whether a batch may go on: each one measures a number and compares it to a threshold.

Why one shape: gates, reports and alerts all need the same facts about a check (what was measured, against
what, on how many records, and which records or classes are the worst), so every check returns a
:class:`~dagster_project.quality.result.GateResult` and no caller has to know how a particular check is
computed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dagster_project.quality.result import Comparison, GateResult
from dagster_project.stages.pii import scan_frame

WORST_LIMIT = 10
"""How many worst offenders an outcome keeps."""


def _json_id(value: Any) -> Any:
    """Record ids as JSON-able scalars (numpy integers and the like become Python ones)."""
    return value.item() if hasattr(value, "item") else value


def _present(column: pd.Series) -> pd.Series:
    """True where a value is there: not null and, for strings, not blank."""
    blank = column.map(lambda v: isinstance(v, str) and not v.strip()).astype(bool)
    return column.notna() & ~blank


def completeness(
    frame: pd.DataFrame, required: list[str], threshold: float = 0.99, id_field: str = "record_id"
) -> GateResult:
    """Share of records with every required field present and non-blank (a missing column counts as empty).

    ``worst`` lists the records missing the most required fields, with the fields they miss. An empty frame is
    vacuously complete (value 1.0, sample size 0).
    """
    n = len(frame)
    # Positional arrays, so a frame with a duplicated index is measured like any other.
    columns = [
        _present(frame[name]).to_numpy(dtype=bool) if name in frame.columns else np.zeros(n, dtype=bool)
        for name in required
    ]
    present = np.column_stack(columns) if columns else np.ones((n, 0), dtype=bool)
    value = float(present.all(axis=1).mean()) if n else 1.0
    missing_count = (~present).sum(axis=1)
    order = np.argsort(-missing_count, kind="stable")
    offenders = [position for position in order[:WORST_LIMIT] if missing_count[position] > 0]
    ids = frame[id_field].tolist() if id_field in frame.columns else frame.index.tolist()
    worst = [
        {
            "record_id": _json_id(ids[position]),
            "missing": [name for column, name in enumerate(required) if not present[position, column]],
        }
        for position in offenders
    ]
    return GateResult(name="completeness", passed=value >= threshold, value=value, threshold=threshold,
                      comparison=Comparison.AT_LEAST, sample_size=n, worst=worst)


def class_balance(labels: pd.Series, classes: list[str], min_share: float) -> GateResult:
    """Passes when every class has at least ``min_share`` of the (non-null) labels.

    ``value`` is the smallest class share; a class never seen has share 0. Labels outside ``classes`` still
    count in the denominator. ``worst`` lists the classes under the minimum, smallest first.
    """
    observed = labels.dropna()
    n = len(observed)
    counts = observed.value_counts()
    shares = {c: (int(counts.get(c, 0)) / n if n else 0.0) for c in classes}
    value = min(shares.values()) if shares else 1.0
    under = sorted((c for c in classes if shares[c] < min_share), key=lambda c: (shares[c], str(c)))
    worst = [{"class": c, "count": int(counts.get(c, 0)), "share": shares[c]} for c in under[:WORST_LIMIT]]
    return GateResult(name="class_balance", passed=value >= min_share, value=value, threshold=min_share,
                      comparison=Comparison.AT_LEAST, sample_size=n, worst=worst)


def duplicate_rate(n_duplicates: int, n_records: int, threshold: float) -> GateResult:
    """Share of records that duplicate an earlier one must not exceed ``threshold`` (0 for an empty batch)."""
    if n_duplicates < 0 or n_records < 0 or n_duplicates > n_records:
        raise ValueError(f"need 0 <= n_duplicates <= n_records, got {n_duplicates} of {n_records}")
    value = n_duplicates / n_records if n_records else 0.0
    return GateResult(name="duplicate_rate", passed=value <= threshold, value=value, threshold=threshold,
                      comparison=Comparison.AT_MOST, sample_size=n_records, worst=[])


def pii_residual(frame: pd.DataFrame, text_field: str, threshold: int = 0, id_field: str = "record_id") -> GateResult:
    """Number of PII findings left in ``text_field`` must not exceed ``threshold`` (normally 0).

    ``worst`` names the records with the most findings and the kinds found, never the values.
    """
    findings = scan_frame(frame, text_field, id_field=id_field)
    value = float(len(findings))
    worst: list[dict[str, Any]] = []
    if not findings.empty:
        per_record = (
            findings.groupby("record_id", sort=False)["kind"]
            .agg(matches="size", kinds=lambda kinds: sorted(set(kinds)))
            .sort_values("matches", ascending=False, kind="stable")
            .head(WORST_LIMIT)
        )
        worst = [
            {"record_id": _json_id(rid), "matches": int(row["matches"]), "kinds": list(row["kinds"])}
            for rid, row in per_record.iterrows()
        ]
        by_kind = findings["kind"].value_counts().sort_index()
        worst.append({"findings_by_kind": {str(k): int(n) for k, n in by_kind.items()}})
        worst.append({"records_with_pii": f"{findings['record_id'].nunique()} of {len(frame)}"})
    return GateResult(name="pii_residual", passed=value <= threshold, value=value, threshold=float(threshold),
                      comparison=Comparison.AT_MOST, sample_size=len(frame), worst=worst)
