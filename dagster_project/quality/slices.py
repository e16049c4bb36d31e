"""Bias audit: labeling quality per segment of the records (language, region, channel, client...).

Why: overall numbers hide the slices where labeling goes wrong. A vendor may skip the hard language, annotators
may disagree on one product line, gold accuracy may drop for one channel. A model trained on that data then
fails on exactly those people. So the same quality measures are computed per slice and a slice is flagged when
it is clearly worse than the whole, but only when it has enough items that the difference is not just noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dagster_project.quality.agreement import percent_agreement

SLICE_COLUMNS = ["segment", "value", "items", "coverage", "agreement", "gold_accuracy", "flagged", "flag_reasons"]
METRICS = ("coverage", "agreement", "gold_accuracy")
MISSING_SEGMENT = "<missing>"
"""The slice of records whose segment value is null: missing demographics are a slice of their own."""


def _gold_accuracy(annotations: pd.DataFrame, gold: pd.DataFrame | None) -> float:
    """Share of judgements on gold items that match the gold label; NaN without gold or gold judgements."""
    if gold is None or annotations.empty:
        return float("nan")
    judged = annotations.merge(
        gold[["item_id", "label"]].rename(columns={"label": "gold_label"}), on="item_id", how="inner"
    )
    return float((judged["label"] == judged["gold_label"]).mean()) if not judged.empty else float("nan")


def _metrics(item_ids: pd.Series, annotations: pd.DataFrame, gold: pd.DataFrame | None) -> dict[str, Any]:
    items = int(item_ids.nunique())
    judged = annotations["item_id"].nunique()
    return {
        "items": items,
        # Majority vote gives a consolidated label to every item with at least one judgement, so the share of
        # items judged at least once is also the share that gets a consolidated label.
        "coverage": judged / items if items else float("nan"),
        "agreement": percent_agreement(annotations),
        "gold_accuracy": _gold_accuracy(annotations, gold),
    }


def slice_metrics(
    records: pd.DataFrame,
    annotations: pd.DataFrame,
    segment: str,
    gold: pd.DataFrame | None = None,
    min_support: int = 20,
    margin: float = 0.1,
    id_field: str = "record_id",
) -> pd.DataFrame:
    """One row per value of ``records[segment]`` with its labeling quality, and whether it is flagged.

    ``records`` has ``id_field`` and the segment column; ``annotations`` has ``item_id``, ``annotator_id``,
    ``label`` (``item_id`` is the record id); ``gold`` has ``item_id`` and the gold ``label``. Annotations of
    items that are not among ``records`` are ignored, everywhere.

    Columns: ``items`` (records in the slice, the support), ``coverage`` (share judged at least once),
    ``agreement`` (:func:`~dagster_project.quality.agreement.percent_agreement` over the slice's
    annotations), ``gold_accuracy`` (share of judgements on gold items matching gold; NaN without gold),
    ``flagged`` and ``flag_reasons`` (the metrics more than ``margin`` below the overall value; only slices
    with ``items >= min_support`` are flagged, and a NaN metric never flags). The overall metrics are in
    ``result.attrs["overall"]``.
    """
    values = records[segment].astype(object).where(records[segment].notna(), MISSING_SEGMENT)
    segment_of = pd.Series(values.to_numpy(), index=records[id_field].to_numpy())
    segment_of = segment_of[~segment_of.index.duplicated()]
    known = annotations[annotations["item_id"].isin(segment_of.index)]
    overall = _metrics(records[id_field], known, gold)

    slice_of_annotation = known["item_id"].map(segment_of)
    rows: list[dict[str, Any]] = []
    for value in sorted(values.unique(), key=str):
        ids = records[id_field][(values == value).to_numpy()]
        in_slice = (slice_of_annotation == value).to_numpy()
        row = {"segment": segment, "value": value} | _metrics(ids, known[in_slice], gold)
        reasons = [
            metric
            for metric in METRICS
            if row["items"] >= min_support
            and not np.isnan(row[metric])
            and not np.isnan(overall[metric])
            and row[metric] < overall[metric] - margin
        ]
        rows.append(row | {"flagged": bool(reasons), "flag_reasons": ",".join(reasons)})
    result = pd.DataFrame(rows, columns=SLICE_COLUMNS).astype({"value": object})
    result.attrs["overall"] = overall
    return result
