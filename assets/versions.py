"""What follows a new dataset version: the training manifest asset, its job and the sensor that watches tags.

Why a sensor on lakeFS tags rather than on the ``published`` asset: a version appears on ``main`` either in a
batch run (auto policy) or when the approval merge sensor merges an owner-approved batch, outside any batch run.
Watching the ``<dataset>/v<N>`` tags covers both with one cursor (the highest version number exported).
"""

# No `from __future__ import annotations`: Dagster inspects the real annotations of asset and sensor functions.
import json

import dagster as dg

from dagster_project import layout
from dagster_project.lakefs import RefNotFound
from dagster_project.publishing.versions import export_key, training_manifest, trusted_versions, untrusted_version_alert
from dagster_project.settings import Settings
from dagster_project.tenants import DatasetConfig, TenantConfig
from resources.approvals import ApprovalsResource
from resources.lakefs import LakeFSResource
from resources.object_storage import ObjectStorageResource
from resources.slack import AlertsResource


def build_version_definitions(tenant: TenantConfig, dataset: DatasetConfig, published: dg.AssetKey,
                              settings: Settings) -> dg.Definitions:
    @dg.asset(
        key=dg.AssetKey([tenant.name, dataset.name, "training_manifest"]),
        deps=[published],
        group_name=layout.asset_group(tenant.name, dataset.name),
        owners=list(tenant.data_owners),
        kinds={"python", "lakefs", "s3"},
        description="The newest published version as training reads it: the pinned lakeFS commit, the exact "
                    "files and the lineage, exported as JSON next to the client's drops (exports/versions/). "
                    "Materialized by the version sensor whenever a new version is tagged.",
        tags=layout.dagster_tags(tenant.name, dataset.name),
        # lakeFS or S3 briefly unreachable must not leave a version without its manifest: retry with backoff;
        # a run that still fails is alerted by the run-failure sensor (whoever launched it).
        retry_policy=dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL),
    )
    def training_manifest_asset(context: dg.AssetExecutionContext, lakefs: LakeFSResource,
                                landing: ObjectStorageResource, approvals: ApprovalsResource) -> dg.MaterializeResult:
        repo = lakefs.repository(tenant.lakefs_repository)
        try:
            versions = trusted_versions(repo, tenant.name, dataset.name, approvals.store()).trusted
        except RefNotFound:  # the repository appears with the first batch: an answer, not an outage
            versions = []
        if not versions:
            raise dg.Failure(f"{tenant.name}/{dataset.name} has no published version yet", allow_retries=False)
        wanted = context.run.tags.get(layout.VERSION_TAG)
        version = next((v for v in versions if v.tag == wanted), None) if wanted else versions[-1]
        if version is None:
            raise dg.Failure(f"{wanted} is not a version Trainyard published; nothing is exported for it",
                             allow_retries=False)
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
        tags=layout.dagster_tags(tenant.name, dataset.name),
    )

    version_sensor_name = f"{tenant.name}__{dataset.name}__version_sensor"

    @dg.sensor(name=version_sensor_name, job=version_job,
               minimum_interval_seconds=settings.sensor_interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Triggers what depends on a dataset version (the training manifest) when a new "
                           f"{dataset.name}/v<N> tag appears on main.")
    def version_sensor(context: dg.SensorEvaluationContext, lakefs: LakeFSResource, approvals: ApprovalsResource,
                       alerts: AlertsResource) -> dg.SensorResult:
        with alerts.watch_tick(version_sensor_name, tenant=tenant.name, dataset=dataset.name,
                               channel=tenant.slack_channel):
            cursor = json.loads(context.cursor) if context.cursor else {}
            cursor = {"seen": cursor} if isinstance(cursor, int) else cursor  # the cursor of earlier releases
            seen, flagged = int(cursor.get("seen", 0)), set(cursor.get("foreign", []))
            try:
                check = trusted_versions(lakefs.repository(tenant.lakefs_repository), tenant.name, dataset.name,
                                         approvals.store())
            except RefNotFound:  # the repository appears with the first batch
                return dg.SensorResult(skip_reason="no repository yet")
            for version in check.foreign:  # alerted once per tag and commit, before the cursor remembers it
                if f"{version.tag}@{version.commit_id}" not in flagged:
                    alerts.router().raise_alert(untrusted_version_alert(
                        tenant, dataset.name, version, check.recorded.get(version.tag), alerts.playbook_base_url))
                    context.log.warning(f"ignoring {version.tag} on {version.commit_id[:12]}: "
                                        "not a Trainyard version")
                    flagged.add(f"{version.tag}@{version.commit_id}")
            new = [v for v in check.trusted if v.number > seen]
            return dg.SensorResult(
                run_requests=[dg.RunRequest(run_key=v.tag, tags={layout.VERSION_TAG: v.tag}) for v in new],
                cursor=json.dumps({"seen": max([seen, *(v.number for v in new)]), "foreign": sorted(flagged)}),
                skip_reason=None if new else f"no version after v{seen}",
            )

    return dg.Definitions(assets=[training_manifest_asset], jobs=[version_job], sensors=[version_sensor])
