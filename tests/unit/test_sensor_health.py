"""A sensor tick that keeps failing is an incident: counted in the platform database, alerted from the threshold
on, throttled while it lasts, resolved by the next good tick -- and the tick's own error is never swallowed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dagster_project.alerts import AlertKind, AlertOutbox, AlertRouter, IncidentStatus, SensorHealth, watched_tick
from dagster_project.alerts.health import sensor_failing_key
from dagster_project.alerts.outbox import MessageType
from dagster_project.db import make_engine

SENSOR = "northbank__support_intents__landing_sensor"
T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


@pytest.fixture
def parts(tmp_path: Path) -> tuple[SensorHealth, AlertRouter]:
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    return SensorHealth(make_engine(url)), AlertRouter(AlertOutbox(url), throttle=timedelta(minutes=60))


def _tick(health: SensorHealth, router: AlertRouter, error: Exception | None = None) -> None:
    with watched_tick(health, router, SENSOR, threshold=3, tenant="northbank", dataset="support_intents",
                      channel="#northbank-oncall", playbook_base_url="https://example.test/playbooks"):
        if error is not None:
            raise error


def _fail(health: SensorHealth, router: AlertRouter, n: int = 1) -> None:
    for _ in range(n):
        error = ConnectionError("S3 refused the listing")
        with pytest.raises(ConnectionError) as raised:
            _tick(health, router, error)
        assert raised.value is error  # Dagster still sees the tick's own error and keeps its cursor


def test_failures_below_the_threshold_are_counted_but_not_alerted(parts) -> None:
    health, router = parts
    _fail(health, router, 2)
    assert router.outbox.messages() == []
    assert health.recovered(SENSOR) == 2


def test_the_third_failure_in_a_row_alerts_once_and_a_good_tick_resolves_it(parts) -> None:
    health, router = parts
    _fail(health, router, 3)
    [message] = router.outbox.messages()
    alert = message.alert
    assert alert.kind is AlertKind.SENSOR_FAILING and alert.value == 3 and alert.channel == "#northbank-oncall"
    assert alert.details["sensor"] == SENSOR and "S3 refused the listing" in alert.details["last_error"]
    assert alert.playbook_url == "https://example.test/playbooks/sensor_failing.md"

    _fail(health, router, 5)  # still failing: counted on the incident, no new message within the throttle
    assert len(router.outbox.messages()) == 1
    assert router.outbox.incident(sensor_failing_key(SENSOR)).occurrences == 6

    _tick(health, router)
    recovery = [m for m in router.outbox.messages() if m.message_type is MessageType.RECOVERY]
    assert len(recovery) == 1 and SENSOR in recovery[0].payload["resolved_by"]
    assert router.outbox.incident(sensor_failing_key(SENSOR)).status is IncidentStatus.RESOLVED

    _fail(health, router, 1)  # a new streak starts from one
    assert len(router.outbox.messages()) == 2


def test_a_good_tick_with_no_streak_writes_nothing(parts) -> None:
    health, router = parts
    _tick(health, router)
    assert router.outbox.messages() == [] and router.outbox.incident(sensor_failing_key(SENSOR)) is None


def test_the_streak_keeps_when_it_started(parts) -> None:
    health, _ = parts
    health.failed(SENSOR, "first", now=T0)
    streak = health.failed(SENSOR, "second", now=T0 + timedelta(minutes=2))
    assert (streak.failures, streak.first_failed_at, streak.last_error) == (2, T0, "second")


def test_when_the_database_is_down_too_the_ticks_error_is_raised_with_a_note(parts) -> None:
    health, router = parts

    class DownHealth(SensorHealth):
        def __init__(self) -> None:  # no engine: every call fails as a dead database would
            pass

        def failed(self, sensor: str, error: str, now: datetime | None = None):
            raise OSError("connection refused")

    error = TimeoutError("listing timed out")
    with pytest.raises(TimeoutError) as raised:
        _tick(DownHealth(), router, error)
    assert raised.value is error and any("could not be counted" in note for note in error.__notes__)
