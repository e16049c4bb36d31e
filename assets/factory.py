"""One factory turns each configured tenant dataset into its asset graph, gate, job and landing sensor.

Why a factory: every tenant dataset has the same stages, but its own schema, vendors, thresholds, owners and
batches. Keys are ``[tenant, dataset, stage]``, one group per dataset, one dynamic partition per batch, so an
operator sees each client's pipeline on its own and each batch as a partition. The asset bodies only build a
:class:`~dagster_project.pipeline.Batch` and call the matching ``pipeline`` function.
"""

# No `from __future__ import annotations` here: Dagster inspects the real annotations of asset and sensor
# functions to find the context and resource parameters.


import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from lakefs_sdk.exceptions import ApiException

from assets.sensors import build_landing_sensor
from dagster_project import layout, pipeline
from dagster_project.alerts import merge_conflict_alert
from dagster_project.gates import GATES, Gate, evaluate_and_record
from dagster_project.ingest import read_gold_set
from dagster_project.lakefs_repo import MergeConflict
from dagster_project.layout import Stage
from dagster_project.publish import approval_request, run_publish
from dagster_project.quality.checks import CheckOutcome
from dagster_project.settings import Settings
from dagster_project.tenants import DatasetConfig, TenantConfig
from dagster_project.versions import export_key, list_versions, training_manifest
from resources.governance import GovernanceResource
from resources.lakefs import LakeFSResource
from resources.object_storage import ObjectStorageResource
from resources.slack import AlertsResource
from resources.vendors import WorkforceResource

STAGE_DESCRIPTIONS = {
    Stage.RAW: "Every record of a landing drop, parsed, with lineage (source file, line, license, consent). "
               "Unparsable lines and drops without a valid manifest are quarantined with file, line and reason.",
    Stage.CLEAN: "Unicode-normalised records typed against the dataset schema; records missing required fields "
                 "or out of range are quarantined with the field and reason.",
    Stage.PII: "Records after PII handling, before anything leaves for a vendor: emails, phone numbers, IBANs, "
               "card numbers, national ids and IP addresses are redacted or the record is dropped (quarantined), "
               "per the dataset's pii_policy. Findings keep kinds and positions, never values.",
    Stage.DEDUP: "Records with exact duplicates (normalised text) removed, within the batch and against every "
                 "batch already published on main.",
    Stage.LABELING_TASKS: "One task per item and replica (overlap k), routed to vendors by share, with known-answer "
                          "gold items mixed in at the dataset's gold_rate.",
    Stage.ANNOTATIONS: "Judgements returned by the labeling vendors, with annotator, latency and cost.",
    Stage.CONSOLIDATED_LABELS: "One label per item by majority vote, with its confidence.",
    Stage.PUBLISHED: "The batch merged into the tenant's lakeFS main and tagged as a dataset version -- the only "
                     "data training may read. Runs only after every blocking gate passed and the record counts "
                     "reconcile (records in = published + quarantined + duplicates).",
}
VERSION_TAG = "trainyard/version"
ALERTED_TAG = "trainyard/alerted"
"""Set on a run whose failure already raised its own alert (the run-failure sensor then stays quiet)."""
STAGE_KINDS = {
    Stage.RAW: {"python", "s3", "lakefs"},
    Stage.ANNOTATIONS: {"python", "lakefs", "labeling"},
    Stage.PUBLISHED: {"lakefs"},
}


@dataclass
class DatasetDefinitions:
    assets: list[dg.AssetsDefinition]
    asset_checks: list[dg.AssetChecksDefinition]
    jobs: list[UnresolvedAssetJobDefinition]
    sensors: list[dg.SensorDefinition]
    partitions_def: dg.DynamicPartitionsDefinition


def report_metadata(report: pipeline.StageReport, batch: pipeline.Batch) -> dict[str, Any]:
    """Numeric metadata first (so the UI plots it per partition), then where the data is."""
    metadata: dict[str, Any] = {"dagster/row_count": report.rows, **report.counts}
    metadata["lakefs_branch"] = batch.branch
    metadata["lakefs_commit"] = report.commit_id
    metadata["lakefs_path"] = f"lakefs://{batch.repo.name}/{batch.branch}/" + layout.stage_dir(
        batch.dataset.name, report.stage, batch.batch_id)
    if report.details:
        metadata["details"] = dg.MetadataValue.json(report.details)
    return metadata


def check_result(outcome: CheckOutcome, blocking: bool) -> dg.AssetCheckResult:
    """A gate outcome as Dagster sees it: numeric value/threshold/sample size so the UI can plot them."""
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
        description=f"{outcome.name}: {outcome.value} {outcome.comparison} {outcome.threshold}",
        metadata={"value": float(outcome.value), "threshold": float(outcome.threshold),
                  "comparison": outcome.comparison, "sample_size": int(outcome.sample_size),
                  "worst_offenders": dg.MetadataValue.json(outcome.worst)},
    )


def build_dataset_definitions(tenant: TenantConfig, dataset: DatasetConfig, settings: Settings) -> DatasetDefinitions:
    partitions_def = dg.DynamicPartitionsDefinition(name=layout.partitions_name(tenant.name, dataset.name))
    group = layout.asset_group(tenant.name, dataset.name)

    def key(stage: Stage) -> dg.AssetKey:
        return dg.AssetKey([tenant.name, dataset.name, str(stage)])

    def batch_for(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
                  lakefs: LakeFSResource) -> pipeline.Batch:
        return pipeline.Batch(tenant, dataset, context.partition_key, lakefs.repository(tenant.lakefs_repository),
                              context.run.run_id)

    def stage_asset(stage: Stage, upstream: Stage | None, **extra: Any):
        return dg.asset(
            key=key(stage),
            deps=[key(upstream)] if upstream else None,
            partitions_def=partitions_def,
            group_name=group,
            owners=list(tenant.data_owners),
            kinds=STAGE_KINDS.get(stage, {"python", "lakefs"}),
            description=STAGE_DESCRIPTIONS[stage],
            tags={"trainyard/tenant": tenant.name, "trainyard/dataset": dataset.name},
            **extra,
        )

    @stage_asset(Stage.RAW, None)
    def raw(context: dg.AssetExecutionContext, lakefs: LakeFSResource,
            landing: ObjectStorageResource) -> dg.MaterializeResult:
        lakefs.prepare_repository(tenant.lakefs_repository)
        batch = batch_for(context, lakefs)
        report = pipeline.run_raw(batch, landing.client(), landing.landing_bucket,
                                  lakefs.storage_namespace(tenant.lakefs_repository))
        if report.details.get("manifest_problem"):
            context.log.warning(report.details["manifest_problem"])
        return dg.MaterializeResult(metadata=report_metadata(report, batch))

    @stage_asset(Stage.CLEAN, Stage.RAW)
    def clean(context: dg.AssetExecutionContext, lakefs: LakeFSResource) -> dg.MaterializeResult:
        batch = batch_for(context, lakefs)
        return dg.MaterializeResult(metadata=report_metadata(pipeline.run_clean(batch), batch))

    @stage_asset(Stage.PII, Stage.CLEAN)
    def pii(context: dg.AssetExecutionContext, lakefs: LakeFSResource) -> dg.MaterializeResult:
        batch = batch_for(context, lakefs)
        return dg.MaterializeResult(metadata=report_metadata(pipeline.run_pii(batch), batch))

    @stage_asset(Stage.DEDUP, Stage.PII)
    def dedup(context: dg.AssetExecutionContext, lakefs: LakeFSResource) -> dg.MaterializeResult:
        batch = batch_for(context, lakefs)
        return dg.MaterializeResult(metadata=report_metadata(pipeline.run_dedup(batch), batch))

    @stage_asset(Stage.LABELING_TASKS, Stage.DEDUP)
    def labeling_tasks(context: dg.AssetExecutionContext, lakefs: LakeFSResource,
                       landing: ObjectStorageResource) -> dg.MaterializeResult:
        batch = batch_for(context, lakefs)
        gold_set = read_gold_set(landing.client(), landing.landing_bucket, tenant.landing_prefix, dataset.name,
                                 dataset.record_schema.text_field, dataset.labels)
        report = pipeline.run_labeling_tasks(batch, gold_set)
        return dg.MaterializeResult(metadata=report_metadata(report, batch))

    @stage_asset(Stage.ANNOTATIONS, Stage.LABELING_TASKS)
    def annotations(context: dg.AssetExecutionContext, lakefs: LakeFSResource,
                    workforce: WorkforceResource) -> dg.MaterializeResult:
        batch = batch_for(context, lakefs)
        report = pipeline.run_annotations(batch, workforce.clients(dataset))
        return dg.MaterializeResult(metadata=report_metadata(report, batch))

    @stage_asset(Stage.CONSOLIDATED_LABELS, Stage.ANNOTATIONS)
    def consolidated_labels(context: dg.AssetExecutionContext, lakefs: LakeFSResource) -> dg.MaterializeResult:
        batch = batch_for(context, lakefs)
        return dg.MaterializeResult(metadata=report_metadata(pipeline.run_consolidation(batch), batch))

    def gate_check(gate: Gate) -> dg.AssetChecksDefinition:
        threshold_note = "blocks the batch" if gate.blocking else "warns (never blocks)"

        @dg.asset_check(
            asset=key(gate.stage),
            name=gate.name,
            blocking=gate.blocking,
            partitions_def=partitions_def,
            description=f"{gate.summary} -- {threshold_note}. Thresholds: dataset gates in the tenants file.",
        )
        def check(context: dg.AssetCheckExecutionContext, lakefs: LakeFSResource) -> dg.AssetCheckResult:
            outcome = evaluate_and_record(batch_for(context, lakefs), gate.name)
            return check_result(outcome, gate.blocking)

        return check

    @stage_asset(Stage.PUBLISHED, Stage.CONSOLIDATED_LABELS,
                 freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=dataset.freshness_sla_hours)))
    def published(context: dg.AssetExecutionContext, lakefs: LakeFSResource, alerts: AlertsResource,
                  governance: GovernanceResource) -> dg.MaterializeResult:
        batch = batch_for(context, lakefs)
        run_url = f"{settings.dagster_url.rstrip('/')}/runs/{context.run.run_id}"
        try:
            outcome = run_publish(batch, governance.store())
        except MergeConflict as exc:
            alerts.router().raise_alert(merge_conflict_alert(
                tenant=tenant.name, dataset=dataset.name, batch_id=batch.batch_id, branch=batch.branch,
                error=str(exc), channel=tenant.slack_channel, playbook_base_url=alerts.playbook_base_url,
                run_url=run_url))
            context.instance.add_run_tags(context.run.run_id, {ALERTED_TAG: "merge_conflict"})
            raise
        if outcome.status == "awaiting_approval":
            alerts.router().raise_alert(approval_request(batch, outcome, alerts.playbook_base_url, run_url))
        metadata: dict[str, Any] = {"status": outcome.status, "lakefs_branch": batch.branch,
                                    "batch_commit": outcome.batch_commit}
        conservation = outcome.summary.get("conservation", {})
        metadata["dagster/row_count"] = int(conservation.get("published", 0))
        for name in ("records_in", "quarantined", "duplicates"):
            metadata[name] = int(conservation.get(name, 0))
        if outcome.main_commit:
            metadata["main_commit"] = outcome.main_commit
            metadata["version_tag"] = outcome.version_tag
        context.log.info(f"batch {batch.batch_id}: {outcome.status} {outcome.version_tag or ''}")
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset(
        key=dg.AssetKey([tenant.name, dataset.name, "training_manifest"]),
        deps=[key(Stage.PUBLISHED)],
        group_name=group,
        owners=list(tenant.data_owners),
        kinds={"python", "lakefs", "s3"},
        description="The newest published version as training reads it: the pinned lakeFS commit, the exact "
                    "files and the lineage, exported as JSON next to the client's drops (exports/versions/). "
                    "Materialized by the version sensor whenever a new version is tagged.",
        tags={"trainyard/tenant": tenant.name, "trainyard/dataset": dataset.name},
    )
    def training_manifest_asset(context: dg.AssetExecutionContext, lakefs: LakeFSResource,
                                landing: ObjectStorageResource) -> dg.MaterializeResult:
        repo = lakefs.repository(tenant.lakefs_repository)
        versions = list_versions(repo, dataset.name)
        if not versions:
            raise dg.Failure(f"{tenant.name}/{dataset.name} has no published version yet")
        wanted = context.run.tags.get(VERSION_TAG)
        version = next((v for v in versions if v.tag == wanted), versions[-1])
        manifest = training_manifest(repo, dataset.name, version)
        body = json.dumps(manifest, indent=2).encode("utf-8")
        s3 = landing.client()
        for name in (version.tag.rsplit("/", 1)[1], "latest" if version == versions[-1] else None):
            if name:
                s3.put_object(Bucket=landing.landing_bucket,
                              Key=export_key(tenant.landing_prefix, dataset.name, name), Body=body)
        return dg.MaterializeResult(metadata={
            "version": version.tag, "version_number": version.number, "commit_id": version.commit_id,
            "files": len(manifest["files"]), "batch_records": version.published_records})

    version_job = dg.define_asset_job(
        name=f"{tenant.name}__{dataset.name}__version_job",
        selection=dg.AssetSelection.assets(training_manifest_asset),
        executor_def=dg.in_process_executor,
        description=f"Export the training manifest of a new {tenant.name}/{dataset.name} version.",
    )

    @dg.sensor(name=f"{tenant.name}__{dataset.name}__version_sensor", job=version_job,
               minimum_interval_seconds=settings.sensor_interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Triggers what depends on a dataset version (the training manifest) when a new "
                           f"{dataset.name}/v<N> tag appears on main.")
    def version_sensor(context: dg.SensorEvaluationContext, lakefs: LakeFSResource) -> dg.SensorResult:
        seen = int(context.cursor or 0)
        try:
            versions = list_versions(lakefs.repository(tenant.lakefs_repository), dataset.name)
        except ApiException as exc:
            if exc.status == 404:  # the repository appears with the first batch
                return dg.SensorResult(skip_reason="no repository yet")
            raise
        new = [v for v in versions if v.number > seen]
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=v.tag, tags={VERSION_TAG: v.tag}) for v in new],
            cursor=str(max([seen, *(v.number for v in new)])),
            skip_reason=None if new else f"no version after v{seen}",
        )

    job = dg.define_asset_job(
        name=layout.job_name(tenant.name, dataset.name),
        selection=dg.AssetSelection.assets(*(key(stage) for stage in Stage)),
        partitions_def=partitions_def,
        description=f"Process one landing drop of {tenant.name}/{dataset.name} from raw to published.",
        # A batch's stages are sequential and share the batch branch; one process per run avoids paying a
        # Python start-up per step. Batches scale out as separate runs (partitions), e.g. pods on Kubernetes.
        executor_def=dg.in_process_executor,
        tags={"trainyard/tenant": tenant.name, "trainyard/dataset": dataset.name},
    )
    sensor = build_landing_sensor(tenant, dataset, job, partitions_def, settings)
    return DatasetDefinitions(
        assets=[raw, clean, pii, dedup, labeling_tasks, annotations, consolidated_labels, published,
                training_manifest_asset],
        asset_checks=[gate_check(g) for g in GATES],
        jobs=[job, version_job],
        sensors=[sensor, version_sensor],
        partitions_def=partitions_def,
    )
