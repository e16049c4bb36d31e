"""Sensors that turn the outside world into runs.

The landing sensor lists a dataset's incoming drops, registers each complete drop as a batch partition and
requests one run for it. The partition registry is the source of truth for "already seen" (so a restarted
daemon or a re-uploaded drop never starts a second batch); the cursor keeps the newest drop registered and the
drops still waiting for their manifest, which the sensor reports on every tick.
"""

# No `from __future__ import annotations` here: Dagster inspects the real annotations of asset and sensor
# functions to find the context and resource parameters.


import json

import dagster as dg

from dagster_project import layout
from dagster_project.clock import utcnow
from dagster_project.settings import Settings
from dagster_project.stages.landing import list_drops
from dagster_project.tenants import DatasetConfig, TenantConfig
from resources.object_storage import ObjectStorageResource


def build_landing_sensor(tenant: TenantConfig, dataset: DatasetConfig, job_name: str,
                         partitions_def: dg.DynamicPartitionsDefinition, settings: Settings) -> dg.SensorDefinition:
    @dg.sensor(
        name=layout.landing_sensor_name(tenant.name, dataset.name),
        job_name=job_name,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts one batch per complete drop under "
                    f"s3://{settings.landing_bucket}/{layout.incoming_prefix(tenant.landing_prefix, dataset.name)}",
    )
    def landing_sensor(context: dg.SensorEvaluationContext, landing: ObjectStorageResource) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        drops = list_drops(landing.client(), landing.landing_bucket, tenant.landing_prefix, dataset.name)
        known = set(context.instance.get_dynamic_partitions(partitions_def.name))
        now, grace = utcnow(), landing.manifest_grace
        new = [d for d in drops if d.batch_id not in known and d.is_ready(now, grace)]
        waiting = [d.name for d in drops if d.batch_id not in known and not d.is_ready(now, grace)]
        if waiting:
            context.log.info(f"{len(waiting)} drop(s) waiting for manifest.json: {', '.join(waiting[:10])}")
        if new:
            cursor["last_registered"] = max(new, key=lambda d: d.last_modified).batch_id
            cursor["last_registered_at"] = now.isoformat()
        cursor["waiting_for_manifest"] = waiting
        run_requests = [
            dg.RunRequest(
                run_key=d.batch_id,
                partition_key=d.batch_id,
                tags={"trainyard/drop": d.uri, "trainyard/manifest": "present" if d.manifest_file else "missing"},
            )
            for d in new
        ]
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=[partitions_def.build_add_request([d.batch_id for d in new])] if new else [],
            cursor=json.dumps(cursor, sort_keys=True),
            skip_reason=None if new else f"no new complete drops ({len(drops)} seen, {len(waiting)} waiting)",
        )

    return landing_sensor
