"""Sensors that turn quality and run failures into Slack alerts on the tenant's on-call channel.

Why sensors: a failed *blocking* gate fails its run, but a failed WARN check does not, so run-failure hooks alone
would miss soft signals. One cursor sensor therefore reads every asset-check evaluation from the event log:
a failure raises an alert (``gate_failed`` for blocking gates, ``check_warning`` for WARN checks), a later pass
of the same check on the same batch resolves the incident with a recovery message. A run-failure sensor covers
runs that failed for any other reason. Alerts go to the PostgreSQL outbox first; the delivery sensor sends them,
so a Slack outage or rate limit delays messages but loses none.
"""

# No `from __future__ import annotations`: Dagster inspects the real annotations of sensor functions.
import dagster as dg
from dagster._core.events import DagsterEventType

from assets.factory import ALERTED_TAG
from dagster_project import layout
from dagster_project.alerts import Alert, AlertKind, check_alert, derive_dedupe_key, playbook_url
from dagster_project.settings import Settings
from dagster_project.tenants import TenantsConfig
from resources.slack import AlertsResource, SlackResource

CHECK_ALERT_SENSOR = "quality_check_alert_sensor"
RUN_FAILURE_ALERT_SENSOR = "batch_run_failure_alert_sensor"
ALERT_DELIVERY_SENSOR = "alert_delivery_sensor"
EVENTS_PER_TICK = 500


def _metadata_value(metadata: dict, name: str):
    value = metadata.get(name)
    return None if value is None else getattr(value, "value", value)


def build_alert_sensors(tenants: TenantsConfig, settings: Settings) -> list[dg.SensorDefinition]:
    channels = {tenant.name: tenant.slack_channel for tenant in tenants.tenants}

    def run_url(run_id: str | None) -> str | None:
        return f"{settings.dagster_url.rstrip('/')}/runs/{run_id}" if run_id else None

    @dg.sensor(
        name=CHECK_ALERT_SENSOR,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Raises a Slack alert for every failed quality check (blocking gates and WARN checks) and a "
                    "recovery message when the check passes again on the same batch.",
    )
    def quality_check_alert_sensor(context: dg.SensorEvaluationContext, alerts: AlertsResource) -> dg.SkipReason:
        cursor = int(context.cursor or 0)
        records = context.instance.get_event_records(
            dg.EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=cursor),
            limit=EVENTS_PER_TICK, ascending=True)
        router = alerts.router()
        raised = resolved = 0
        for record in records:
            cursor = record.storage_id
            evaluation = record.event_log_entry.dagster_event.event_specific_data
            path = evaluation.asset_key.path
            if len(path) != 3 or path[0] not in channels:
                continue
            tenant, dataset = path[0], path[1]
            batch_id = evaluation.partition or (context.instance.get_run_by_id(record.run_id).tags.get(
                "dagster/partition") if record.run_id else None)
            if evaluation.passed:
                for kind in (AlertKind.GATE_FAILED, AlertKind.CHECK_WARNING):
                    key = derive_dedupe_key(kind.value, tenant, dataset, evaluation.check_name, batch_id)
                    resolved += router.resolve(key, resolved_by=f"check passed in run {record.run_id}")
                continue
            metadata = dict(evaluation.metadata)
            alert = check_alert(
                tenant=tenant, dataset=dataset, batch_id=batch_id,
                branch=layout.batch_branch(dataset, batch_id) if batch_id else None,
                check=evaluation.check_name, blocking=evaluation.severity == dg.AssetCheckSeverity.ERROR,
                value=_metadata_value(metadata, "value"), threshold=_metadata_value(metadata, "threshold"),
                comparison=_metadata_value(metadata, "comparison"),
                worst=_metadata_value(metadata, "worst_offenders") or [],
                channel=channels[tenant], playbook_base_url=alerts.playbook_base_url, run_url=run_url(record.run_id))
            raised += router.raise_alert(alert).queued
        context.update_cursor(str(cursor))
        return dg.SkipReason(f"{len(records)} check evaluations read: {raised} alerts queued, {resolved} resolved")

    @dg.run_failure_sensor(
        name=RUN_FAILURE_ALERT_SENSOR,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        description="Alerts on-call when a batch run fails for a reason other than a failed blocking gate "
                    "(those are alerted, with their metric, by the quality check alert sensor).",
    )
    def batch_run_failure_alert_sensor(context: dg.RunFailureSensorContext, alerts: AlertsResource) -> None:
        run = context.dagster_run
        tenant, dataset = run.tags.get("trainyard/tenant"), run.tags.get("trainyard/dataset")
        if tenant not in channels or not dataset or run.tags.get(ALERTED_TAG):
            return
        evaluations = context.instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        if any(not e.dagster_event.event_specific_data.passed
               and e.dagster_event.event_specific_data.severity == dg.AssetCheckSeverity.ERROR for e in evaluations):
            return  # a blocking gate stopped the run: its own alert says which and by how much
        batch_id = run.tags.get("dagster/partition")
        error = context.failure_event.message if context.failure_event else "run failed"
        alerts.router().raise_alert(Alert(
            kind=AlertKind.RUN_FAILED, tenant=tenant, dataset=dataset, batch_id=batch_id,
            branch=layout.batch_branch(dataset, batch_id) if batch_id else None,
            title=f"batch run failed: {tenant}/{dataset}" + (f" batch {batch_id}" if batch_id else ""),
            metric="run", details={"error": error[:1500], "job": run.job_name},
            playbook_url=playbook_url(AlertKind.RUN_FAILED, alerts.playbook_base_url),
            run_url=run_url(run.run_id), channel=channels[tenant]))

    @dg.sensor(
        name=ALERT_DELIVERY_SENSOR,
        minimum_interval_seconds=min(settings.sensor_interval_seconds, 15),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends queued alerts from the outbox to Slack, honouring rate limits and retrying outages.",
    )
    def alert_delivery_sensor(context: dg.SensorEvaluationContext, alerts: AlertsResource,
                              slack: SlackResource) -> dg.SkipReason:
        report = alerts.router().deliver(slack.sender())
        for error in report.errors:
            context.log.warning(error)
        return dg.SkipReason(f"sent {report.sent}, retrying {report.retried}, failed {report.failed}"
                             + (f", next due {report.next_due.isoformat()}" if report.next_due else ""))

    return [quality_check_alert_sensor, batch_run_failure_alert_sensor, alert_delivery_sensor]
