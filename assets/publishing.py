"""Data-owner decisions in Dagster: a launchpad job to approve or reject a batch, and the sensor that merges
approved batches into ``main``.

Why a sensor merges (instead of the approval itself): the merge must re-check the gates and the approval
against the branch head at merge time, and merges into ``main`` are serialised in one place. Approving from the
CLI (``trainyard approve``) or from this job records the same audit row; whichever way, the sensor merges.
"""

# No `from __future__ import annotations`: Dagster inspects the real annotations of ops and sensors.
import hashlib
import json

import dagster as dg

from assets.metadata import outcome_metadata
from dagster_project.alerts import IncidentStatus
from dagster_project.gates import GATES, stages_after
from dagster_project.lakefs import MergeConflict
from dagster_project.layout import Stage
from dagster_project.publishing.approvals import Verdict
from dagster_project.publishing.decisions import (
    NotAwaitingApproval,
    cleanup_rejected_branches,
    decide,
    merge_if_approved,
)
from dagster_project.publishing.ledger import OPEN_STATES, BatchOutcome, BatchState
from dagster_project.publishing.publish import PublishRefused, merge_conflict_alert
from dagster_project.settings import Settings
from dagster_project.stages.batch import Batch
from dagster_project.tenants import TenantsConfig
from resources.approvals import ApprovalsResource
from resources.lakefs import LakeFSResource
from resources.slack import AlertsResource

DECISION_JOB = "data_owner_decision"
MERGE_SENSOR = "approved_batch_merge_sensor"
OUTCOME_SENSOR = "batch_outcome_sensor"
CLEANUP_JOB = "rejected_branch_cleanup"


class DecisionConfig(dg.Config):
    """A data owner's decision, entered in the launchpad."""

    tenant: str
    dataset: str
    batch_id: str
    actor: str
    """The data owner's email address, as listed in the tenants file."""
    verdict: str = "approve"
    """``approve`` or ``reject``."""
    commit: str = ""
    """The publish candidate commit you reviewed (from the approval request); required to approve."""
    reason: str = ""


def outcome_events(outcome: BatchOutcome, repository: str, web_url: str | None) -> list:
    """How a batch's end shows on its ``published`` partition.

    A materialization when the partition's latest metadata would otherwise be stale (a candidate that was merged,
    rejected, conflicted or re-run and blocked); an observation when the batch never materialized ``published``
    (its run failed at a gate), so the partition stays failed in the UI and the observation says why. A batch
    stopped at a stage also gets one evaluation per later check, saying it was not evaluated and which gate
    stopped the batch -- otherwise the UI shows those checks as "execution failed", as if each had failed.
    """
    key = dg.AssetKey([outcome.tenant, outcome.dataset, "published"])
    metadata = outcome_metadata(outcome, repository, web_url)
    description = f"{outcome.state.value}: {outcome.reason}"
    events: list = []
    if outcome.state is BatchState.PUBLISHED or outcome.materialized:
        events.append(dg.AssetMaterialization(key, partition=outcome.batch_id, description=description,
                                              metadata=metadata))
    else:
        events.append(dg.AssetObservation(key, partition=outcome.batch_id, description=description,
                                          metadata=metadata))
    if outcome.state in (BatchState.BLOCKED, BatchState.DROP_REJECTED) and outcome.stage:
        stopped_by = f"gate {outcome.gate} on {outcome.stage}" if outcome.gate else f"stage {outcome.stage}"
        later = stages_after(Stage(outcome.stage), inclusive=outcome.state is BatchState.DROP_REJECTED)
        for gate in (g for g in GATES if g.stage in later):
            events.append(dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey([outcome.tenant, outcome.dataset, str(gate.stage)]), check_name=gate.name,
                passed=False, severity=dg.AssetCheckSeverity.WARN, partition=outcome.batch_id,
                description=f"not evaluated: batch {outcome.batch_id} was stopped earlier by {stopped_by}",
                metadata={"status": "not_evaluated", "stopped_by": outcome.gate or outcome.stage,
                          "outcome": outcome.reason}))
    return events


APPROVAL_QUEUE = dg.AssetKey(["trainyard", "approval_queue"])
OPEN_INCIDENTS = dg.AssetKey(["trainyard", "open_incidents"])
WORK_QUEUES = [
    dg.AssetSpec(APPROVAL_QUEUE, group_name="trainyard", kinds={"postgres"},
                 description="Batches a person still has to act on: waiting for their data owners' approval, blocked "
                             "by a gate, or in conflict with main (same as `trainyard batches`). Observed by the "
                             "batch outcome sensor whenever the list changes."),
    dg.AssetSpec(OPEN_INCIDENTS, group_name="trainyard", kinds={"postgres", "slack"},
                 description="Open incidents in the alert outbox: kind, where, occurrences, Slack delivery, who took "
                             "it on, and the playbook (same as `trainyard alerts`)."),
]


def work_queues(ledger, outbox, tenants: TenantsConfig) -> list[dg.AssetObservation]:
    """What waits for people, as two tables the Dagster UI shows on the ``trainyard`` assets."""
    waiting = [o for t in tenants.tenants for o in ledger.list(t.name, states=OPEN_STATES)]
    batches = [dg.TableRecord({"tenant": o.tenant, "dataset": o.dataset, "batch": o.batch_id, "state": o.state.value,
                               "gate": o.gate or "", "since": o.at.strftime("%Y-%m-%d %H:%M UTC") if o.at else "",
                               "why": o.reason[:300]}) for o in waiting]
    incidents = []
    for incident in outbox.incidents_list(IncidentStatus.OPEN):
        message = outbox.message(incident.last_alert_id) if incident.last_alert_id else None
        incidents.append(dg.TableRecord({
            "incident": incident.id, "kind": incident.kind, "where": message.alert.title[:200] if message else "",
            "occurrences": incident.occurrences, "slack": message.status.value if message else "",
            "acknowledged_by": incident.acknowledged_by or "", "playbook": message.alert.playbook_url if message
            else ""}))

    def table(records: list[dg.TableRecord], columns: list[str]) -> dg.TableMetadataValue:
        return dg.MetadataValue.table(records, schema=dg.TableSchema(
            columns=[dg.TableColumn(c, "int" if c in ("incident", "occurrences") else "string") for c in columns]))

    return [
        dg.AssetObservation(APPROVAL_QUEUE, metadata={"waiting": len(batches), "rows": table(
            batches, ["tenant", "dataset", "batch", "state", "gate", "since", "why"])}),
        dg.AssetObservation(OPEN_INCIDENTS, metadata={"open": len(incidents), "rows": table(
            incidents, ["incident", "kind", "where", "occurrences", "slack", "acknowledged_by", "playbook"])}),
    ]


def build_publishing_definitions(tenants: TenantsConfig, settings: Settings) -> dg.Definitions:
    @dg.op(description="Record a data owner's approval or rejection of a batch's publish candidate.")
    def record_decision(context: dg.OpExecutionContext, config: DecisionConfig, lakefs: LakeFSResource,
                        approvals: ApprovalsResource) -> None:
        tenant = tenants.tenant(config.tenant)
        dataset = tenant.dataset(config.dataset)
        batch = Batch(tenant, dataset, config.batch_id, lakefs.repository(tenant.lakefs_repository), context.run_id)
        verdict = Verdict(config.verdict)
        if verdict == Verdict.APPROVE and not config.commit:
            raise dg.Failure("an approval names the commit you reviewed: set `commit` from the approval request")
        state = decide(batch, approvals.store(), config.actor, verdict, config.reason, commit=config.commit or None)
        context.log.info(f"{config.actor} {config.verdict}d {config.tenant}/{config.dataset} {config.batch_id} at "
                         f"commit {state.commit_id}: approvers {list(state.approvers)}, {state.missing} more needed")

    @dg.job(name=DECISION_JOB, description="Approve or reject a batch waiting for data-owner approval "
                                           "(same as `trainyard approve|reject`).")
    def data_owner_decision() -> None:
        record_decision()

    @dg.sensor(name=MERGE_SENSOR, minimum_interval_seconds=settings.sensor_interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Merges batches whose publish candidate has enough data-owner approvals into main "
                           "(it looks only at the batches waiting for a decision).")
    def approved_batch_merge_sensor(context: dg.SensorEvaluationContext, lakefs: LakeFSResource,
                                    approvals: ApprovalsResource, alerts: AlertsResource) -> dg.SkipReason:
        with alerts.watch_tick(MERGE_SENSOR):
            store = approvals.store()
            merged, failed = [], []
            for pending in store.pending_batches():
                tenant_name, dataset_name, batch_id = pending.tenant, pending.dataset, pending.batch_id
                try:
                    tenant = tenants.tenant(tenant_name)
                    dataset = tenant.dataset(dataset_name)
                except KeyError:
                    continue  # a tenant or dataset removed from the configuration
                batch = Batch(tenant, dataset, batch_id, lakefs.repository(tenant.lakefs_repository))
                try:
                    outcome = merge_if_approved(batch, store)
                except (NotAwaitingApproval, PublishRefused) as exc:
                    # Not mergeable as it stands (branch gone or moved, a gate re-check failed): off the list, with the
                    # reason in the log and on the batch; a new publish candidate or a new decision puts it back.
                    store.clear_pending(tenant_name, dataset_name, batch_id)
                    store.ledger.record(BatchOutcome(tenant_name, dataset_name, batch_id, BatchState.REFUSED,
                                                     f"not merged: {exc}"[:1000], stage="published",
                                                     commit_id=pending.commit_id))
                    context.log.warning(f"{tenant_name}/{dataset_name} {batch_id}: no longer waits for a merge: {exc}")
                    continue
                except MergeConflict as exc:  # nothing merged; the branch stays for the data owner to resolve
                    alerts.router().raise_alert(merge_conflict_alert(batch, str(exc), alerts.playbook_base_url, None))
                    store.ledger.record(BatchOutcome(
                        tenant_name, dataset_name, batch_id, BatchState.MERGE_CONFLICT,
                        f"merging the approved commit into main conflicted; nothing was merged: {exc}"[:1000],
                        stage="published", commit_id=pending.commit_id))
                    continue
                except Exception as exc:  # one broken batch must not stop every other batch from merging
                    context.log.warning(f"{tenant_name}/{dataset_name} {batch_id}: not merged: {exc}")
                    failed.append(f"{tenant_name}/{dataset_name} {batch_id}: {type(exc).__name__}: {exc}")
                    continue
                if outcome.status in ("published", "already_published"):  # an earlier tick may have died here
                    store.ledger.record(BatchOutcome(
                        tenant_name, dataset_name, batch_id, BatchState.PUBLISHED,
                        f"published as {outcome.version_tag} on main" + (
                            f", approved by {', '.join(outcome.approved_by)}" if outcome.approved_by else ""),
                        stage="published", commit_id=outcome.batch_commit, main_commit=outcome.main_commit,
                        version_tag=outcome.version_tag, actor=", ".join(outcome.approved_by)))
                    merged.append(f"{tenant_name}/{dataset_name} {batch_id} -> {outcome.version_tag}")
                    context.log.info(f"merged {merged[-1]} at {outcome.main_commit}")
            if failed:  # the tick fails (and, repeated, alerts); the batches stay pending for the next tick
                raise RuntimeError(f"{len(failed)} approved batch(es) could not be merged "
                                   f"(merged {len(merged)}): {'; '.join(failed[:5])}")
            return dg.SkipReason(f"merged {len(merged)}: {', '.join(merged)}" if merged
                                 else "no newly approved batches")

    datasets = {(t.name, d.name): t for t, d in tenants.datasets()}

    @dg.sensor(name=OUTCOME_SENSOR, minimum_interval_seconds=settings.sensor_interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Shows where each batch ended on its `published` partition when that happened outside "
                           "a run that could say so: blocked by a gate (and which later checks never ran), "
                           "merged after approval, rejected, in conflict with main.")
    def batch_outcome_sensor(context: dg.SensorEvaluationContext, approvals: ApprovalsResource,
                             lakefs: LakeFSResource, alerts: AlertsResource) -> dg.SensorResult:
        with alerts.watch_tick(OUTCOME_SENSOR):
            ledger = approvals.store().ledger
            cursor = json.loads(context.cursor or "{}")
            # The previous tick's events are stored with its cursor; only now are they known to be in Dagster.
            for key, revision in cursor.get("reported", {}).items():
                ledger.mark_reported(*key.split("/", 2), revision=revision)
            events, reported = [], {}
            for outcome in ledger.unreported():
                tenant = datasets.get((outcome.tenant, outcome.dataset))
                if tenant is not None:  # a dataset removed from the configuration has no assets to report on
                    events += outcome_events(outcome, tenant.lakefs_repository, lakefs.web_url)
                reported[f"{outcome.tenant}/{outcome.dataset}/{outcome.batch_id}"] = outcome.revision
            views = work_queues(ledger, alerts.database.outbox(), tenants)
            digest = hashlib.sha256(json.dumps([[r.data for r in e.metadata["rows"].value.records] for e in views],
                                               sort_keys=True, default=str).encode()).hexdigest()
            if digest != cursor.get("views"):  # observed when what waits changes, not every tick
                events += views
            return dg.SensorResult(asset_events=events,
                                   cursor=json.dumps({"reported": reported, "views": digest}, sort_keys=True),
                                   skip_reason=None if events else "no new batch outcomes")

    @dg.op(description="Delete the lakeFS branches of batches rejected longer ago than the retention period.")
    def delete_expired_rejected_branches(context: dg.OpExecutionContext, lakefs: LakeFSResource,
                                         approvals: ApprovalsResource) -> None:
        deleted = cleanup_rejected_branches(approvals.store(), tenants, lakefs.repository,
                                            approvals.rejected_branch_retention)
        context.log.info(f"deleted {len(deleted)} rejected branch(es): {', '.join(deleted) or '-'}")

    @dg.job(name=CLEANUP_JOB, description="Delete branches of rejected batches after the retention period "
                                          "(TRAINYARD_REJECTED_BRANCH_RETENTION_DAYS).")
    def rejected_branch_cleanup() -> None:
        delete_expired_rejected_branches()

    cleanup_schedule = dg.ScheduleDefinition(job=rejected_branch_cleanup, cron_schedule="30 3 * * *",
                                             default_status=dg.DefaultScheduleStatus.RUNNING,
                                             name=f"{CLEANUP_JOB}_daily")
    return dg.Definitions(assets=WORK_QUEUES, jobs=[data_owner_decision, rejected_branch_cleanup],
                          sensors=[approved_batch_merge_sensor, batch_outcome_sensor],
                          schedules=[cleanup_schedule])
