"""Sensors that turn run failures into Slack alerts and deliver the alert outbox.

Quality checks raise their own alerts where they are evaluated (:mod:`dagster_project.gates.notify`), with the
typed result in hand. What is left for sensors: a run that failed for any *other* reason (a dependency down, a
bug, a conservation error), which no step could announce -- a run whose failure already raised its own alert
carries the ``trainyard/alerted`` tag and is skipped --, a run that stopped making progress without failing (a
killed worker never reports anything; :mod:`dagster_project.alerts.runs`), and delivery: alerts go to the
outbox in the platform database first and the delivery sensor sends them, so a Slack outage or rate limit delays
messages but loses none.
"""

# No `from __future__ import annotations`: Dagster inspects the real annotations of sensor functions.
import json
from datetime import UTC, datetime

import dagster as dg

from dagster_project import layout
from dagster_project.alerts import is_stalled, run_failed_alert, run_stalled_alert
from dagster_project.clock import as_utc, utcnow
from dagster_project.settings import Settings
from dagster_project.tenants import TenantsConfig
from resources.slack import AlertsResource, SlackResource

RUN_FAILURE_ALERT_SENSOR = "batch_run_failure_alert_sensor"
STALLED_RUN_ALERT_SENSOR = "stalled_run_alert_sensor"
ALERT_DELIVERY_SENSOR = "alert_delivery_sensor"


def last_progress(instance: dg.DagsterInstance, record: dg.RunRecord) -> datetime:
    """When the run last logged an event (or started, or was created, if it logged none)."""
    latest = instance.get_records_for_run(record.dagster_run.run_id, limit=1, ascending=False).records
    if latest:
        return datetime.fromtimestamp(latest[0].timestamp, UTC)
    if record.start_time:
        return datetime.fromtimestamp(record.start_time, UTC)
    return as_utc(record.create_timestamp)


def build_alert_definitions(tenants: TenantsConfig, settings: Settings) -> dg.Definitions:
    channels = {tenant.name: tenant.slack_channel for tenant in tenants.tenants}

    @dg.run_failure_sensor(
        name=RUN_FAILURE_ALERT_SENSOR,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        description="Alerts on-call when a batch run fails for a reason other than a failed blocking gate "
                    "(those raise their own alert, with their metric, where the gate is evaluated).",
    )
    def batch_run_failure_alert_sensor(context: dg.RunFailureSensorContext, alerts: AlertsResource) -> None:
        run = context.dagster_run
        tenant, dataset = run.tags.get(layout.TENANT_TAG), run.tags.get(layout.DATASET_TAG)
        if tenant not in channels or not dataset or run.tags.get(layout.ALERTED_TAG):
            return
        error = context.failure_event.message if context.failure_event else "run failed"
        alerts.router().raise_alert(run_failed_alert(
            tenant=tenant, dataset=dataset, batch_id=run.tags.get("dagster/partition"), job=run.job_name,
            error=error or "run failed", channel=channels[tenant], playbook_base_url=alerts.playbook_base_url,
            run_url=alerts.run_url(run.run_id)))

    @dg.sensor(
        name=STALLED_RUN_ALERT_SENSOR,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts on-call when a batch run is STARTED but has logged nothing for a while (a killed or "
                    "hung run worker), and resolves the alert when the run ends.",
    )
    def stalled_run_alert_sensor(context: dg.SensorEvaluationContext, alerts: AlertsResource) -> dg.SkipReason:
        alerted: dict[str, str] = json.loads(context.cursor) if context.cursor else {}  # run id -> dedupe key
        router, now = alerts.router(), utcnow()
        started = context.instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        running: set[str] = set()
        for record in started:
            run = record.dagster_run
            tenant, dataset = run.tags.get(layout.TENANT_TAG), run.tags.get(layout.DATASET_TAG)
            if tenant not in channels or not dataset:
                continue
            running.add(run.run_id)
            last = last_progress(context.instance, record)
            if run.run_id in alerted or not is_stalled(last, now, alerts.stalled_after):
                continue
            alert = run_stalled_alert(
                tenant=tenant, dataset=dataset, batch_id=run.tags.get("dagster/partition"), run_id=run.run_id,
                job=run.job_name, last_progress=last, now=now, channel=channels[tenant],
                playbook_base_url=alerts.playbook_base_url, run_url=alerts.run_url(run.run_id))
            router.raise_alert(alert)  # durably in the outbox before the cursor remembers it
            alerted[run.run_id] = alert.dedupe_key
        for run_id in [r for r in alerted if r not in running]:  # it ended: a failure has its own alert
            router.resolve(alerted.pop(run_id), resolved_by=f"run {run_id} is no longer running")
        context.update_cursor(json.dumps(alerted, sort_keys=True))
        return dg.SkipReason(f"{len(running)} batch runs in progress, {len(alerted)} stalled")

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

    return dg.Definitions(sensors=[batch_run_failure_alert_sensor, stalled_run_alert_sensor, alert_delivery_sensor])
