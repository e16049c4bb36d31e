"""The ``labeling_tasks`` stage: what each vendor is asked to judge.

Every unique record becomes an item judged by ``overlap_k`` independent annotators (the replicas), so
agreement can be measured and labels consolidated. Items are routed to vendors by their configured share
using a hash of the item id, so the routing of an item never changes when a batch is re-run. All replicas of
an item go to the same vendor: agreement is a property of one workforce.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from dagster_project.tenants import DatasetConfig
from dagster_project.vendors.base import TASK_COLUMNS


def _unit_interval(value: str) -> float:
    return int.from_bytes(hashlib.sha256(value.encode("utf-8")).digest()[:8], "big") / 2**64


def route_to_vendors(item_ids: pd.Series, dataset: DatasetConfig) -> pd.Series:
    """Vendor name per item, proportional to each vendor's share, stable per item."""
    total = sum(v.share for v in dataset.vendors)
    bounds: list[tuple[float, str]] = []
    cumulative = 0.0
    for vendor in dataset.vendors:
        cumulative += vendor.share / total
        bounds.append((cumulative, vendor.name))

    def pick(item_id: str) -> str:
        point = _unit_interval(f"route:{item_id}")
        return next((name for bound, name in bounds if point < bound), bounds[-1][1])

    return item_ids.map(pick)


def build_tasks(records: pd.DataFrame, dataset: DatasetConfig) -> pd.DataFrame:
    """One task per (item, replica): ``task_id`` is stable, so resubmission is idempotent at the vendor."""
    text_field = dataset.record_schema.text_field
    items = pd.DataFrame({"item_id": records["record_id"], "text": records[text_field]})
    items["vendor"] = route_to_vendors(items["item_id"], dataset)
    tasks = items.loc[items.index.repeat(dataset.overlap_k)].reset_index(drop=True)
    tasks["replica"] = tasks.groupby("item_id").cumcount()
    tasks["task_id"] = tasks["item_id"] + "-r" + tasks["replica"].astype(str)
    return tasks[TASK_COLUMNS]
