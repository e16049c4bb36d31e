"""A batch through every stage against real services: moto S3 (a process) and the lakeFS emulator over lakefs-sdk.

The drop generator says exactly what it planted (unparsable lines, schema violations, duplicates), so these
tests assert exact counts and record conservation, not just that something happened.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from dagster_project import layout
from dagster_project.batch_runner import BatchRun, run_batch
from dagster_project.clock import utcnow
from dagster_project.devservices.sample_data import build_drop, synthetic_records, upload_drop, upload_gold_set
from dagster_project.gates import GATES
from dagster_project.lakefs import LakeFSRepository, api_client
from dagster_project.layout import Stage
from dagster_project.publishing.publish import PublishRefused, run_publish
from dagster_project.publishing.versions import tagged_versions
from dagster_project.settings import Settings
from dagster_project.stages.batch import DUPLICATES_FILE, Batch
from dagster_project.stages.gold_set import read_gold_set
from dagster_project.stages.landing import find_drop
from dagster_project.stages.rejection import DropRejected
from dagster_project.stages.runners import StageInputs
from dagster_project.tenants import DatasetConfig, TenantConfig, TenantsConfig
from dagster_project.vendors import build_vendor


def make_batch(settings: Settings, tenant: TenantConfig, dataset: DatasetConfig, batch_id: str) -> Batch:
    client = api_client(settings.lakefs_api_url, settings.lakefs_access_key_id,
                        settings.lakefs_secret_access_key.get_secret_value())
    return Batch(tenant, dataset, batch_id, LakeFSRepository(client, tenant.lakefs_repository), "test-run")


def process(batch: Batch, s3, settings: Settings, publish: bool = True) -> BatchRun:
    """Stages and gates in Dagster's order, with the dataset's gold set uploaded to landing first."""
    dataset, tenant = batch.dataset, batch.tenant
    upload_gold_set(s3, settings.landing_bucket, tenant, dataset)
    gold = read_gold_set(s3, settings.landing_bucket, tenant.landing_prefix, dataset.name,
                         dataset.record_schema.text_field, dataset.labels)
    vendors = {v.name: build_vendor(v, settings.home / "vendors") for v in dataset.vendors}
    return run_batch(batch, StageInputs(s3=s3, landing_bucket=settings.landing_bucket,
                                        storage_namespace=f"local://test/{batch.repo.name}",
                                        vendors=vendors, gold=gold), publish)


def test_batch_reaches_main_with_exact_counts_and_lineage(settings: Settings, s3, tenants: TenantsConfig) -> None:
    tenant = tenants.tenant("northbank")
    dataset = tenant.dataset("support_intents")
    plan = build_drop(tenant, dataset, "2026-11-22_0900", 300, seed=5)
    upload_drop(s3, settings.landing_bucket, plan)
    batch = make_batch(settings, tenant, dataset, "2026-11-22_0900")

    run = process(batch, s3, settings)
    reports, outcome = run.reports, run.published

    expected_published = plan.records - plan.unparsable - plan.invalid - plan.duplicates
    assert reports[Stage.RAW].counts["records_in"] == plan.records
    assert reports[Stage.RAW].counts["quarantined"] == plan.unparsable
    assert reports[Stage.CLEAN].counts["quarantined"] == plan.invalid
    assert reports[Stage.DEDUP].counts["duplicates"] == plan.duplicates
    gold_items = math.ceil(expected_published * dataset.gold_rate)
    assert reports[Stage.LABELING_TASKS].counts["gold_items"] == gold_items
    assert reports[Stage.LABELING_TASKS].rows == (expected_published + gold_items) * dataset.overlap_k
    assert reports[Stage.PII].counts["records_with_pii"] > 0 and reports[Stage.PII].counts["quarantined"] == 0
    failed = [o for o in run.outcomes.values() if not o.passed]
    assert run.blocked_by == [] and failed == [], failed
    agreement = run.outcomes["agreement"]
    assert agreement.sample_size == expected_published and agreement.value >= 0.85

    assert outcome is not None and outcome.status == "published"
    assert outcome.version_tag == "support_intents/v1"
    assert outcome.conservation is not None and outcome.conservation.balanced
    assert outcome.conservation.as_dict() == {
        "records_in": plan.records, "published": expected_published,
        "quarantined": plan.unparsable + plan.invalid, "duplicates": plan.duplicates, "balanced": True}

    repo = batch.repo
    published = repo.require_frame("main", layout.stage_data_path(dataset.name, Stage.PUBLISHED, batch.batch_id))
    assert len(published) == expected_published
    assert set(published["label"]) <= set(dataset.labels)
    assert {"record_id", "source_uri", "source_line", "license", "consent_basis", "confidence"} <= set(published)
    assert published["license"].eq(plan.manifest["license"]).all()

    merge_commit = repo.get_commit(outcome.main_commit)
    assert merge_commit.metadata["trainyard.batch_id"] == batch.batch_id
    recorded_gates = json.loads(merge_commit.metadata["trainyard.gates"])
    assert set(recorded_gates) == {g.name for g in GATES}
    assert all(g["passed"] for g in recorded_gates.values())
    # PII never reaches vendors or main: the published texts are redacted.
    assert published["text"].str.contains("@example").sum() == 0
    assert published["text"].str.contains(r"\[EMAIL\]").sum() > 0
    assert [t.commit_id for t in repo.iter_tags(prefix="support_intents/v")] == [outcome.main_commit]

    # Quarantine sits next to the batch data, naming file, line and reason.
    raw_quarantine = repo.require_frame("main", layout.stage_quarantine_path(dataset.name, Stage.RAW, batch.batch_id))
    jsonl_uri = f"s3://{settings.landing_bucket}/{plan.drop_prefix}support_intents-part-jsonl.jsonl"
    jsonl_rows = raw_quarantine[raw_quarantine["source_uri"] == jsonl_uri].sort_values("source_line")
    last_good_line = len(plan.files["support_intents-part-jsonl.jsonl"].splitlines()) - 4
    assert jsonl_rows["source_line"].tolist() == [last_good_line + 1, last_good_line + 2, last_good_line + 3]
    assert jsonl_rows["reason"].str.contains("UTF-8").sum() == 1


def test_second_batch_is_deduplicated_against_main(settings: Settings, s3, tenants: TenantsConfig) -> None:
    tenant = tenants.tenant("stahlwerk")
    dataset = tenant.dataset("defect_reports")
    first = build_drop(tenant, dataset, "week-1", 120, seed=1, plant_defects=False)
    upload_drop(s3, settings.landing_bucket, first)
    batch_one = make_batch(settings, tenant, dataset, "week-1")
    assert process(batch_one, s3, settings).published.version_tag == "defect_reports/v1"

    # Week 2 resends 7 of week 1's texts (in upper case) next to 50 new ones.
    resent, _ = synthetic_records(dataset, 7, seed=1)
    fresh, _ = synthetic_records(dataset, 50, seed=2, start=1000)
    for record in resent:
        record["text"] = record["text"].upper()
        record["report_id"] += "-resent"
    second = build_drop(tenant, dataset, "week-2", 0, plant_defects=False, formats=("jsonl",))
    second.files = {"week2.jsonl": "".join(json.dumps(r) + "\n" for r in resent + fresh).encode()}
    upload_drop(s3, settings.landing_bucket, second)
    batch_two = make_batch(settings, tenant, dataset, "week-2")
    run = process(batch_two, s3, settings)
    reports, outcome = run.reports, run.published
    assert run.outcomes["drift"].passed and run.outcomes["drift"].value < 0.2

    assert reports[Stage.DEDUP].counts["duplicates_of_main"] == 7
    assert reports[Stage.DEDUP].counts["duplicates_in_batch"] == 0
    assert outcome.version_tag == "defect_reports/v2"
    duplicates = batch_two.repo.require_frame(
        "main", layout.stage_dir(dataset.name, Stage.DEDUP, "week-2") + DUPLICATES_FILE)
    week_one = batch_two.repo.require_frame("main", layout.stage_data_path(dataset.name, Stage.PUBLISHED, "week-1"))
    assert set(duplicates["duplicate_of"]) <= set(week_one["record_id"])
    paths = batch_two.repo.list_paths("main", layout.published_prefix(dataset.name))
    assert sorted(paths) == [layout.stage_data_path(dataset.name, Stage.PUBLISHED, b) for b in ("week-1", "week-2")]


def test_drop_without_manifest_is_quarantined_whole_after_grace(settings: Settings, s3,
                                                                 tenants: TenantsConfig) -> None:
    tenant = tenants.tenant("northbank")
    dataset = tenant.dataset("support_intents")
    plan = build_drop(tenant, dataset, "no-manifest", 40, seed=9, with_manifest=False, plant_defects=False)
    upload_drop(s3, settings.landing_bucket, plan)
    drop = find_drop(s3, settings.landing_bucket, tenant.landing_prefix, dataset.name, "no-manifest")
    assert not drop.is_ready(utcnow(), timedelta(minutes=60))  # still waiting for its manifest
    assert drop.is_ready(utcnow() + timedelta(minutes=61), timedelta(minutes=60))

    batch = make_batch(settings, tenant, dataset, "no-manifest")
    with pytest.raises(DropRejected) as rejected:  # never an empty version: the batch stops at raw
        process(batch, s3, settings)
    assert rejected.value.records_in == 40 and rejected.value.why == "none of its 40 records is left after ingestion"
    assert len(batch.repo.log("main")) == 1 and tagged_versions(batch.repo, dataset.name) == []  # main as created
    # Every record keeps its reason, committed on the batch branch.
    quarantine = batch.repo.require_frame(batch.repo.branch_head(batch.branch),
                                          layout.stage_quarantine_path(dataset.name, Stage.RAW, "no-manifest"))
    assert len(quarantine) == 40 and quarantine["reason"].str.contains("has no manifest.json").all()
    assert quarantine["source_line"].notna().all()


def test_failed_gate_blocks_publish_and_main_is_unchanged(settings: Settings, s3, tenants: TenantsConfig) -> None:
    tenant = tenants.tenant("stahlwerk")
    dataset = tenant.dataset("defect_reports")
    sloppy = dataset.model_copy(update={"vendors": [dataset.vendors[0].model_copy(update={"accuracy": 0.4})]})
    upload_drop(s3, settings.landing_bucket, build_drop(tenant, sloppy, "sloppy", 80, seed=4, plant_defects=False))
    batch = make_batch(settings, tenant, sloppy, "sloppy")

    run = process(batch, s3, settings, publish=False)
    main_before = batch.repo.branch_head("main")
    with pytest.raises(PublishRefused, match="gates failed: gold_accuracy"):
        run_publish(batch)

    assert run.blocked_by == ["gold_accuracy"]
    gold = run.outcomes["gold_accuracy"]
    assert not gold.passed and gold.value < 0.95 and gold.worst[0]["annotator_id"] == "__overall__"
    assert Stage.CONSOLIDATED_LABELS not in run.reports  # nothing downstream of the failed gate ran
    assert batch.repo.branch_head("main") == main_before
    assert list(batch.repo.iter_tags(prefix="defect_reports/")) == []
    recorded = batch.repo.get_json(batch.branch, layout.gate_result_path(dataset.name, "sloppy", "gold_accuracy"))
    assert recorded["passed"] is False and recorded["threshold"] == 0.95


def test_rerunning_a_batch_changes_nothing(settings: Settings, s3, tenants: TenantsConfig) -> None:
    tenant = tenants.tenant("northbank")
    dataset = tenant.dataset("support_intents")
    upload_drop(s3, settings.landing_bucket, build_drop(tenant, dataset, "rerun", 200, seed=3))
    batch = make_batch(settings, tenant, dataset, "rerun")
    first = process(batch, s3, settings).published
    branch_head = batch.repo.branch_head(batch.branch)
    main_head = batch.repo.branch_head("main")

    run = process(batch, s3, settings)
    reports, again = run.reports, run.published

    assert {r.commit_id for r in reports.values()} == {branch_head}
    assert again.status == "already_published" and again.version_tag == first.version_tag
    assert batch.repo.branch_head("main") == main_head
    assert reports[Stage.DEDUP].counts["duplicates_of_main"] == 0


def test_published_rows_keep_the_client_fields(settings: Settings, s3, tenants: TenantsConfig,
                                               tmp_path: Path) -> None:
    tenant = tenants.tenant("stahlwerk")
    dataset = tenant.dataset("defect_reports")
    plan = build_drop(tenant, dataset, "fields", 30, seed=12, plant_defects=False, formats=("parquet",))
    upload_drop(s3, settings.landing_bucket, plan)
    batch = make_batch(settings, tenant, dataset, "fields")
    assert process(batch, s3, settings).published is not None
    published = batch.repo.require_frame("main", layout.stage_data_path(dataset.name, Stage.PUBLISHED, "fields"))
    source = pd.read_parquet(__import__("io").BytesIO(plan.files["defect_reports-part-parquet.parquet"]))
    merged = published.merge(source, on="report_id", suffixes=("", "_source"))
    assert len(merged) == 30
    assert (merged["severity"].astype(int) == merged["severity_source"]).all()
    assert (merged["text"] == merged["text_source"]).all()


def test_a_run_that_died_between_merge_and_tag_is_tagged_not_merged_twice(settings: Settings, s3,
                                                                           tenants: TenantsConfig,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = tenants.tenant("stahlwerk")
    dataset = tenant.dataset("defect_reports")
    upload_drop(s3, settings.landing_bucket, build_drop(tenant, dataset, "crash", 120, seed=13, plant_defects=False))
    batch = make_batch(settings, tenant, dataset, "crash")
    process(batch, s3, settings, publish=False)

    def crash(*_: object) -> bool:
        raise ConnectionError("worker killed after the merge")

    monkeypatch.setattr(batch.repo, "create_tag", crash)
    with pytest.raises(ConnectionError):
        run_publish(batch)
    monkeypatch.undo()

    outcome = run_publish(batch)
    assert outcome.status == "published" and outcome.version_tag == "defect_reports/v1"
    merges = [c for c in batch.repo.log("main") if len(c.parents) == 2]
    assert [c.id for c in merges] == [outcome.main_commit]  # one merge, now tagged
