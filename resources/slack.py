"""Slack and the alert outbox as Dagster resources.

Why slack-sdk directly rather than dagster-slack: dagster-slack's resource cannot take a ``base_url``, so it can
neither talk to the local Slack receiver used by the demo and the tests nor to a proxy. Why two resources: the
outbox (``AlertsResource``) is written by every sensor and run that raises an alert, while only the delivery
sensor needs a Slack token (``SlackResource``); keeping them apart keeps the token out of everything else.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import timedelta

import dagster as dg

from dagster_project.alerts import AlertKind, AlertRouter, SlackSender, playbook_url, watched_tick
from resources.platform_db import PlatformDatabaseResource


class SlackResource(dg.ConfigurableResource):
    """The Slack Web API for posting alerts; point ``base_url`` at the local receiver for the demo and tests."""

    token: str
    """Bot token (``xoxb-...``) with ``chat:write``; pass it as ``dg.EnvVar("TRAINYARD_SLACK_BOT_TOKEN")``."""
    base_url: str = "https://slack.com/api/"
    """Slack Web API base URL, ending in ``/api/``."""
    acknowledge_button: bool = False
    """Alerts carry an *Acknowledge* button (the Trainyard service receives Slack's interactions)."""

    def sender(self) -> SlackSender:
        """A sender with slack-sdk's own retries disabled: the alert outbox schedules retries."""
        return SlackSender(token=self.token, base_url=self.base_url)


class AlertsResource(dg.ConfigurableResource):
    """The alert outbox and incident tables, and what every alert links to (playbooks, Dagster runs)."""

    database: PlatformDatabaseResource
    throttle_minutes: float = 60
    """An open incident is re-notified at most once per this many minutes; repeats in between are counted."""
    playbook_base_url: str
    """Web URL of the ``ops_playbooks`` folder; alerts link ``<playbook_base_url>/<kind>.md``."""
    dagster_url: str = "http://127.0.0.1:3000"
    """Dagster UI base URL, for the run links in alerts."""
    stalled_run_minutes: float = 30
    """A STARTED batch run without a new event for this long is reported as stalled."""
    sensor_failures_before_alert: int = 3
    """A sensor whose ticks fail this many times in a row raises ``sensor_failing`` (resolved when one succeeds)."""
    platform_channel: str = "#trainyard-platform-oncall"
    """Where alerts about the platform itself go (sensors that serve every tenant)."""

    @property
    def stalled_after(self) -> timedelta:
        return timedelta(minutes=self.stalled_run_minutes)

    def router(self) -> AlertRouter:
        """Raise, resolve and deliver alerts."""
        return AlertRouter(self.database.outbox(), throttle=timedelta(minutes=self.throttle_minutes))

    def watch_tick(self, sensor: str, *, tenant: str = "platform", dataset: str = "all datasets",
                   channel: str | None = None) -> AbstractContextManager[None]:
        """Wrap a sensor tick: repeated failures raise ``sensor_failing`` to the tenant's (or the platform's)
        channel; see :mod:`dagster_project.alerts.health`."""
        return watched_tick(self.database.sensor_health(), self.router(), sensor,
                            threshold=self.sensor_failures_before_alert, tenant=tenant, dataset=dataset,
                            channel=channel or self.platform_channel, playbook_base_url=self.playbook_base_url)

    def playbook_url(self, kind: AlertKind | str) -> str:
        """The playbook link for an alert kind, to put into :class:`~dagster_project.alerts.Alert`."""
        return playbook_url(kind, self.playbook_base_url)

    def run_url(self, run_id: str | None) -> str | None:
        return f"{self.dagster_url.rstrip('/')}/runs/{run_id}" if run_id else None
