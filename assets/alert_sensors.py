"""Sensors that turn run failures into Slack alerts and deliver the alert outbox.

Quality checks raise their own alerts where they are evaluated (:mod:`dagster_project.gates.notify`), with the
typed result in hand. What is left for sensors: a run that failed for any *other* reason (a dependency down, a
bug, a conservation error), which no step could announce -- a run whose failure already raised its own alert
carries the ``trainyard/alerted`` tag and is skipped -- and delivery: alerts go to the outbox in the platform
database first and the delivery sensor sends them, so a Slack outage or rate limit delays messages but loses
none.
"""

# No `from __future__ import annotations`: Dagster inspects the real annotations of sensor functions.
import dagster as dg

from dagster_project import layout
from dagster_project.alerts import Alert, AlertKind, playbook_url
from dagster_project.settings import Settings
from dagster_project.tenants import TenantsConfig
from resources.slack import AlertsResource, SlackResource

RUN_FAILURE_ALERT_SENSOR = "batch_run_failure_alert_sensor"
ALERT_DELIVERY_SENSOR = "alert_delivery_sensor"


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
        batch_id = run.tags.get("dagster/partition")
        error = context.failure_event.message if context.failure_event else "run failed"
        alerts.router().raise_alert(Alert(
            kind=AlertKind.RUN_FAILED, tenant=tenant, dataset=dataset, batch_id=batch_id,
            branch=layout.batch_branch(dataset, batch_id) if batch_id else None,
            title=f"batch run failed: {tenant}/{dataset}" + (f" batch {batch_id}" if batch_id else ""),
            metric="run", details={"error": (error or "run failed")[:1500], "job": run.job_name},
            playbook_url=playbook_url(AlertKind.RUN_FAILED, alerts.playbook_base_url),
            run_url=alerts.run_url(run.run_id), channel=channels[tenant]))

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

    return dg.Definitions(sensors=[batch_run_failure_alert_sensor, alert_delivery_sensor])
