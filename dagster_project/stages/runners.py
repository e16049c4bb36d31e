"""What each stage does to a batch: read its input from the batch branch, call the stage's plain functions, write
the output and its quarantine back, commit with the counts.

The frame-level work lives next door (:mod:`~dagster_project.stages.ingest`, ``clean``, ``pii``, ``dedup``,
``labeling``) and is tested on frames; these functions only move data between the branch and those functions, so
Dagster assets and the batch runner call them with a :class:`StageInputs` and stay thin. Re-running a stage rewrites
the same paths and, with nothing changed, makes no new commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from dagster_project import layout
from dagster_project.layout import Stage
from dagster_project.quality import majority_vote
from dagster_project.records import empty_quarantine, quarantine_rows
from dagster_project.stages.batch import (
    DUPLICATES_FILE,
    GOLD_FILE,
    MANIFEST_COPY,
    PII_FINDINGS_FILE,
    Batch,
    PartWriter,
    StageReport,
    reason_counts,
    write_stage,
)
from dagster_project.stages.clean import clean_part
from dagster_project.stages.dedup import (
    DEDUP_INDEX_COLUMNS,
    SIGNATURES_FILE,
    DedupOptions,
    dedup_filter_part,
    dedup_keys_part,
    exact_duplicates,
    near_duplicates,
)
from dagster_project.stages.gold_set import read_gold_set
from dagster_project.stages.ingest import empty_raw_frame, stream_drop
from dagster_project.stages.labeling import GOLD_ITEM_PREFIX, build_tasks, gold_sample_size, select_gold
from dagster_project.stages.landing import find_drop
from dagster_project.stages.neardup import NearDupParams, SignatureIndex
from dagster_project.stages.parts import (
    PART_ROWS,
    PartOutput,
    PartTask,
    frame_bytes,
    map_in_order,
    parquet_rows,
    part_index,
    read_frame,
    release_memory,
    worker_count,
)
from dagster_project.stages.pii import PiiOptions, empty_findings, pii_part
from dagster_project.stages.published_reads import PartTexts, published_signatures, published_texts
from dagster_project.stages.rejection import reject_if_empty
from dagster_project.vendors.base import ANNOTATION_COLUMNS, TASK_COLUMNS, VendorClient


@dataclass(frozen=True)
class StageInputs:
    """What stages need from outside the batch branch: the landing zone, the lakeFS storage namespace, the vendors.

    A stage that needs none of it takes none (``StageInputs()``); Dagster assets build it from their resources.
    """

    s3: Any = None
    """A boto3 S3 client for the landing zone."""
    landing_bucket: str = ""
    storage_namespace: str = ""
    """Where lakeFS keeps the tenant repository's data, used when the repository is created."""
    vendors: Mapping[str, VendorClient] = field(default_factory=dict)
    gold: pd.DataFrame | None = None
    """The dataset's gold set; None reads it from the landing zone (``<prefix>/<dataset>/gold/``)."""
    workers: int = 0
    """Processes for the streamed stages (raw, clean, pii, dedup); 0 is one per core."""
    part_rows: int = PART_ROWS
    """Lines of a drop per raw part (and so rows per part of every streamed stage after it)."""

    def gold_set(self, batch: Batch) -> pd.DataFrame:
        if self.gold is not None:
            return self.gold
        schema = batch.dataset.record_schema
        return read_gold_set(self.s3, self.landing_bucket, batch.tenant.landing_prefix, batch.dataset.name,
                             schema.text_field, batch.dataset.labels)


def run_raw(batch: Batch, inputs: StageInputs, now: datetime | None = None) -> StageReport:
    """Create the batch branch from main and ingest the drop onto it, part by part."""
    batch.repo.ensure_exists(inputs.storage_namespace)
    batch.repo.ensure_branch(batch.branch)
    s3 = inputs.s3
    drop = find_drop(s3, inputs.landing_bucket, batch.tenant.landing_prefix, batch.dataset.name, batch.batch_id)
    ingested_at = now or _first_ingestion_time(batch) or datetime.now(UTC)
    with PartWriter(batch, Stage.RAW) as parts:
        result = stream_drop(s3, drop, batch.batch_id, ingested_at, parts.put, parts.discard,
                             worker_count(inputs.workers), inputs.part_rows)
        if not parts.written:  # every record quarantined: an empty part still says what the columns are
            parts.put(0, frame_bytes(empty_raw_frame()))
    batch.repo.put_frame(batch.branch, batch.quarantine_path(Stage.RAW), result.quarantine)
    manifest = result.manifest.model_dump(mode="json") if result.manifest else {"problem": result.manifest_problem}
    batch.repo.put_json(batch.branch, batch.stage_file(Stage.RAW, MANIFEST_COPY),
                        {"drop": drop.uri, "files": result.files, "manifest": manifest})
    counts = {"records_in": result.records_in, "parsed": result.records, "quarantined": len(result.quarantine),
              "files": len(result.files)}
    commit_id = batch.commit(Stage.RAW, f"ingest {len(result.files)} files from {drop.uri}", counts)
    # The quarantine is committed first: a rejected drop keeps every record's reason on its branch.
    reject_if_empty(batch, result.records, "ingestion")
    return StageReport(Stage.RAW, result.records, commit_id, counts,
                       {"drop": drop.uri, "quarantine_reasons": reason_counts(result.quarantine),
                        "manifest_problem": result.manifest_problem},
                       [result.manifest_problem] if result.manifest_problem else [])


def _first_ingestion_time(batch: Batch) -> datetime | None:
    """A re-run keeps the batch's original ``ingested_at``, so re-ingesting the same drop changes nothing."""
    for path in batch.part_paths(Stage.RAW):
        previous = read_frame(batch.get_part(path), ["ingested_at"])
        if len(previous):
            return previous["ingested_at"].iloc[0].to_pydatetime()
    return None


@dataclass
class _Streamed:
    """What a streamed stage gathered across parts (the parts themselves are already on the branch)."""

    rows: int = 0
    quarantine: list[pd.DataFrame] = field(default_factory=list)
    side: list[pd.DataFrame] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def quarantined(self) -> pd.DataFrame:
        frames = [q for q in self.quarantine if len(q)]
        return pd.concat(frames, ignore_index=True) if frames else empty_quarantine()


def _stream(batch: Batch, source: Stage, target: Stage, work: Callable[[PartTask], PartOutput], options: Any,
            workers: int) -> _Streamed:
    """Run ``work`` over every part of ``source``, writing the ``target`` part of the same number."""
    gathered = _Streamed()
    paths = batch.part_paths(source)
    tasks = _part_tasks(batch, paths, [options] * len(paths))
    with PartWriter(batch, target) as parts:
        for output in map_in_order(work, tasks, worker_count(workers)):
            parts.put(output.index, output.data)
            gathered.rows += parquet_rows(output.data)
            gathered.quarantine += [output.quarantine] if output.quarantine is not None else []
            gathered.side += [output.side] if output.side is not None else []
            for name, value in output.counts.items():
                gathered.counts[name] = gathered.counts.get(name, 0) + value
    return gathered


def run_clean(batch: Batch, inputs: StageInputs | None = None) -> StageReport:
    workers = inputs.workers if inputs else 0
    result = _stream(batch, Stage.RAW, Stage.CLEAN, clean_part, batch.dataset.record_schema, workers)
    quarantine = result.quarantined()
    batch.repo.put_frame(batch.branch, batch.quarantine_path(Stage.CLEAN), quarantine)
    counts = {"clean": result.rows, "quarantined": len(quarantine),
              "normalised_values": result.counts.get("normalised_values", 0)}
    commit_id = batch.commit(Stage.CLEAN, "normalise and validate against the record schema", counts)
    reject_if_empty(batch, result.rows, "cleaning")
    return StageReport(Stage.CLEAN, result.rows, commit_id, counts,
                       {"quarantine_reasons": reason_counts(quarantine)})


def published_hash_index(batch: Batch) -> pd.DataFrame:
    """Text hashes of every batch already on main, except this batch's own (a re-run must not see itself)."""
    own = layout.dedup_index_path(batch.dataset.name, batch.batch_id)
    paths = [p for p in batch.repo.list_paths(layout.MAIN_BRANCH, layout.dedup_index_prefix(batch.dataset.name))
             if p.endswith(".parquet") and p != own]
    frames = [batch.repo.require_frame(layout.MAIN_BRANCH, p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=DEDUP_INDEX_COLUMNS)


def run_pii(batch: Batch, inputs: StageInputs | None = None) -> StageReport:
    """Redact or drop PII per the dataset's policy, before any text can reach a labeling vendor."""
    text_field = batch.dataset.record_schema.text_field
    policy = batch.dataset.pii_policy
    result = _stream(batch, Stage.CLEAN, Stage.PII, pii_part, PiiOptions(text_field, policy),
                     inputs.workers if inputs else 0)
    quarantine = result.quarantined()
    findings = pd.concat(result.side, ignore_index=True) if result.side else empty_findings()
    batch.repo.put_frame(batch.branch, batch.quarantine_path(Stage.PII), quarantine)
    batch.repo.put_frame(batch.branch, batch.stage_file(Stage.PII, PII_FINDINGS_FILE), findings)
    by_kind = {f"pii_{kind}": int(n) for kind, n in findings["kind"].value_counts().sort_index().items()}
    counts = {"records": result.rows, "records_with_pii": int(findings["record_id"].nunique()),
              "pii_findings": len(findings), "quarantined": len(quarantine), **by_kind}
    commit_id = batch.commit(Stage.PII, f"PII policy {policy}: {len(findings)} findings", counts)
    reject_if_empty(batch, result.rows, "the PII policy")
    return StageReport(Stage.PII, result.rows, commit_id, counts, {"policy": policy})


def run_dedup(batch: Batch, inputs: StageInputs | None = None) -> StageReport:
    """Two passes over the parts: digests and band keys of every text (the decisions need the whole batch), then
    each part without its exact and near-duplicates."""
    workers = inputs.workers if inputs else 0
    text_field = batch.dataset.record_schema.text_field
    threshold = batch.dataset.near_duplicate_threshold
    params = NearDupParams.for_threshold(threshold) if threshold is not None else None
    keys, bands = _stream_side(batch, Stage.PII, dedup_keys_part, DedupOptions(text_field, params), workers)
    known = published_hash_index(batch)
    duplicates = exact_duplicates(keys, known)
    drop = keys["record_id"].isin(duplicates["record_id"]).to_numpy(copy=True)
    paths, bounds = keys.attrs["part_paths"], keys.attrs["part_bounds"]
    against = SignatureIndex.empty(params) if params else None
    if params is not None:
        rows = np.flatnonzero(~drop)
        bands = _compact(bands, rows)  # ~180 bytes a record: never two copies
        against = published_signatures(batch, params)
        near = near_duplicates(keys, rows, PartTexts(batch, paths, bounds, rows, text_field), bands, params,
                               against, lambda ids: published_texts(batch, ids, text_field))
        duplicates = pd.concat([duplicates, near], ignore_index=True) if len(near) else duplicates
        removed = keys["record_id"].isin(near["record_id"]).to_numpy()
        survivors = ~removed[rows]
        drop |= removed
        kept = rows[survivors]
        index = SignatureIndex.build(keys["record_id"].array[kept], PartTexts(batch, paths, bounds, kept, text_field),
                                     params, keys=_compact(bands, np.flatnonzero(survivors)))
        del bands
        release_memory()
        batch.repo.put_bytes(batch.branch, batch.stage_file(Stage.DEDUP, SIGNATURES_FILE), index.to_bytes())
    records, known_hashes, known_signatures = len(keys), len(known), len(against) if against else 0
    hashes = keys["text_hash"]  # 16 bytes a record (Arrow); each part's become Python bytes only for its task
    filters = _part_tasks(batch, paths, ((hashes.iloc[a:b].tolist(), ~drop[a:b]) for a, b in bounds))
    del keys, known, against  # decided: the second pass needs only each part's digests and mask
    release_memory()
    unique = 0
    with PartWriter(batch, Stage.DEDUP) as parts:
        for output in map_in_order(dedup_filter_part, filters, worker_count(workers)):
            parts.put(output.index, output.data)
            unique += parquet_rows(output.data)
    batch.repo.put_frame(batch.branch, batch.stage_file(Stage.DEDUP, DUPLICATES_FILE), duplicates)
    in_batch = int((duplicates["scope"] == "batch").sum())
    counts = {"unique": unique, "duplicates": len(duplicates),
              "duplicates_in_batch": in_batch, "duplicates_of_main": len(duplicates) - in_batch,
              "near_duplicates": int((duplicates["similarity"] < 1.0).sum()),
              "duplicate_rate": round(len(duplicates) / records, 6) if records else 0.0,
              "known_hashes_on_main": known_hashes, "known_signatures_on_main": known_signatures}
    what = "exact duplicates" if params is None else f"exact and near-duplicates (Jaccard >= {params.threshold})"
    commit_id = batch.commit(Stage.DEDUP, f"remove {what} (batch and main)", counts)
    reject_if_empty(batch, unique, "deduplication")
    return StageReport(Stage.DEDUP, unique, commit_id, counts)


def _compact(rows_of: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``rows_of[keep]`` for ascending ``keep``, written over the front of ``rows_of`` a chunk at a time (each
    chunk's sources are at or after its destination, so nothing is overwritten before it is read): the band keys
    of a million records are 180 MB, and a copy would hold them twice."""
    for start in range(0, len(keep), 1 << 16):
        chunk = keep[start:start + (1 << 16)]
        rows_of[start:start + len(chunk)] = rows_of[chunk]
    return rows_of[:len(keep)]


def _stream_side(batch: Batch, source: Stage, work: Callable[[PartTask], PartOutput], options: Any,
                 workers: int) -> tuple[pd.DataFrame, np.ndarray | None]:
    """The per-part side tables (and arrays) of ``work`` over every part of ``source``, concatenated;
    ``attrs["part_bounds"]`` holds each part's row range."""
    paths = batch.part_paths(source)
    sides: list[pd.DataFrame] = []
    bounds: list[tuple[int, int]] = []
    joined: np.ndarray | None = None  # filled in place: a list of per-part arrays concatenated would be two copies
    for output in map_in_order(work, _part_tasks(batch, paths, [options] * len(paths)), worker_count(workers)):
        at = bounds[-1][1] if bounds else 0
        sides.append(output.side)
        bounds.append((at, at + len(output.side)))
        if output.arrays is not None:
            if joined is None:  # room for every part at the configured size; pages never written cost no memory
                joined = np.empty((len(paths) * max(PART_ROWS, len(output.arrays)), *output.arrays.shape[1:]),
                                  dtype=output.arrays.dtype)
            if at + len(output.arrays) > len(joined):
                joined = np.concatenate([joined[:at], np.empty_like(joined)])
            joined[at:at + len(output.arrays)] = output.arrays
    frame = pd.concat(sides, ignore_index=True)
    frame.attrs["part_bounds"] = bounds
    frame.attrs["part_paths"] = paths
    sides.clear()
    release_memory()
    return frame, (joined[:len(frame)] if joined is not None else None)


def _part_tasks(batch: Batch, paths: list[str], options: Iterable[Any]) -> Iterator[PartTask]:
    """Each part of ``paths``, read when the worker pool is ready for it, with its options."""
    for path, part_options in zip(paths, options, strict=True):
        yield PartTask(part_index(path) or 0, batch.get_part(path), part_options)


def run_labeling_tasks(batch: Batch, inputs: StageInputs) -> StageReport:
    """Build the batch's tasks, mixing in a deterministic sample of the dataset's gold set."""
    records = batch.read(Stage.DEDUP)
    gold_set = inputs.gold_set(batch)
    wanted = gold_sample_size(len(records), batch.dataset.gold_rate)
    # A gold set smaller than the batch needs gives what it has; the gold_set gate then stops the batch, naming both.
    available = min(wanted, len(gold_set))
    gold = select_gold(gold_set, available, batch.batch_id) if available else gold_set.iloc[0:0]
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


def run_annotations(batch: Batch, inputs: StageInputs) -> StageReport:
    """Submit each vendor's share idempotently and collect its judgements."""
    tasks = batch.read(Stage.LABELING_TASKS)
    vendors = inputs.vendors
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


def run_consolidation(batch: Batch, inputs: StageInputs | None = None) -> StageReport:
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


