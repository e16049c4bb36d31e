"""The dataset's gold set: known-answer items the data owner curates next to the drops.

Gold is reference data, not client data in transit, so a bad row fails loudly (naming the file, line and field)
instead of being quarantined: a wrong gold label would silently grade every annotator against it. It is read
with the same format parsers as a drop (:data:`~dagster_project.stages.ingest.PARSERS`).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from dagster_project.records import record_id_for
from dagster_project.stages.ingest import PARSERS, file_format
from dagster_project.stages.landing import landing_access, open_object

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
        for parsed in PARSERS[fmt](open_object(s3, bucket, key)):
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
