"""Sensors that turn the outside world into runs.

The landing sensor lists a dataset's incoming drops, registers each complete drop as a batch partition and
requests one run for it. The partition registry is the source of truth for "already seen" (so a restarted
daemon or a re-uploaded drop never starts a second batch); the cursor keeps the newest drop registered, the
drops still waiting for their manifest, which the sensor reports on every tick, and the objects it has already
alerted on as not ingested (outside every drop folder, newer than their drop's manifest, or added to a drop after
its batch was registered).
Repeated failing ticks (S3 refusing the listing) raise ``sensor_failing``.
"""

# No `from __future__ import annotations` here: Dagster inspects the real annotations of asset and sensor
# functions to find the context and resource parameters.


import json
from datetime import datetime

import dagster as dg

from dagster_project import layout
from dagster_project.clock import utcnow
from dagster_project.settings import Settings
from dagster_project.stages.landing import (
    Drop,
    Landing,
    NotIngested,
    arrived_after,
    late_for_manifest,
    not_ingested_alert,
    scan_incoming,
)
from dagster_project.tenants import DatasetConfig, TenantConfig
from resources.object_storage import ObjectStorageResource
from resources.slack import AlertsResource


def _registered_at(instance: dg.DagsterInstance, job_name: str, batch_id: str) -> datetime | None:
    """When the batch's first run was created: objects of its drop newer than that were never read by it."""
    records = instance.get_run_records(filters=dg.RunsFilter(job_name=job_name, tags={"dagster/partition": batch_id}),
                                       order_by="create_timestamp", ascending=True, limit=1)
    return records[0].create_timestamp if records else None


def _changed_since(drop: Drop, since: datetime | None) -> bool:
    """Whether an object of the drop was uploaded since the last good tick listed (S3 times have whole seconds):
    only such a drop can have gained objects its batch never read -- a file, or a manifest uploaded again. Saves
    a run lookup per known drop and tick; the first tick (no ``since``) looks at every drop once."""
    return since is None or any(f.last_modified >= since.replace(microsecond=0) for f in drop.objects())


def _not_ingested(instance: dg.DagsterInstance, job_name: str, scan: Landing, known: set[str],
                  starting: set[str], since: datetime | None) -> list[NotIngested]:
    """The objects no batch reads: outside every drop, newer than their drop's manifest (the batch quarantines
    them), or newer than their drop's batch."""
    found = list(scan.outside)
    for drop in scan.drops:
        if drop.batch_id not in known and drop.batch_id not in starting:
            continue  # still waiting for its manifest: nothing is late yet
        late = {n.file.key: n for n in late_for_manifest(drop)}
        if drop.batch_id in known and _changed_since(drop, since):
            registered = _registered_at(instance, job_name, drop.batch_id)
            if registered is not None:
                late.update((n.file.key, n) for n in arrived_after(drop, registered))
        found.extend(late.values())
    return found


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
    def landing_sensor(context: dg.SensorEvaluationContext, landing: ObjectStorageResource,
                       alerts: AlertsResource) -> dg.SensorResult:
        with alerts.watch_tick(layout.landing_sensor_name(tenant.name, dataset.name), tenant=tenant.name,
                               dataset=dataset.name, channel=tenant.slack_channel):
            return _tick(context, landing, alerts)

    def _tick(context: dg.SensorEvaluationContext, landing: ObjectStorageResource,
              alerts: AlertsResource) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        now, grace = utcnow(), landing.manifest_grace  # before listing: the next tick looks at what came after
        scan = scan_incoming(landing.client(), landing.landing_bucket, tenant.landing_prefix, dataset.name)
        drops = scan.drops
        known = set(context.instance.get_dynamic_partitions(partitions_def.name))
        new = [d for d in drops if d.batch_id not in known and d.is_ready(now, grace)]
        waiting = [d.name for d in drops if d.batch_id not in known and not d.is_ready(now, grace)]
        if waiting:
            context.log.info(f"{len(waiting)} drop(s) waiting for manifest.json: {', '.join(waiting[:10])}")
        since = datetime.fromisoformat(cursor["listed_at"]) if "listed_at" in cursor else None
        not_ingested = _not_ingested(context.instance, job_name, scan, known, {d.batch_id for d in new}, since)
        listed = {f.key: f.version for f in [*(n.file for n in scan.outside), *(f for d in drops for f in d.objects())]}
        alerted = {key: version for key, version in cursor.get("not_ingested", {}).items()  # forgets removed and
                   if listed.get(key) == version}                                            # replaced objects
        fresh = [n for n in not_ingested if alerted.get(n.file.key) != n.file.version]
        if fresh:  # durably in the outbox before the cursor remembers the objects
            alerts.router().raise_alert(not_ingested_alert(
                tenant.name, dataset.name, tenant.slack_channel, fresh, f"s3://{landing.landing_bucket}/"
                f"{layout.incoming_prefix(tenant.landing_prefix, dataset.name)}", alerts.playbook_base_url))
            for item in fresh:
                context.log.warning(f"not ingested: s3://{landing.landing_bucket}/{item.file.key}: {item.reason}")
        if new:
            cursor["last_registered"] = max(new, key=lambda d: d.last_modified).batch_id
            cursor["last_registered_at"] = now.isoformat()
        cursor["waiting_for_manifest"] = waiting
        cursor["not_ingested"] = dict(sorted({**alerted, **{n.file.key: n.file.version for n in fresh}}.items()))
        cursor["listed_at"] = now.isoformat()
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
            skip_reason=None if new else f"no new complete drops ({len(drops)} seen, {len(waiting)} waiting"
                                         f"{f', {len(not_ingested)} objects not ingested' if not_ingested else ''})",
        )

    return landing_sensor
