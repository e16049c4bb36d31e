"""The stages of one batch, as plain functions over a tenant's lakeFS repository.

Each stage reads its input from the batch branch, does its work with the pure functions of this package,
writes its output (and its quarantine) back under ``datasets/<dataset>/<stage>/batch=<id>/`` and commits, with
the stage, the counts and the Dagster run id in the commit metadata. Dagster assets call these functions and
stay thin; tests call them directly. Re-running a stage rewrites the same paths and, with nothing changed,
makes no new commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from dagster_project import layout
from dagster_project.clean import clean_records
from dagster_project.dedup import DEDUP_INDEX_COLUMNS, deduplicate
from dagster_project.ingest import ingest_drop
from dagster_project.labeling import GOLD_ITEM_PREFIX, build_tasks, gold_sample_size, select_gold
from dagster_project.lakefs_repo import LakeFSRepository
from dagster_project.landing import find_drop
from dagster_project.layout import Stage
from dagster_project.pii import PiiResult, apply_policy, scan_frame
from dagster_project.quality import majority_vote
from dagster_project.records import QUARANTINE_COLUMNS, empty_quarantine, quarantine_rows
from dagster_project.tenants import DatasetConfig, TenantConfig
from dagster_project.vendors.base import ANNOTATION_COLUMNS, TASK_COLUMNS, VendorClient

QUARANTINING_STAGES = (Stage.RAW, Stage.CLEAN, Stage.PII, Stage.CONSOLIDATED_LABELS)
PII_FINDINGS_FILE = "pii_findings.parquet"
GOLD_FILE = "gold.parquet"
DUPLICATES_FILE = "duplicates.parquet"
MANIFEST_COPY = "manifest.json"


@dataclass(frozen=True)
class Batch:
    """One batch of one tenant's dataset, and where its data lives."""

    tenant: TenantConfig
    dataset: DatasetConfig
    batch_id: str
    repo: LakeFSRepository
    run_id: str = ""

    @property
    def branch(self) -> str:
        return layout.batch_branch(self.dataset.name, self.batch_id)

    def data_path(self, stage: Stage) -> str:
        return layout.stage_data_path(self.dataset.name, stage, self.batch_id)

    def quarantine_path(self, stage: Stage) -> str:
        return layout.stage_quarantine_path(self.dataset.name, stage, self.batch_id)

    def stage_file(self, stage: Stage, name: str) -> str:
        return layout.stage_dir(self.dataset.name, stage, self.batch_id) + name

    def read(self, stage: Stage, name: str | None = None) -> pd.DataFrame:
        path = self.stage_file(stage, name) if name else self.data_path(stage)
        return self.repo.require_frame(self.branch, path)

    def commit(self, stage: Stage | str, message: str, counts: dict[str, Any]) -> str:
        metadata = {
            "trainyard.tenant": self.tenant.name,
            "trainyard.dataset": self.dataset.name,
            "trainyard.batch_id": self.batch_id,
            "trainyard.stage": str(stage),
            "trainyard.dagster_run_id": self.run_id,
            **{f"trainyard.{key}": str(value) for key, value in counts.items()},
        }
        return self.repo.commit(self.branch, f"{self.dataset.name} {self.batch_id}: {message}", metadata)


@dataclass
class StageReport:
    """What a stage did, for Dagster metadata and the demo summary."""

    stage: Stage
    rows: int
    commit_id: str
    counts: dict[str, int | float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def write_stage(batch: Batch, stage: Stage, data: pd.DataFrame, quarantine: pd.DataFrame | None = None) -> None:
    batch.repo.put_frame(batch.branch, batch.data_path(stage), data)
    if quarantine is not None:
        batch.repo.put_frame(batch.branch, batch.quarantine_path(stage), quarantine)


# -- stages -------------------------------------------------------------------------------------------------
def run_raw(batch: Batch, s3: Any, landing_bucket: str, storage_namespace: str,
            now: datetime | None = None) -> StageReport:
    """Create the batch branch from main and ingest the drop onto it."""
    batch.repo.ensure_exists(storage_namespace)
    batch.repo.ensure_branch(batch.branch)
    drop = find_drop(s3, landing_bucket, batch.tenant.landing_prefix, batch.dataset.name, batch.batch_id)
    result = ingest_drop(s3, drop, batch.batch_id, now or _first_ingestion_time(batch) or datetime.now(UTC))
    write_stage(batch, Stage.RAW, result.records, result.quarantine)
    manifest = result.manifest.model_dump(mode="json") if result.manifest else {"problem": result.manifest_problem}
    batch.repo.put_json(batch.branch, batch.stage_file(Stage.RAW, MANIFEST_COPY),
                        {"drop": drop.uri, "files": result.files, "manifest": manifest})
    counts = {"records_in": result.records_in, "parsed": len(result.records), "quarantined": len(result.quarantine),
              "files": len(result.files)}
    commit_id = batch.commit(Stage.RAW, f"ingest {len(result.files)} files from {drop.uri}", counts)
    return StageReport(Stage.RAW, len(result.records), commit_id, counts,
                       {"drop": drop.uri, "quarantine_reasons": reason_counts(result.quarantine),
                        "manifest_problem": result.manifest_problem})


def _first_ingestion_time(batch: Batch) -> datetime | None:
    """A re-run keeps the batch's original ``ingested_at``, so re-ingesting the same drop changes nothing."""
    previous = batch.repo.get_frame(batch.branch, batch.data_path(Stage.RAW))
    if previous is None or previous.empty:
        return None
    return previous["ingested_at"].iloc[0].to_pydatetime()


def run_clean(batch: Batch) -> StageReport:
    result = clean_records(batch.read(Stage.RAW), batch.dataset.record_schema)
    write_stage(batch, Stage.CLEAN, result.records, result.quarantine)
    counts = {"clean": len(result.records), "quarantined": len(result.quarantine),
              "normalised_values": result.normalised_values}
    commit_id = batch.commit(Stage.CLEAN, "normalise and validate against the record schema", counts)
    return StageReport(Stage.CLEAN, len(result.records), commit_id, counts,
                       {"quarantine_reasons": reason_counts(result.quarantine)})


def published_hash_index(batch: Batch) -> pd.DataFrame:
    """Text hashes of every batch already on main, except this batch's own (a re-run must not see itself)."""
    own = layout.dedup_index_path(batch.dataset.name, batch.batch_id)
    paths = [p for p in batch.repo.list_paths(layout.MAIN_BRANCH, layout.dedup_index_prefix(batch.dataset.name))
             if p.endswith(".parquet") and p != own]
    frames = [batch.repo.require_frame(layout.MAIN_BRANCH, p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=DEDUP_INDEX_COLUMNS)


def run_pii(batch: Batch) -> StageReport:
    """Redact or drop PII per the dataset's policy, before any text can reach a labeling vendor."""
    clean = batch.read(Stage.CLEAN)
    text_field = batch.dataset.record_schema.text_field
    policy = batch.dataset.pii_policy
    if policy == "none":  # declared PII-free: scanned for the record, passed on unchanged
        result = PiiResult(clean, clean.iloc[0:0], scan_frame(clean, text_field), {})
    else:
        result = apply_policy(clean, text_field, policy)
    quarantine = quarantine_rows(result.dropped, Stage.PII, f"contains PII (dataset pii_policy={policy})",
                                 field=text_field)
    write_stage(batch, Stage.PII, result.records, quarantine)
    batch.repo.put_frame(batch.branch, batch.stage_file(Stage.PII, PII_FINDINGS_FILE), result.findings)
    by_kind = {f"pii_{kind}": int(n) for kind, n in result.findings["kind"].value_counts().sort_index().items()}
    counts = {"records": len(result.records), "records_with_pii": int(result.findings["record_id"].nunique()),
              "pii_findings": len(result.findings), "quarantined": len(quarantine), **by_kind}
    commit_id = batch.commit(Stage.PII, f"PII policy {policy}: {len(result.findings)} findings", counts)
    return StageReport(Stage.PII, len(result.records), commit_id, counts, {"policy": policy})


def run_dedup(batch: Batch) -> StageReport:
    clean = batch.read(Stage.PII)
    known = published_hash_index(batch)
    result = deduplicate(clean, batch.dataset.record_schema.text_field, known)
    write_stage(batch, Stage.DEDUP, result.records)
    batch.repo.put_frame(batch.branch, batch.stage_file(Stage.DEDUP, DUPLICATES_FILE), result.duplicates)
    in_batch = int((result.duplicates["scope"] == "batch").sum())
    counts = {"unique": len(result.records), "duplicates": len(result.duplicates),
              "duplicates_in_batch": in_batch, "duplicates_of_main": len(result.duplicates) - in_batch,
              "duplicate_rate": round(len(result.duplicates) / len(clean), 6) if len(clean) else 0.0,
              "known_hashes_on_main": len(known)}
    commit_id = batch.commit(Stage.DEDUP, "remove exact duplicates (batch and main)", counts)
    return StageReport(Stage.DEDUP, len(result.records), commit_id, counts)


def run_labeling_tasks(batch: Batch, gold_set: pd.DataFrame) -> StageReport:
    """Build the batch's tasks, mixing in a deterministic sample of the dataset's gold set."""
    records = batch.read(Stage.DEDUP)
    wanted = gold_sample_size(len(records), batch.dataset.gold_rate)
    gold = select_gold(gold_set, wanted, batch.batch_id) if wanted and len(gold_set) else gold_set.iloc[0:0]
    tasks = build_tasks(records, batch.dataset, gold)
    write_stage(batch, Stage.LABELING_TASKS, tasks)
    batch.repo.put_frame(batch.branch, batch.stage_file(Stage.LABELING_TASKS, GOLD_FILE),
                         pd.DataFrame({"item_id": GOLD_ITEM_PREFIX + gold["gold_id"], "label": gold["label"]}))
    per_vendor = {f"tasks_{vendor}": int(n) for vendor, n in tasks["vendor"].value_counts().items()}
    counts = {"items": len(records), "gold_items": len(gold), "gold_items_wanted": wanted, "tasks": len(tasks),
              "overlap_k": batch.dataset.overlap_k, **per_vendor}
    commit_id = batch.commit(Stage.LABELING_TASKS, "build labeling tasks", counts)
    return StageReport(Stage.LABELING_TASKS, len(tasks), commit_id, counts)


def batch_judgements(batch: Batch) -> pd.DataFrame:
    """Judgements on the batch's own items (gold items are for measuring annotators, not for publishing)."""
    annotations = batch.read(Stage.ANNOTATIONS)
    return annotations[~annotations["item_id"].str.startswith(GOLD_ITEM_PREFIX)].reset_index(drop=True)


def submission_id(batch: Batch) -> str:
    return f"{batch.tenant.name}/{batch.dataset.name}/{batch.batch_id}"


def run_annotations(batch: Batch, vendors: dict[str, VendorClient]) -> StageReport:
    """Submit each vendor's share idempotently and collect its judgements."""
    tasks = batch.read(Stage.LABELING_TASKS)
    collected = []
    for vendor_name, vendor_tasks in tasks.groupby("vendor", sort=True):
        vendor = vendors[str(vendor_name)]
        status = vendor.submit(submission_id(batch), vendor_tasks[TASK_COLUMNS], batch.dataset.labels)
        if not status.done:
            raise RuntimeError(f"vendor '{vendor_name}' has finished {status.completed_tasks} of "
                               f"{status.total_tasks} tasks for {status.submission_id}; retry when complete")
        collected.append(vendor.fetch(submission_id(batch)))
    annotations = pd.concat(collected, ignore_index=True) if collected else pd.DataFrame(columns=ANNOTATION_COLUMNS)
    write_stage(batch, Stage.ANNOTATIONS, annotations)
    latency = (annotations["completed_at"] - annotations["submitted_at"]).dt.total_seconds() if len(annotations) \
        else pd.Series(dtype=float)
    counts = {"judgements": len(annotations),
              "annotators": int(annotations["annotator_id"].nunique()) if len(annotations) else 0,
              "labeling_cost_usd": round(float(annotations["cost_usd"].sum()), 4) if len(annotations) else 0.0,
              "p95_latency_seconds": round(float(latency.quantile(0.95)), 1) if len(latency) else 0.0}
    commit_id = batch.commit(Stage.ANNOTATIONS, f"collect judgements from {len(collected)} vendor(s)", counts)
    return StageReport(Stage.ANNOTATIONS, len(annotations), commit_id, counts)


def run_consolidation(batch: Batch) -> StageReport:
    """Majority vote per item; an item no vendor judged is quarantined, never silently lost."""
    annotations = batch_judgements(batch)
    items = batch.read(Stage.DEDUP)
    consolidated = majority_vote(annotations)
    unjudged = items[~items["record_id"].isin(consolidated["item_id"])]
    quarantine = quarantine_rows(unjudged, Stage.CONSOLIDATED_LABELS, "no judgement returned by any vendor")
    write_stage(batch, Stage.CONSOLIDATED_LABELS, consolidated, quarantine)
    counts = {"labelled_items": len(consolidated), "quarantined": len(quarantine),
              "mean_confidence": round(float(consolidated["confidence"].mean()), 4) if len(consolidated) else 0.0,
              "unanimous_items": int((consolidated["confidence"] == 1.0).sum())}
    commit_id = batch.commit(Stage.CONSOLIDATED_LABELS, "consolidate labels by majority vote", counts)
    return StageReport(Stage.CONSOLIDATED_LABELS, len(consolidated), commit_id, counts,
                       {"label_distribution": {str(k): int(v) for k, v in
                                               consolidated["label"].value_counts().sort_index().items()}})


def build_published(batch: Batch) -> pd.DataFrame:
    """The publish candidate: the batch's unique records with their consolidated label and confidence."""
    records = batch.read(Stage.DEDUP)
    labels = batch.read(Stage.CONSOLIDATED_LABELS).rename(columns={"item_id": "record_id"})
    return records.merge(labels, on="record_id", how="inner", validate="one_to_one")


def all_quarantine(batch: Batch) -> pd.DataFrame:
    """Every quarantined record of the batch, whichever stage held it back."""
    frames = [batch.repo.get_frame(batch.branch, batch.quarantine_path(stage)) for stage in QUARANTINING_STAGES]
    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True)[QUARANTINE_COLUMNS] if frames else empty_quarantine()


def reason_counts(quarantine: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in quarantine["reason"].value_counts().items()}
