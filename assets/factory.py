"""One factory turns each configured tenant dataset into its ``dg.Definitions``: stage assets, gates, job, sensors.

Why a factory: every tenant dataset has the same stages, but its own schema, vendors, thresholds, owners and
batches. Keys are ``[tenant, dataset, stage]``, one group per dataset, one dynamic partition per batch, so an
operator sees each client's pipeline on its own and each batch as a partition. The stages and their gates come
from the one stage table (:data:`~dagster_project.plan.STAGE_PLAN`); every asset body only builds a
:class:`~dagster_project.stages.batch.Batch` and calls the stage's function. The code location merges the
returned definitions (``dg.Definitions.merge``), as in Dagster's ``project_dagster_modal_pipes`` example.
"""

# No `from __future__ import annotations` here: Dagster inspects the real annotations of asset and sensor
# functions to find the context and resource parameters.


from datetime import timedelta
from typing import Any

import dagster as dg

from assets.metadata import (
    check_metadata,
    code_reference,
    column_schema,
    label_table,
    outcome_metadata,
    report_metadata,
)
from assets.sensors import build_landing_sensor
from assets.versions import build_version_definitions
from dagster_project import layout
from dagster_project.conservation import ConservationError
from dagster_project.gates import GATES, Gate, evaluate_and_record, sentence
from dagster_project.gates.notify import report_gate_result
from dagster_project.lakefs import MergeConflict
from dagster_project.layout import Stage
from dagster_project.plan import PUBLISHED_DESCRIPTION, STAGE_PLAN, StageStep, upstream_of
from dagster_project.publishing.decisions import approval_request
from dagster_project.publishing.ledger import BatchOutcome, BatchState
from dagster_project.publishing.publish import PublishRefused, merge_conflict_alert, run_publish
from dagster_project.settings import Settings
from dagster_project.stages.batch import Batch
from dagster_project.stages.landing import SourceUnavailable
from dagster_project.stages.rejection import DropRejected, drop_rejected_alert
from dagster_project.stages.runners import StageInputs
from dagster_project.tenants import DatasetConfig, TenantConfig
from resources.approvals import ApprovalsResource
from resources.lakefs import LakeFSResource
from resources.slack import AlertsResource

SOURCE_RETRIES = 3
SOURCE_RETRY_SECONDS = 10
"""A landing file that could not be read is retried after 10, 20 and 40 s; then the step (and run) fails."""
NEEDED_RESOURCES = {"landing": {"landing"}, "vendors": {"workforce"}}
"""The Dagster resources behind each kind of :class:`~dagster_project.stages.runners.StageInputs` a stage needs."""


def mark_alerted(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, why: str) -> None:
    """The run fails because of an alert already raised: the run-failure sensor must not announce it again."""
    context.instance.add_run_tags(context.run.run_id, {layout.ALERTED_TAG: why})


def rejected(context: dg.AssetExecutionContext, alerts: AlertsResource, approvals: ApprovalsResource, batch: Batch,
             stage: Stage, exc: DropRejected) -> dg.Failure:
    """Tell on-call that the batch has nothing to publish, record where it ended, mark the run as alerted, and
    fail it (no retry: the same drop gives the same answer; the client must send a new one)."""
    run_id = context.run.run_id
    alerts.router().raise_alert(drop_rejected_alert(batch, exc, alerts.playbook_base_url, alerts.run_url(run_id)))
    approvals.store().ledger.record(BatchOutcome(batch.tenant.name, batch.dataset.name, batch.batch_id,
                                                 BatchState.DROP_REJECTED, exc.why, stage=str(stage), run_id=run_id))
    mark_alerted(context, "drop_rejected")
    return dg.Failure(description=str(exc), allow_retries=False,
                      metadata={"records_in": exc.records_in, "quarantine_reasons": dg.MetadataValue.json(exc.reasons)})


def stage_inputs(step: StageStep, resources: Any, tenant: TenantConfig, dataset: DatasetConfig) -> StageInputs:
    """What the stage needs from outside the batch branch, from the run's resources."""
    inputs: dict[str, Any] = {}
    if "landing" in step.needs:
        inputs.update(s3=resources.landing.client(), landing_bucket=resources.landing.landing_bucket,
                      storage_namespace=resources.lakefs.storage_namespace(tenant.lakefs_repository))
    if "vendors" in step.needs:
        inputs["vendors"] = resources.workforce.clients(dataset)
    return StageInputs(**inputs)


def build_dataset_definitions(tenant: TenantConfig, dataset: DatasetConfig, settings: Settings) -> dg.Definitions:
    partitions_def = dg.DynamicPartitionsDefinition(name=layout.partitions_name(tenant.name, dataset.name))
    group = layout.asset_group(tenant.name, dataset.name)
    tags = layout.dagster_tags(tenant.name, dataset.name)

    def key(stage: Stage) -> dg.AssetKey:
        return dg.AssetKey([tenant.name, dataset.name, str(stage)])

    def batch_for(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext, lakefs: LakeFSResource) -> Batch:
        return Batch(tenant, dataset, context.partition_key, lakefs.repository(tenant.lakefs_repository),
                     context.run.run_id)

    def static_metadata(stage: Stage, function: Any) -> dict[str, Any]:
        metadata: dict[str, Any] = {"dagster/code_references": code_reference(function, f"{stage} stage")}
        schema = column_schema(dataset, stage)
        if schema is not None:
            metadata["dagster/column_schema"] = schema
        return metadata

    def asset_spec(stage: Stage, description: str, kinds: set[str], **extra: Any):
        upstream = upstream_of(stage)
        return dg.asset(key=key(stage), deps=[key(upstream)] if upstream else None, partitions_def=partitions_def,
                        group_name=group, owners=list(tenant.data_owners), kinds=kinds, description=description,
                        tags=tags, **extra)

    def stage_asset(step: StageStep) -> dg.AssetsDefinition:
        needed = {"lakefs", "alerts", "approvals"}.union(*(NEEDED_RESOURCES[n] for n in step.needs))

        @asset_spec(step.stage, step.description, set(step.kinds), required_resource_keys=needed,
                    metadata=static_metadata(step.stage, step.run))
        def materialize(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            if step is STAGE_PLAN[0]:  # a batch's first stage makes sure the tenant repository and its gate exist
                context.resources.lakefs.prepare_repository(tenant.lakefs_repository)
            batch = batch_for(context, context.resources.lakefs)
            try:
                report = step.run(batch, stage_inputs(step, context.resources, tenant, dataset))
            except DropRejected as exc:
                raise rejected(context, context.resources.alerts, context.resources.approvals, batch, step.stage,
                               exc) from exc
            except SourceUnavailable as exc:  # a dependency, not the data: retry with backoff, then fail loudly
                wait = SOURCE_RETRY_SECONDS * 2 ** context.retry_number
                context.log.warning(f"{exc}; retry {context.retry_number + 1} of {SOURCE_RETRIES} in {wait}s")
                raise dg.RetryRequested(max_retries=SOURCE_RETRIES, seconds_to_wait=wait) from exc
            for warning in report.warnings:
                context.log.warning(warning)
            return dg.MaterializeResult(metadata=report_metadata(report, batch, context.resources.lakefs.web_url))

        return materialize

    def gate_check(gate: Gate) -> dg.AssetChecksDefinition:
        threshold_note = "blocks the batch" if gate.blocking else "warns (never blocks)"

        @dg.asset_check(
            asset=key(gate.stage),
            name=gate.name,
            blocking=gate.blocking,
            partitions_def=partitions_def,
            description=f"{gate.summary} -- {threshold_note}. Thresholds: dataset gates in the tenants file.",
        )
        def check(context: dg.AssetCheckExecutionContext, lakefs: LakeFSResource, alerts: AlertsResource,
                  approvals: ApprovalsResource) -> dg.AssetCheckResult:
            batch = batch_for(context, lakefs)
            result = evaluate_and_record(batch, gate.name)
            run_id = context.run.run_id
            alerted = report_gate_result(alerts.router(), result, gate.blocking, batch, alerts.playbook_base_url,
                                         alerts.run_url(run_id), run_id)
            if not result.passed and gate.blocking:  # the batch ends here; the outcome sensor shows where and why
                approvals.store().ledger.record(BatchOutcome(
                    tenant.name, dataset.name, batch.batch_id, BatchState.BLOCKED, sentence(result),
                    stage=str(gate.stage), gate=gate.name,
                    commit_id=result.computed_on.commit_id if result.computed_on else None, run_id=run_id))
            if alerted and gate.blocking:  # the run stops here; its failure is this alert, not a second one
                mark_alerted(context, f"gate_failed:{gate.name}")
            kind = "gate_failed" if gate.blocking else "check_warning"
            return dg.AssetCheckResult(
                passed=result.passed,
                severity=dg.AssetCheckSeverity.ERROR if gate.blocking else dg.AssetCheckSeverity.WARN,
                description=sentence(result), metadata=check_metadata(result, alerts.playbook_url(kind)))

        return check

    @asset_spec(Stage.PUBLISHED, PUBLISHED_DESCRIPTION, {"lakefs"},
                metadata=static_metadata(Stage.PUBLISHED, run_publish),
                freshness_policy=dg.FreshnessPolicy.time_window(
                    fail_window=timedelta(hours=dataset.freshness_sla_hours)))
    def published(context: dg.AssetExecutionContext, lakefs: LakeFSResource, alerts: AlertsResource,
                  approvals: ApprovalsResource) -> dg.MaterializeResult:
        batch = batch_for(context, lakefs)
        run_url = alerts.run_url(context.run.run_id)
        store = approvals.store()
        try:
            outcome = run_publish(batch, store)
        except DropRejected as exc:
            raise rejected(context, alerts, approvals, batch, Stage.PUBLISHED, exc) from exc
        except (PublishRefused, ConservationError) as exc:  # the run fails (and alerts); the batch says why
            store.ledger.record(BatchOutcome(tenant.name, dataset.name, batch.batch_id, BatchState.REFUSED,
                                             f"publishing refused: {exc}"[:1000], stage=str(Stage.PUBLISHED),
                                             run_id=context.run.run_id))
            raise
        except MergeConflict as exc:
            alerts.router().raise_alert(merge_conflict_alert(batch, str(exc), alerts.playbook_base_url, run_url))
            store.ledger.record(BatchOutcome(tenant.name, dataset.name, batch.batch_id, BatchState.MERGE_CONFLICT,
                                             f"merging into main conflicted; nothing was merged: {exc}"[:1000],
                                             stage=str(Stage.PUBLISHED), run_id=context.run.run_id))
            mark_alerted(context, "merge_conflict")
            raise
        if outcome.status == "awaiting_approval":
            alerts.router().raise_alert(approval_request(batch, outcome, alerts.playbook_base_url, run_url))
            required = dataset.publish.required_approvals
            state, reason = BatchState.AWAITING_APPROVAL, (
                f"every gate passed; waits for {required} data owner approval{'s' if required > 1 else ''} of "
                f"commit {outcome.batch_commit[:12]}")
        else:
            state, reason = BatchState.PUBLISHED, f"published as {outcome.version_tag} on main"
        conservation = outcome.summary.get("conservation", {})
        figures: dict[str, float] = {"dagster/row_count": int(conservation.get("published", 0)),
                                     **{name: int(conservation.get(name, 0))
                                        for name in ("records_in", "quarantined", "duplicates")},
                                     # every gate's value per batch, so Plots draws them across batches
                                     **{f"gate/{g.name}": float(g.value) for g in outcome.gates}}
        recorded = store.ledger.record(BatchOutcome(
            tenant.name, dataset.name, batch.batch_id, state, reason, stage=str(Stage.PUBLISHED),
            commit_id=outcome.batch_commit, main_commit=outcome.main_commit, version_tag=outcome.version_tag,
            run_id=context.run.run_id, figures=figures), reported=True)  # this materialization reports it
        metadata = outcome_metadata(recorded, batch.repo.name, lakefs.web_url)
        if outcome.summary.get("label_distribution"):
            metadata["label_distribution"] = label_table(outcome.summary["label_distribution"])
        context.log.info(f"batch {batch.batch_id}: {reason}")
        return dg.MaterializeResult(metadata=metadata)

    job = dg.define_asset_job(
        name=layout.job_name(tenant.name, dataset.name),
        selection=dg.AssetSelection.assets(*(key(stage) for stage in Stage)),
        description=f"Process one landing drop of {tenant.name}/{dataset.name} from raw to published.",
        # A batch's stages are sequential and share the batch branch; one process per run avoids paying a
        # Python start-up per step. Batches scale out as separate runs (partitions), e.g. pods on Kubernetes.
        executor_def=dg.in_process_executor,
        # Tenant and vendor on every run, for the run queue's per-tenant and per-vendor limits (docs/scaling.md).
        # A run that failed in a step (a blocking gate, a step error) is never retried, whatever the instance's
        # run_retries say (the Helm chart does not render retry_on_asset_or_op_failure; Dagster's default is true).
        tags={**layout.batch_run_tags(tenant.name, dataset.name, (v.name for v in dataset.vendors)),
              "dagster/retry_on_asset_or_op_failure": "false"},
    )
    batch_definitions = dg.Definitions(
        assets=[*(stage_asset(step) for step in STAGE_PLAN), published],
        asset_checks=[gate_check(g) for g in GATES],
        jobs=[job],
        sensors=[build_landing_sensor(tenant, dataset, job.name, partitions_def, settings)],
    )
    return dg.Definitions.merge(batch_definitions, build_version_definitions(tenant, dataset, key(Stage.PUBLISHED),
                                                                              settings))
