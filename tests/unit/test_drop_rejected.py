"""A batch with nothing to publish never becomes a version: it stops at the stage that emptied it, keeps every
record's reason on its branch, and (through Dagster) fails its run with a ``drop_rejected`` alert."""

from __future__ import annotations

import pytest

from dagster_project import layout
from dagster_project.devservices.sample_data import build_drop
from dagster_project.layout import Stage
from dagster_project.publishing.versions import tagged_versions
from dagster_project.stages.landing import EMPTY_FILE
from dagster_project.stages.rejection import DropRejected, drop_rejected_alert
from dagster_project.tenants import TenantsConfig
from tests.unit.harness import Harness


@pytest.fixture
def target(example_config: TenantsConfig):
    tenant = example_config.tenant("northbank")
    return tenant, tenant.dataset("support_intents")


def test_a_drop_without_manifest_is_rejected_at_raw_with_every_record_kept(pipeline: Harness, target) -> None:
    tenant, dataset = target
    plan = build_drop(tenant, dataset, "no-manifest", 40, seed=9, with_manifest=False, plant_defects=False)
    with pytest.raises(DropRejected) as rejected:
        pipeline.process(tenant, dataset, plan)
    assert rejected.value.why == "none of its 40 records is left after ingestion"
    [(reason, count)] = rejected.value.reasons.items()
    assert count == 40 and "has no manifest.json" in reason

    batch = pipeline.batch(tenant, dataset, "no-manifest")
    quarantine = batch.repo.require_frame(batch.repo.branch_head(batch.branch),  # committed, not only staged
                                          layout.stage_quarantine_path(dataset.name, Stage.RAW, "no-manifest"))
    assert len(quarantine) == 40
    assert batch.repo.get_frame(batch.branch, batch.data_path(Stage.CLEAN)) is None  # nothing ran after raw
    assert tagged_versions(batch.repo, dataset.name) == []

    alert = drop_rejected_alert(batch, rejected.value, "https://playbooks.example", None)
    assert alert.kind == "drop_rejected" and alert.channel == tenant.slack_channel and alert.value == 0
    assert alert.details["quarantine_reasons"] == [{"reason": reason, "records": 40}]
    assert alert.playbook_url == "https://playbooks.example/drop_rejected.md"


def test_a_drop_that_only_repeats_main_is_rejected_at_dedup(pipeline: Harness, target) -> None:
    tenant, dataset = target
    first = pipeline.process(tenant, dataset, build_drop(tenant, dataset, "wk1", 120, seed=5, plant_defects=False))
    assert first.published.status == "published"
    again = build_drop(tenant, dataset, "wk1-resent", 120, seed=5, plant_defects=False)  # the same texts again
    with pytest.raises(DropRejected) as rejected:
        pipeline.process(tenant, dataset, again)
    assert rejected.value.why == "none of its 120 records is left after deduplication"
    assert rejected.value.reasons == {"duplicate of another record": 120}
    assert [v.batch_id for v in tagged_versions(pipeline.repo(tenant.lakefs_repository), dataset.name)] == ["wk1"]


def test_an_empty_drop_is_rejected(pipeline: Harness, target) -> None:
    tenant, dataset = target
    plan = build_drop(tenant, dataset, "empty", 0, plant_defects=False, formats=("jsonl",))
    plan.files = {"records.jsonl": b""}
    with pytest.raises(DropRejected) as rejected:
        pipeline.process(tenant, dataset, plan)
    assert rejected.value.reasons == {EMPTY_FILE: 1}  # the empty file itself is accounted for
