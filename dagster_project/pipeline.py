"""The stages of one batch, as plain functions over a tenant's lakeFS repository.

Each stage reads its input from the batch branch, does its work with the pure functions of this package,
writes its output (and its quarantine) back under ``datasets/<dataset>/<stage>/batch=<id>/`` and commits, with
the stage, the counts and the Dagster run id in the commit metadata. Dagster assets call these functions and
stay thin; tests call them directly. Re-running a stage rewrites the same paths and, with nothing changed,
makes no new commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from dagster_project import layout
from dagster_project.clean import clean_records
from dagster_project.conservation import ConservationError, ConservationReport, reconcile
from dagster_project.dedup import DEDUP_INDEX_COLUMNS, deduplicate, index_entries
from dagster_project.ingest import ingest_drop
from dagster_project.labeling import build_tasks
from dagster_project.lakefs_repo import LakeFSRepository
from dagster_project.landing import find_drop
from dagster_project.layout import Stage
from dagster_project.quality import majority_vote, percent_agreement
from dagster_project.quality.agreement import item_agreement
from dagster_project.records import QUARANTINE_COLUMNS, empty_quarantine, quarantine_rows
from dagster_project.tenants import DatasetConfig, TenantConfig
from dagster_project.vendors.base import ANNOTATION_COLUMNS, VendorClient

QUARANTINING_STAGES = (Stage.RAW, Stage.CLEAN, Stage.CONSOLIDATED_LABELS)
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

    def read(self, stage: Stage) -> pd.DataFrame:
        return self.repo.require_frame(self.branch, self.data_path(stage))

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


def _write_stage(batch: Batch, stage: Stage, data: pd.DataFrame, quarantine: pd.DataFrame | None = None) -> None:
    batch.repo.put_frame(batch.branch, batch.data_path(stage), data)
    if quarantine is not None:
        batch.repo.put_frame(batch.branch, batch.quarantine_path(stage), quarantine)


def _reason_counts(quarantine: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in quarantine["reason"].value_counts().items()}


# -- stages -------------------------------------------------------------------------------------------------
def run_raw(batch: Batch, s3: Any, landing_bucket: str, storage_namespace: str,
            now: datetime | None = None) -> StageReport:
    """Create the batch branch from main and ingest the drop onto it."""
    batch.repo.ensure_exists(storage_namespace)
    batch.repo.ensure_branch(batch.branch)
    drop = find_drop(s3, landing_bucket, batch.tenant.landing_prefix, batch.dataset.name, batch.batch_id)
    result = ingest_drop(s3, drop, batch.batch_id, now or _first_ingestion_time(batch) or datetime.now(UTC))
    _write_stage(batch, Stage.RAW, result.records, result.quarantine)
    manifest = result.manifest.model_dump(mode="json") if result.manifest else {"problem": result.manifest_problem}
    batch.repo.put_json(batch.branch, layout.stage_dir(batch.dataset.name, Stage.RAW, batch.batch_id) + MANIFEST_COPY,
                        {"drop": drop.uri, "files": result.files, "manifest": manifest})
    counts = {"records_in": result.records_in, "parsed": len(result.records), "quarantined": len(result.quarantine),
              "files": len(result.files)}
    commit_id = batch.commit(Stage.RAW, f"ingest {len(result.files)} files from {drop.uri}", counts)
    return StageReport(Stage.RAW, len(result.records), commit_id, counts,
                       {"drop": drop.uri, "quarantine_reasons": _reason_counts(result.quarantine),
                        "manifest_problem": result.manifest_problem})


def _first_ingestion_time(batch: Batch) -> datetime | None:
    """A re-run keeps the batch's original ``ingested_at``, so re-ingesting the same drop changes nothing."""
    previous = batch.repo.get_frame(batch.branch, batch.data_path(Stage.RAW))
    if previous is None or previous.empty:
        return None
    return previous["ingested_at"].iloc[0].to_pydatetime()


def run_clean(batch: Batch) -> StageReport:
    result = clean_records(batch.read(Stage.RAW), batch.dataset.record_schema)
    _write_stage(batch, Stage.CLEAN, result.records, result.quarantine)
    counts = {"clean": len(result.records), "quarantined": len(result.quarantine),
              "normalised_values": result.normalised_values}
    commit_id = batch.commit(Stage.CLEAN, "normalise and validate against the record schema", counts)
    return StageReport(Stage.CLEAN, len(result.records), commit_id, counts,
                       {"quarantine_reasons": _reason_counts(result.quarantine)})


def published_hash_index(batch: Batch) -> pd.DataFrame:
    """Text hashes of every batch already on main, except this batch's own (a re-run must not see itself)."""
    own = layout.dedup_index_path(batch.dataset.name, batch.batch_id)
    paths = [p for p in batch.repo.list_paths(layout.MAIN_BRANCH, layout.dedup_index_prefix(batch.dataset.name))
             if p.endswith(".parquet") and p != own]
    frames = [batch.repo.require_frame(layout.MAIN_BRANCH, p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=DEDUP_INDEX_COLUMNS)


def run_dedup(batch: Batch) -> StageReport:
    clean = batch.read(Stage.CLEAN)
    known = published_hash_index(batch)
    result = deduplicate(clean, batch.dataset.record_schema.text_field, known)
    _write_stage(batch, Stage.DEDUP, result.records)
    batch.repo.put_frame(batch.branch, layout.stage_dir(batch.dataset.name, Stage.DEDUP, batch.batch_id)
                         + DUPLICATES_FILE, result.duplicates)
    in_batch = int((result.duplicates["scope"] == "batch").sum())
    counts = {"unique": len(result.records), "duplicates": len(result.duplicates),
              "duplicates_in_batch": in_batch, "duplicates_of_main": len(result.duplicates) - in_batch,
              "duplicate_rate": round(len(result.duplicates) / len(clean), 6) if len(clean) else 0.0,
              "known_hashes_on_main": len(known)}
    commit_id = batch.commit(Stage.DEDUP, "remove exact duplicates (batch and main)", counts)
    return StageReport(Stage.DEDUP, len(result.records), commit_id, counts)


def run_labeling_tasks(batch: Batch) -> StageReport:
    tasks = build_tasks(batch.read(Stage.DEDUP), batch.dataset)
    _write_stage(batch, Stage.LABELING_TASKS, tasks)
    per_vendor = {f"tasks_{vendor}": int(n) for vendor, n in tasks["vendor"].value_counts().items()}
    counts = {"items": int(tasks["item_id"].nunique()), "tasks": len(tasks), "overlap_k": batch.dataset.overlap_k,
              **per_vendor}
    commit_id = batch.commit(Stage.LABELING_TASKS, "build labeling tasks", counts)
    return StageReport(Stage.LABELING_TASKS, len(tasks), commit_id, counts)


def submission_id(batch: Batch) -> str:
    return f"{batch.tenant.name}/{batch.dataset.name}/{batch.batch_id}"


def run_annotations(batch: Batch, vendors: dict[str, VendorClient]) -> StageReport:
    """Submit each vendor's share idempotently and collect its judgements."""
    tasks = batch.read(Stage.LABELING_TASKS)
    collected = []
    for vendor_name, vendor_tasks in tasks.groupby("vendor", sort=True):
        vendor = vendors[str(vendor_name)]
        status = vendor.submit(submission_id(batch), vendor_tasks, batch.dataset.labels)
        if not status.done:
            raise RuntimeError(f"vendor '{vendor_name}' has finished {status.completed_tasks} of "
                               f"{status.total_tasks} tasks for {status.submission_id}; retry when complete")
        collected.append(vendor.fetch(submission_id(batch)))
    annotations = pd.concat(collected, ignore_index=True) if collected else pd.DataFrame(columns=ANNOTATION_COLUMNS)
    _write_stage(batch, Stage.ANNOTATIONS, annotations)
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
    annotations = batch.read(Stage.ANNOTATIONS)
    items = batch.read(Stage.DEDUP)
    consolidated = majority_vote(annotations)
    unjudged = items[~items["record_id"].isin(consolidated["item_id"])]
    quarantine = quarantine_rows(unjudged, Stage.CONSOLIDATED_LABELS, "no judgement returned by any vendor")
    _write_stage(batch, Stage.CONSOLIDATED_LABELS, consolidated, quarantine)
    counts = {"labelled_items": len(consolidated), "quarantined": len(quarantine),
              "mean_confidence": round(float(consolidated["confidence"].mean()), 4) if len(consolidated) else 0.0,
              "unanimous_items": int((consolidated["confidence"] == 1.0).sum())}
    commit_id = batch.commit(Stage.CONSOLIDATED_LABELS, "consolidate labels by majority vote", counts)
    return StageReport(Stage.CONSOLIDATED_LABELS, len(consolidated), commit_id, counts,
                       {"label_distribution": {str(k): int(v) for k, v in
                                               consolidated["label"].value_counts().sort_index().items()}})


# -- gates --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    value: float
    threshold: float
    comparison: str
    sample_size: int
    worst: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "passed": self.passed, "value": self.value, "threshold": self.threshold,
                "comparison": self.comparison, "sample_size": self.sample_size, "worst": self.worst}


def record_gate(batch: Batch, result: GateResult) -> str:
    """Write a gate result onto the batch branch and commit it, pass or fail, for the audit trail.

    Re-evaluating a gate on unchanged data keeps the recorded result (and its time) instead of a new commit.
    """
    path = layout.gate_result_path(batch.dataset.name, batch.batch_id, result.gate)
    recorded = batch.repo.get_json(batch.branch, path)
    if recorded is None or {k: v for k, v in recorded.items() if k != "evaluated_at"} != result.as_dict():
        batch.repo.put_json(batch.branch, path, {**result.as_dict(), "evaluated_at": datetime.now(UTC).isoformat()})
    verdict = "passed" if result.passed else "FAILED"
    return batch.commit(f"gate:{result.gate}", f"gate {result.gate} {verdict} ({result.value:.4f} "
                        f"{result.comparison} {result.threshold})", {"gate_passed": result.passed})


def evaluate_agreement_gate(batch: Batch) -> GateResult:
    """Observed pairwise agreement of the batch's judgements against the dataset's ``min_agreement``."""
    annotations = batch.read(Stage.ANNOTATIONS)
    value = percent_agreement(annotations)
    threshold = batch.dataset.gates.min_agreement
    per_item = item_agreement(annotations).sort_values().head(10)
    worst = [{"item_id": str(item), "agreement": round(float(score), 4)} for item, score in per_item.items()]
    sample_size = int(annotations.groupby("item_id").size().ge(2).sum()) if len(annotations) else 0
    # A batch with nothing to label (everything quarantined or duplicate) has nothing to disagree on; a batch
    # with judgements but no item judged twice cannot show it is reliable, so it fails.
    passed = bool(value >= threshold) if sample_size else annotations.empty
    result = GateResult("agreement", passed, 0.0 if pd.isna(value) else round(value, 6), threshold, ">=",
                        sample_size, worst)
    record_gate(batch, result)
    return result


def read_gate_results(batch: Batch, ref: str | None = None) -> list[dict[str, Any]]:
    prefix = layout.gate_results_prefix(batch.dataset.name, batch.batch_id)
    ref = ref or batch.branch
    return [batch.repo.get_json(ref, path) for path in batch.repo.list_paths(ref, prefix) if path.endswith(".json")]


# -- publish ------------------------------------------------------------------------------------------------
class PublishRefused(RuntimeError):
    """The batch may not reach main (a gate failed or was never evaluated)."""


@dataclass
class PublishOutcome:
    status: str  # "published" | "already_published" | "awaiting_approval"
    batch_commit: str
    conservation: ConservationReport | None
    main_commit: str | None = None
    version_tag: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def _all_quarantine(batch: Batch) -> pd.DataFrame:
    frames = [batch.repo.get_frame(batch.branch, batch.quarantine_path(stage)) for stage in QUARANTINING_STAGES]
    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True)[QUARANTINE_COLUMNS] if frames else empty_quarantine()


def find_published_version(repo: LakeFSRepository, dataset: str, batch_id: str) -> tuple[str, str] | None:
    """(tag, commit id) of the version that published this batch, if any."""
    for tag in repo.iter_tags(prefix=f"{dataset}/v"):
        if repo.get_commit(tag.commit_id).metadata.get("trainyard.batch_id") == batch_id:
            return tag.id, tag.commit_id
    return None


def next_version(repo: LakeFSRepository, dataset: str) -> int:
    versions = [int(t.id.rsplit("/v", 1)[1]) for t in repo.iter_tags(prefix=f"{dataset}/v")
                if t.id.rsplit("/v", 1)[1].isdigit()]
    return max(versions, default=0) + 1


def build_published(batch: Batch) -> pd.DataFrame:
    records = batch.read(Stage.DEDUP)
    labels = batch.read(Stage.CONSOLIDATED_LABELS).rename(columns={"item_id": "record_id"})
    return records.merge(labels, on="record_id", how="inner", validate="one_to_one")


def run_publish(batch: Batch) -> PublishOutcome:
    """Reconcile, commit the batch with its lineage and gate results, and merge it into main if policy allows."""
    already = find_published_version(batch.repo, batch.dataset.name, batch.batch_id)
    if already is not None:
        tag, commit_id = already
        summary = batch.repo.get_json(commit_id, layout.batch_summary_path(batch.dataset.name, batch.batch_id)) or {}
        return PublishOutcome("already_published", batch.repo.branch_head(batch.branch), None, commit_id, tag, summary)

    gates = read_gate_results(batch)
    failed = [g["gate"] for g in gates if not g["passed"]]
    if not gates or failed:
        raise PublishRefused(f"batch {batch.batch_id}: " + (f"gates failed: {', '.join(failed)}" if failed
                                                            else "no gate results on the branch"))

    raw = batch.read(Stage.RAW)
    quarantine = _all_quarantine(batch)
    raw_quarantine = quarantine[quarantine["stage"] == Stage.RAW]
    duplicates = batch.repo.require_frame(
        batch.branch, layout.stage_dir(batch.dataset.name, Stage.DEDUP, batch.batch_id) + DUPLICATES_FILE)
    published = build_published(batch)
    report = reconcile(pd.concat([raw["record_id"], raw_quarantine["record_id"]], ignore_index=True),
                       published["record_id"], quarantine["record_id"], duplicates["record_id"])
    if not report.balanced:
        raise ConservationError(f"batch {batch.batch_id} does not reconcile: {report.describe()}")

    _write_stage(batch, Stage.PUBLISHED, published)
    batch.repo.put_frame(batch.branch, layout.dedup_index_path(batch.dataset.name, batch.batch_id),
                         index_entries(published))
    summary = {
        "tenant": batch.tenant.name, "dataset": batch.dataset.name, "batch_id": batch.batch_id,
        "conservation": report.as_dict(),
        "quarantine_reasons": _reason_counts(quarantine),
        "label_distribution": {str(k): int(v) for k, v in published["label"].value_counts().sort_index().items()},
        "gates": gates,
    }
    batch.repo.put_json(batch.branch, layout.batch_summary_path(batch.dataset.name, batch.batch_id), summary)
    gate_metadata = {g["gate"]: {"value": g["value"], "threshold": g["threshold"], "passed": g["passed"]}
                     for g in gates}
    batch_commit = batch.commit(Stage.PUBLISHED, "publish candidate", {
        **report.as_dict(), "gates": json.dumps(gate_metadata, sort_keys=True)})
    if batch.dataset.publish.policy != "auto":
        return PublishOutcome("awaiting_approval", batch_commit, report, summary=summary)
    main_commit, tag = merge_batch(batch, {**report.as_dict(), "gates": json.dumps(gate_metadata, sort_keys=True)})
    return PublishOutcome("published", batch_commit, report, main_commit, tag, summary)


def merge_batch(batch: Batch, lineage: dict[str, Any]) -> tuple[str, str]:
    """Merge the batch branch into main and tag the result as the dataset's next version."""
    metadata = {"trainyard.tenant": batch.tenant.name, "trainyard.dataset": batch.dataset.name,
                "trainyard.batch_id": batch.batch_id, "trainyard.dagster_run_id": batch.run_id,
                **{f"trainyard.{k}": str(v) for k, v in lineage.items()}}
    main_commit = batch.repo.merge(batch.branch, layout.MAIN_BRANCH,
                                   f"publish {batch.dataset.name} batch {batch.batch_id}", metadata)
    while True:  # another dataset may take a version number between our read and our create
        tag = layout.version_tag(batch.dataset.name, next_version(batch.repo, batch.dataset.name))
        if batch.repo.create_tag(tag, main_commit):
            return main_commit, tag
