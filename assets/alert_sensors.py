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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg

from dagster_project import layout
from dagster_project.alerts import Alert, AlertKind, is_stalled, run_failed_alert, run_stalled_alert
from dagster_project.clock import as_utc, utcnow
from dagster_project.settings import Settings
from dagster_project.tenants import TenantsConfig
from resources.slack import AlertsResource, SlackResource

RUN_FAILURE_ALERT_SENSOR = "batch_run_failure_alert_sensor"
STALLED_RUN_ALERT_SENSOR = "stalled_run_alert_sensor"
ALERT_DELIVERY_SENSOR = "alert_delivery_sensor"


@dataclass(frozen=True)
class FailureCursor:
    """Where the failed-run scan resumes: runs updated after ``updated_after``, minus those already handled.

    ``RunsFilter.updated_after`` is exclusive and timestamps can tie, so the cursor stays one second behind the
    newest handled run and remembers the runs handled since (pruned once the cursor has passed them)."""

    updated_after: datetime | None = None
    done: dict[str, str] = field(default_factory=dict)
    """Run id -> its update time (ISO), for runs handled at or after ``updated_after``."""

    @classmethod
    def from_json(cls, text: str | None) -> "FailureCursor":
        if not text:
            return cls()
        data = json.loads(text)
        return cls(datetime.fromisoformat(data["updated_after"]) if data.get("updated_after") else None,
                   dict(data.get("done", {})))

    def past(self, updated: datetime, run_id: str) -> "FailureCursor":
        updated = as_utc(updated)
        floor = updated - timedelta(seconds=1)
        if self.updated_after is not None:
            floor = max(floor, self.updated_after)
        done = {r: t for r, t in {**self.done, run_id: updated.isoformat()}.items()
                if datetime.fromisoformat(t) > floor}
        return FailureCursor(floor, done)

    def to_json(self) -> str:
        return json.dumps({"updated_after": self.updated_after.isoformat() if self.updated_after else None,
                           "done": dict(sorted(self.done.items()))})


def owner_of(run: dg.DagsterRun) -> tuple[str | None, str | None]:
    """The tenant and dataset a run belongs to: its tags, or -- for a run launched from the UI's Materialize
    button, which carries no job tags -- the ``[tenant, dataset, stage]`` keys of the assets it materializes."""
    tenant, dataset = run.tags.get(layout.TENANT_TAG), run.tags.get(layout.DATASET_TAG)
    if tenant and dataset:
        return tenant, dataset
    owners = {tuple(key.path[:2]) for key in (run.asset_selection or ()) if len(key.path) == 3}
    return next(iter(owners)) if len(owners) == 1 else (None, None)


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    """What the run's failure event says (or a plain 'run failed')."""
    events = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE, limit=1,
                                          ascending=False).records
    message = (events[0].event_log_entry.message if events else "") or "run failed"
    steps = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1,
                                         ascending=False).records
    event = steps[0].event_log_entry.dagster_event if steps else None
    error = event.step_failure_data.error if event is not None and event.step_failure_data else None
    return f"{message}\n{event.step_key}: {error.message.strip()}" if error is not None else message


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
    by_name = {tenant.name: tenant for tenant in tenants.tenants}

    def mentions(alert: Alert) -> tuple[str, ...]:
        """Who a message notifies, from the tenants file as it is now (owners change)."""
        tenant = by_name.get(alert.tenant)
        return tenant.mentions_for(alert.kind is AlertKind.APPROVAL_REQUESTED) if tenant else ()

    @dg.sensor(
        name=RUN_FAILURE_ALERT_SENSOR,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        description="Alerts on-call when a batch run fails for a reason other than a failed blocking gate "
                    "(those raise their own alert, with their metric, where the gate is evaluated).",
    )
    def batch_run_failure_alert_sensor(context: dg.SensorEvaluationContext, alerts: AlertsResource) -> dg.SkipReason:
        with alerts.watch_tick(RUN_FAILURE_ALERT_SENSOR):
            # Not dg.run_failure_sensor: that advances its cursor past a run even when the alert could not be written
            # (the platform database down), losing the alert for good. This cursor moves only past runs whose alert
            # is in the outbox; if raising fails, the tick fails and the next tick starts from the same run.
            cursor = FailureCursor.from_json(context.cursor)
            router, alerted = alerts.router(), 0
            records = context.instance.get_run_records(
                filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], updated_after=cursor.updated_after),
                order_by="update_timestamp", ascending=True, limit=100)
            for record in records:
                run = record.dagster_run
                if run.run_id in cursor.done:
                    continue
                tenant, dataset = owner_of(run)
                if not run.tags.get(layout.ALERTED_TAG):  # every failed run reaches someone
                    known = tenant in channels and dataset
                    router.raise_alert(run_failed_alert(
                        tenant=tenant if known else "platform", dataset=dataset if known else run.job_name,
                        batch_id=run.tags.get("dagster/partition"), job=run.job_name,
                        error=failure_message(context.instance, run.run_id),
                        channel=channels[tenant] if known else alerts.platform_channel,
                        playbook_base_url=alerts.playbook_base_url, run_url=alerts.run_url(run.run_id)))
                    alerted += 1
                cursor = cursor.past(record.update_timestamp, run.run_id)
                context.update_cursor(cursor.to_json())
            return dg.SkipReason(f"{alerted} failed batch runs alerted")

    @dg.sensor(
        name=STALLED_RUN_ALERT_SENSOR,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts on-call when a batch run is STARTED but has logged nothing for a while (a killed or "
                    "hung run worker), and resolves the alert when the run ends.",
    )
    def stalled_run_alert_sensor(context: dg.SensorEvaluationContext, alerts: AlertsResource) -> dg.SkipReason:
        with alerts.watch_tick(STALLED_RUN_ALERT_SENSOR):
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
        with alerts.watch_tick(ALERT_DELIVERY_SENSOR):
            report = alerts.router().deliver(slack.sender(), mentions=mentions,
                                             acknowledge_button=slack.acknowledge_button)
            for error in report.errors:
                context.log.warning(error)
            return dg.SkipReason(f"sent {report.sent}, retrying {report.retried}, failed {report.failed}"
                                 + (f", next due {report.next_due.isoformat()}" if report.next_due else ""))

    return dg.Definitions(sensors=[batch_run_failure_alert_sensor, stalled_run_alert_sensor, alert_delivery_sensor])
