"""Where each batch ended, as the Dagster UI shows it: every path that ends a batch -- published, waiting for its
data owners, approved and merged, blocked by a gate, rejected, without gold items -- leaves the batch's
``published`` partition saying so, and a stopped batch's later checks say they were never evaluated (not that
they failed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from assets.alert_sensors import RUN_FAILURE_ALERT_SENSOR
from assets.publishing import MERGE_SENSOR, OUTCOME_SENSOR
from dagster_project import layout
from dagster_project.alerts import AlertKind, AlertOutbox, render
from dagster_project.gates import GATES
from dagster_project.lakefs.metadata import CommitMetadata
from dagster_project.layout import Stage
from dagster_project.publishing.approvals import ApprovalStore, Verdict, rejected_batches
from dagster_project.publishing.decisions import decide
from dagster_project.publishing.gatekeeper import gatekeeper_decider
from dagster_project.publishing.ledger import BatchOutcome, BatchState
from dagster_project.publishing.publish import PublishRefused, run_publish
from dagster_project.publishing.status import batch_list_lines, batch_status, status_lines
from dagster_project.publishing.versions import NothingPublished, diff_published
from dagster_project.quality.result import Comparison, GateVerdict
from dagster_project.stages.batch import Batch
from dagster_project.tenants import load_tenants
from tests.unit.conftest import land_and_run


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, name: str, cursor: str | None = None):
    with dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=cursor) as context:
        return defs.resolve_sensor_def(name)(context)


def published_events(result) -> list:
    return [e for e in result.asset_events if e.asset_key.path[-1] == "published"]


def test_a_blocked_batch_names_its_gate_on_published_and_its_later_checks_were_not_evaluated(location) -> None:
    settings, defs, s3, lakefs, instance = location
    tenant, dataset, request, result = land_and_run(location, "stahlwerk", "defect_reports", "leaky", 120, seed=8,
                                                    plant_defects=False, pii_share=0.5)
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
    assert published_events(again) == [] and ApprovalStore(settings.resolved_database_url).ledger.unreported() == []

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
    tenant, dataset, request, result = land_and_run(location, "northbank", "complaints", "wk50", 150, seed=5)
    assert dataset.publish.policy == "owner"
    assert result.success
    [candidate] = [
        e.event_specific_data.materialization for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
        and e.event_specific_data.materialization.asset_key.path[-1] == "published"]
    assert candidate.metadata["status"].value == "awaiting_approval"
    assert published_events(tick(defs, instance, OUTCOME_SENSOR)) == []  # its own run reported it

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
    # The same numbers as the run's own materialization, so the approved batch plots like any other.
    for name in ("dagster/row_count", "records_in", "quarantined", "duplicates", "gate/agreement"):
        assert merged.metadata[name].value == candidate.metadata[name].value, name


def test_a_batch_without_gold_items_stops_before_any_vendor_submission(location) -> None:
    settings, defs, s3, lakefs, instance = location
    tenant, dataset, request, result = land_and_run(location, "northbank", "support_intents", "nogold", 120, seed=6,
                                                    gold_set=False)  # the data owner uploaded no gold set
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


def materializations(result) -> dict[str, dg.AssetMaterialization]:
    return {e.event_specific_data.materialization.asset_key.path[-1]: e.event_specific_data.materialization
            for e in result.all_events if e.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION}


def test_what_an_operator_and_a_data_owner_read_about_a_batch(location) -> None:
    settings, defs, s3, lakefs, instance = location
    tenant, dataset, request, result = land_and_run(location, "northbank", "complaints", "wk51", 150, seed=9)
    assert result.success
    stages = materializations(result)
    # Numbers per batch (the Plots tab), tables, links.
    assert isinstance(stages["raw"].metadata["records_in"].value, int)
    assert isinstance(stages["annotations"].metadata["labeling_cost_usd"].value, float)
    assert isinstance(stages["consolidated_labels"].metadata["mean_confidence"].value, float)
    assert isinstance(stages["pii"].metadata["records_with_pii"].value, int)
    table = stages["consolidated_labels"].metadata["label_distribution"].value
    assert {r.data["label"] for r in table.records} <= set(dataset.labels) and table.records
    assert stages["clean"].metadata["dagster/uri"].value.startswith("lakefs://northbank/batch-complaints-wk51/")
    assert stages["published"].metadata["label_distribution"].value.records
    assert isinstance(stages["published"].metadata["gate/agreement"].value, float)  # agreement plotted per batch
    assert isinstance(stages["published"].metadata["gate/gold_accuracy"].value, float)
    # Column schemas from the dataset schema and code references on the asset definitions.
    spec = defs.resolve_assets_def(dg.AssetKey(["northbank", "complaints", "clean"])).specs_by_key[
        dg.AssetKey(["northbank", "complaints", "clean"])]
    columns = {c.name: c for c in spec.metadata["dagster/column_schema"].columns}
    assert set(dataset.record_schema.fields) <= set(columns) and "record_id" in columns
    [reference] = spec.metadata["dagster/code_references"].code_references
    assert reference.file_path.endswith("dagster_project/stages/runners.py")

    # The approval request goes to the data owners' channel, in its own layout, with the commands.
    [request_message] = AlertOutbox(settings.resolved_database_url).messages()
    assert request_message.channel == tenant.data_owner_channel == "#northbank-data-owners"
    text, blocks = render(request_message, mentions=tenant.mentions_for(approval=True))
    rendered = " ".join(json.dumps(b, ensure_ascii=False) for b in blocks)
    assert text.startswith("<@U0PRIYA01> <@U0TOM0001> ")
    assert "Value vs threshold" not in rendered and "records_added" not in rendered
    assert "```trainyard approve northbank complaints wk51 --commit " in rendered
    assert "Gates: 12 of 12 passed" in rendered and "0.2210526" not in rendered

    # trainyard show: stages, gates, the diff and the commands of a batch waiting for its owners.
    store = ApprovalStore(settings.resolved_database_url)
    batch = Batch(tenant, dataset, request.partition_key, lakefs.repository(tenant.lakefs_repository))
    shown = "\n".join(status_lines(batch_status(batch, store)))
    assert "state:   awaiting_approval" in shown and "labeling_tasks" in shown and "PASS  gold_set:" in shown
    assert "+" in shown.split("against main:")[1] and "trainyard approve northbank complaints wk51 --commit" in shown
    assert "complaints" in "\n".join(batch_list_lines(store.ledger.list("northbank", states={
        BatchState.AWAITING_APPROVAL})))


def test_a_blocked_batch_is_shown_with_its_failed_gate_and_no_empty_diff(location) -> None:
    settings, defs, s3, lakefs, instance = location
    tenant, dataset, request, _ = land_and_run(location, "stahlwerk", "defect_reports", "leaky2", 100, seed=3,
                                               plant_defects=False, pii_share=0.5)
    batch = Batch(tenant, dataset, request.partition_key, lakefs.repository(tenant.lakefs_repository))
    shown = "\n".join(status_lines(batch_status(batch, ApprovalStore(settings.resolved_database_url))))
    assert "state:   blocked" in shown and "FAIL  pii_residual:" in shown
    assert "holds no publish candidate" in shown and "+0 records" not in shown
    assert "trainyard reject stahlwerk defect_reports leaky2" in shown
    with pytest.raises(NothingPublished):
        diff_published(batch.repo, dataset.name, layout.MAIN_BRANCH, batch.branch)
    lines = batch_list_lines(ApprovalStore(settings.resolved_database_url).ledger.list("stahlwerk"))
    assert "failed: pii_residual" in lines[1] and "blocked" in lines[1]


def test_a_failed_run_without_tenant_tags_still_alerts(location) -> None:
    settings, defs, s3, lakefs, instance = location
    key = dg.AssetKey(["northbank", "support_intents", "training_manifest"])
    # What the UI's Materialize button launches: the implicit asset job, without the version job's tags.
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[key], raise_on_error=False)
    assert not result.success and "trainyard/tenant" not in instance.get_run_by_id(result.run_id).tags
    tick(defs, instance, RUN_FAILURE_ALERT_SENSOR)
    [message] = AlertOutbox(settings.resolved_database_url).messages()
    assert message.alert.kind is AlertKind.RUN_FAILED and message.alert.tenant == "northbank"
    assert message.channel == "#northbank-data-oncall" and "no published version" in message.alert.details["error"]


def test_what_waits_for_people_is_a_table_in_the_ui(location) -> None:
    settings, defs, s3, lakefs, instance = location
    land_and_run(location, "stahlwerk", "defect_reports", "leaky3", 100, seed=4, plant_defects=False, pii_share=0.5)
    first = tick(defs, instance, OUTCOME_SENSOR)
    views = {e.asset_key.path[-1]: e for e in first.asset_events if e.asset_key.path[0] == "trainyard"}
    [waiting] = [r.data for r in views["approval_queue"].metadata["rows"].value.records]
    assert waiting["batch"] == "leaky3" and waiting["state"] == "blocked" and waiting["gate"] == "pii_residual"
    [incident] = [r.data for r in views["open_incidents"].metadata["rows"].value.records]
    assert incident["kind"] == "gate_failed" and incident["playbook"].endswith("gate_failed.md")
    again = tick(defs, instance, OUTCOME_SENSOR, cursor=first.cursor)
    assert [e for e in again.asset_events if e.asset_key.path[0] == "trainyard"] == []  # unchanged: not re-observed


def test_a_rejected_batch_is_never_merged_automatically_whatever_happens_after(location) -> None:
    settings, defs, s3, lakefs, instance = location
    tenant, dataset, request, _ = land_and_run(location, "stahlwerk", "defect_reports", "leaky4", 100, seed=5,
                                               plant_defects=False, pii_share=0.5)
    store = ApprovalStore(settings.resolved_database_url)
    repo = lakefs.repository(tenant.lakefs_repository)
    blocked = Batch(tenant, dataset, request.partition_key, repo)
    decide(blocked, store, tenant.data_owners[0], Verdict.REJECT, "PII in a PII-free dataset")
    # A re-run is blocked again (the ledger moves on to "blocked"), then one passes: the rejection still stands.
    store.ledger.record(BatchOutcome(tenant.name, dataset.name, blocked.batch_id, BatchState.BLOCKED, "again",
                                     gate="pii_residual"))
    with pytest.raises(PublishRefused, match="never merged automatically"):
        run_publish(blocked, store)
    # A merge started by hand is refused too, even of a commit recorded as a candidate whose gates all passed.
    meta = CommitMetadata.with_counts({}, stage="published", tenant=tenant.name, dataset=dataset.name,
                                      batch_id=blocked.batch_id)
    repo.put_bytes(blocked.branch, f"datasets/{dataset.name}/published/batch={blocked.batch_id}/data.parquet", b"x")
    candidate = repo.commit(blocked.branch, "a candidate after the rejection", meta.to_lakefs())
    store.record_candidate(tenant.name, dataset.name, blocked.batch_id, candidate, {
        g.name: GateVerdict(passed=True, value=0, threshold=0, comparison=Comparison.AT_MOST) for g in GATES})
    decide_merge = gatekeeper_decider(load_tenants(settings.tenants_file), lambda name: repo, store)
    decision = decide_merge({"repository_id": tenant.lakefs_repository, "branch_id": "main",
                             "source_ref": candidate, "event_type": "pre-merge"})
    assert not decision.allowed and "rejected by anna.becker@stahlwerk.example" in decision.reason

    # A batch still running can be rejected: its merge will refuse.
    running = Batch(tenant, dataset, "in-flight", repo)
    repo.ensure_branch(running.branch)
    decide(running, store, tenant.data_owners[0], Verdict.REJECT, "wrong export")
    assert store.rejection(tenant.name, dataset.name, "in-flight") is not None


def test_the_ledger_shows_each_outcome_once_and_the_latest_last(tmp_path) -> None:
    from dagster_project.db import make_engine
    from dagster_project.publishing.ledger import BatchLedger

    ledger = BatchLedger(make_engine(f"sqlite:///{tmp_path / 'l.db'}"))
    conflict = BatchOutcome("t", "d", "b1", BatchState.MERGE_CONFLICT, "conflict on x", stage="published")
    first = ledger.record(conflict)
    assert ledger.record(conflict).revision == first.revision  # the same conflict on the next tick: nothing new
    assert ledger.mark_reported("t", "d", "b1", first.revision) and ledger.unreported() == []
    # The sensor emitted revision r while a run recorded (and reported) r+1: r+1 is shown again, after r.
    newer = ledger.record(BatchOutcome("t", "d", "b1", BatchState.AWAITING_APPROVAL, "candidate"), reported=True)
    assert not ledger.mark_reported("t", "d", "b1", first.revision)
    assert [o.revision for o in ledger.unreported()] == [newer.revision]


def test_a_gold_set_smaller_than_the_batch_needs_is_named_by_its_gate(location) -> None:
    settings, defs, s3, lakefs, instance = location
    from dagster_project.devservices.sample_data import upload_gold_set
    from tests.unit.conftest import BUCKET

    tenant = load_tenants(settings.tenants_file).tenant("northbank")
    upload_gold_set(s3, BUCKET, tenant, tenant.dataset("support_intents"), n=3)
    _, _, _, result = land_and_run(location, "northbank", "support_intents", "smallgold", 200, seed=7,
                                   gold_set=False)
    [failed] = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed.check_name == "gold_set" and failed.description.startswith("gold_set: 3 gold items were mixed")
    assert "gave 3 of the" in failed.metadata["worst_offenders"].value[0]["problem"]
