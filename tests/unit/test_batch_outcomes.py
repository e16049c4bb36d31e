"""Where each batch ended, as the Dagster UI shows it: every path that ends a batch -- published, waiting for its
data owners, approved and merged, blocked by a gate, rejected, without gold items -- leaves the batch's
``published`` partition saying so, and a stopped batch's later checks say they were never evaluated (not that
they failed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from assets.publishing import MERGE_SENSOR, OUTCOME_SENSOR
from dagster_project import layout
from dagster_project.alerts import AlertOutbox
from dagster_project.devservices.sample_data import build_drop, upload_drop, upload_gold_set
from dagster_project.gates import GATES
from dagster_project.layout import Stage
from dagster_project.publishing.approvals import ApprovalStore, Verdict, rejected_batches
from dagster_project.publishing.decisions import decide
from dagster_project.publishing.ledger import BatchState
from dagster_project.stages.batch import Batch
from dagster_project.tenants import load_tenants
from tests.unit.conftest import BUCKET, sense_and_run


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, name: str, cursor: str | None = None):
    with dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=cursor) as context:
        return defs.resolve_sensor_def(name)(context)


def published_events(result) -> list:
    return [e for e in result.asset_events if e.asset_key.path[-1] == "published"]


def test_a_blocked_batch_names_its_gate_on_published_and_its_later_checks_were_not_evaluated(location) -> None:
    settings, defs, s3, lakefs, instance = location
    tenant = load_tenants(settings.tenants_file).tenant("stahlwerk")
    dataset = tenant.dataset("defect_reports")
    upload_drop(s3, BUCKET, build_drop(tenant, dataset, "leaky", 120, seed=8, plant_defects=False, pii_share=0.5))
    upload_gold_set(s3, BUCKET, tenant, dataset)
    request, result = sense_and_run(defs, instance, "stahlwerk", "defect_reports")
    assert not result.success
    [failed] = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed.description.startswith("pii_residual: ") and "at most 0 allowed" in failed.description
    assert failed.metadata["playbook"].value.endswith("gate_failed.md")

    first = tick(defs, instance, OUTCOME_SENSOR)
    [observation] = published_events(first)
    assert isinstance(observation, dg.AssetObservation)  # the partition stays failed: nothing was published
    assert observation.partition == request.partition_key
    assert observation.metadata["status"].value == "blocked"
    assert observation.metadata["blocked_by"].value == "pii_residual"
    assert observation.metadata["stage"].value == "labeling_tasks"
    not_evaluated = [e for e in first.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
    later = {g.name for g in GATES if g.stage in (Stage.ANNOTATIONS, Stage.CONSOLIDATED_LABELS)}
    assert {e.check_name for e in not_evaluated} == later
    assert all(e.severity == dg.AssetCheckSeverity.WARN and e.partition == request.partition_key
               and "stopped earlier by gate pii_residual on labeling_tasks" in e.description for e in not_evaluated)

    again = tick(defs, instance, OUTCOME_SENSOR, cursor=first.cursor)  # reported once, then marked
    assert again.asset_events == [] and ApprovalStore(settings.resolved_database_url).ledger.unreported() == []

    # The data owner closes it out: recorded like any decision, its branch under the same retention.
    store = ApprovalStore(settings.resolved_database_url)
    batch = Batch(tenant, dataset, request.partition_key, lakefs.repository(tenant.lakefs_repository))
    state = decide(batch, store, tenant.data_owners[0], Verdict.REJECT, "PII in a PII-free dataset")
    assert state.rejected
    outcome = store.ledger.get(tenant.name, dataset.name, request.partition_key)
    assert outcome.state is BatchState.REJECTED and "was blocked" in outcome.reason
    [rejected_observation] = published_events(tick(defs, instance, OUTCOME_SENSOR, cursor=again.cursor))
    assert isinstance(rejected_observation, dg.AssetObservation)
    assert rejected_observation.metadata["status"].value == "rejected"
    assert [r.batch_id for r in rejected_batches(store, datetime.now(UTC) + timedelta(days=1))] == [
        request.partition_key]


def test_an_approved_merge_updates_the_published_partition(location) -> None:
    settings, defs, s3, lakefs, instance = location
    tenant = load_tenants(settings.tenants_file).tenant("northbank")
    dataset = tenant.dataset("complaints")
    assert dataset.publish.policy == "owner"
    upload_drop(s3, BUCKET, build_drop(tenant, dataset, "wk50", 150, seed=5))
    upload_gold_set(s3, BUCKET, tenant, dataset)
    request, result = sense_and_run(defs, instance, "northbank", "complaints")
    assert result.success
    [candidate] = [
        e.event_specific_data.materialization for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
        and e.event_specific_data.materialization.asset_key.path[-1] == "published"]
    assert candidate.metadata["status"].value == "awaiting_approval"
    assert tick(defs, instance, OUTCOME_SENSOR).asset_events == []  # its own run reported it

    store = ApprovalStore(settings.resolved_database_url)
    batch = Batch(tenant, dataset, request.partition_key, lakefs.repository(tenant.lakefs_repository))
    commit = candidate.metadata["commit_id"].value
    decide(batch, store, tenant.data_owners[0], Verdict.APPROVE, commit=commit)
    tick(defs, instance, MERGE_SENSOR)
    [merged] = published_events(tick(defs, instance, OUTCOME_SENSOR))
    assert isinstance(merged, dg.AssetMaterialization) and merged.partition == request.partition_key
    assert merged.metadata["status"].value == "published"
    assert merged.metadata["version_tag"].value == "complaints/v1"
    assert merged.metadata["main_commit"].value == lakefs.repository(tenant.lakefs_repository).branch_head(
        layout.MAIN_BRANCH)
    assert tenant.data_owners[0] in merged.metadata["decided_by"].value


def test_a_batch_without_gold_items_stops_before_any_vendor_submission(location) -> None:
    settings, defs, s3, lakefs, instance = location
    tenant = load_tenants(settings.tenants_file).tenant("northbank")
    dataset = tenant.dataset("support_intents")
    upload_drop(s3, BUCKET, build_drop(tenant, dataset, "nogold", 120, seed=6))  # no gold set uploaded
    request, result = sense_and_run(defs, instance, "northbank", "support_intents")
    assert not result.success
    [failed] = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed.check_name == "gold_set" and "gold items" in failed.description
    materialized = {e.event_specific_data.materialization.asset_key.path[-1] for e in result.all_events
                    if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION}
    assert "annotations" not in materialized and "labeling_tasks" in materialized  # nothing went to a vendor
    assert not (settings.home / "vendors").exists() or not any((settings.home / "vendors").rglob("*"))
    [message] = AlertOutbox(settings.resolved_database_url).messages()
    assert message.alert.metric == "gold_set" and "gold/" in str(message.alert.details)
    [observation] = published_events(tick(defs, instance, OUTCOME_SENSOR))
    assert observation.metadata["blocked_by"].value == "gold_set"
