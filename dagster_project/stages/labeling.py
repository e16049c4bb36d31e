"""The ``labeling_tasks`` stage: what each vendor is asked to judge.

Every unique record becomes an item judged by ``overlap_k`` independent annotators (the replicas), so
agreement can be measured and labels consolidated. Items are routed to vendors by their configured share
using a hash of the item id, so the routing of an item never changes when a batch is re-run. All replicas of
an item go to the same vendor: agreement is a property of one workforce. Known-answer gold items are mixed
in at the dataset's ``gold_rate`` so every annotator's accuracy can be measured on the same batch.
"""

from __future__ import annotations

import hashlib
import math

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


GOLD_ITEM_PREFIX = "gold-"
LABELING_TASK_COLUMNS = [*TASK_COLUMNS, "is_gold"]


def gold_sample_size(n_items: int, gold_rate: float) -> int:
    """Gold items to mix into a batch of ``n_items``: ``ceil(rate * n)``, none for an empty batch."""
    return 0 if n_items == 0 or gold_rate == 0 else math.ceil(n_items * gold_rate)


def select_gold(gold: pd.DataFrame, n: int, batch_id: str) -> pd.DataFrame:
    """A deterministic per-batch sample of the gold set (different batches see different gold items)."""
    if n > len(gold):
        raise ValueError(f"the gold set has {len(gold)} items; this batch needs {n} (gold_rate too high or set too "
                         f"small)")
    order = gold["gold_id"].map(lambda gold_id: _unit_interval(f"gold:{batch_id}:{gold_id}"))
    return gold.loc[order.sort_values(kind="stable").index[:n]].reset_index(drop=True)


def build_tasks(records: pd.DataFrame, dataset: DatasetConfig, gold: pd.DataFrame | None = None) -> pd.DataFrame:
    """One task per (item, replica): ``task_id`` is stable, so resubmission is idempotent at the vendor.

    ``gold`` (``gold_id``, ``text``, ``label``) items join as ordinary-looking items with ``is_gold`` set;
    vendors never see that column.
    """
    text_field = dataset.record_schema.text_field
    items = pd.DataFrame({"item_id": records["record_id"], "text": records[text_field], "is_gold": False})
    if gold is not None and len(gold):
        gold_items = pd.DataFrame({"item_id": GOLD_ITEM_PREFIX + gold["gold_id"], "text": gold["text"],
                                   "is_gold": True})
        items = pd.concat([items, gold_items], ignore_index=True)
    items["vendor"] = route_to_vendors(items["item_id"], dataset)
    tasks = items.loc[items.index.repeat(dataset.overlap_k)].reset_index(drop=True)
    tasks["replica"] = tasks.groupby("item_id").cumcount()
    tasks["task_id"] = tasks["item_id"] + "-r" + tasks["replica"].astype(str)
    return tasks[LABELING_TASK_COLUMNS]
