"""Alerting for on-call: one actionable Slack message per incident, written to a database outbox first.

The package, by concern: :mod:`.model` (what an alert is), :mod:`.blocks` (how it reads in Slack), :mod:`.outbox`
(where it waits), :mod:`.router` (raising with incidents and throttling, delivery with retries), :mod:`.health`
(sensors whose ticks keep failing) and :mod:`.slack` (the slack-sdk sender). It is framework-free -- gates,
sensors and the CLI raise alerts, and none of that should
need Dagster to be tested; ``resources/slack.py`` wraps it for Dagster.
"""

from dagster_project.alerts.blocks import describe_deviation, format_blocks, format_recovery, render
from dagster_project.alerts.health import (
    FailureStreak,
    SensorHealth,
    sensor_failing_alert,
    sensor_failing_key,
    watched_tick,
)
from dagster_project.alerts.model import (
    DEFAULT_SEVERITY,
    PLAYBOOK_DIR,
    Alert,
    AlertKind,
    Severity,
    derive_dedupe_key,
    playbook_path,
    playbook_url,
)
from dagster_project.alerts.outbox import (
    AlertOutbox,
    Incident,
    IncidentStatus,
    MessageType,
    OutboxMessage,
    OutboxStatus,
)
from dagster_project.alerts.router import (
    AlertDecision,
    AlertRouter,
    Decision,
    DeliveryReport,
    FailureKind,
    Sender,
    SendFailure,
    backoff_delay,
    classify_send_error,
)
from dagster_project.alerts.runs import is_stalled, run_failed_alert, run_stalled_alert, stalled_key
from dagster_project.alerts.slack import SlackSender

__all__ = [
    "Alert", "AlertDecision", "AlertKind", "AlertOutbox", "AlertRouter", "DEFAULT_SEVERITY", "Decision",
    "DeliveryReport", "FailureKind", "FailureStreak", "Incident", "IncidentStatus", "MessageType", "OutboxMessage",
    "OutboxStatus", "PLAYBOOK_DIR", "SendFailure", "Sender", "SensorHealth", "Severity", "SlackSender",
    "backoff_delay", "classify_send_error", "derive_dedupe_key", "describe_deviation", "format_blocks",
    "format_recovery", "is_stalled", "playbook_path", "playbook_url", "render", "run_failed_alert",
    "run_stalled_alert", "sensor_failing_alert", "sensor_failing_key", "stalled_key", "watched_tick",
]
