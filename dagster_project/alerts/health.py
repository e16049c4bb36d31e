"""Sensor ticks that keep failing, counted in the platform database, and the alert they raise.

Why: a sensor tick that raises (S3 refusing while the landing sensor lists drops, lakeFS down under the version
sensor) is marked failed in the Dagster UI and tried again at the next interval -- and tells no one. While it
fails, new drops are not started, new versions are not exported and run failures are not alerted. One failed
tick is usually a blip; ``threshold`` failures in a row are an incident. The count must outlive the tick (a
failed tick keeps no cursor), so it lives in a table; a tick that succeeds again clears it and resolves the
incident.

If the platform database itself is the dependency that is down, the failure cannot be counted here; Dagster's
own storage (the same PostgreSQL in every deployment) is then down too, and the daemon's own health check is
what notices.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dagster_project.alerts.model import Alert, AlertKind, playbook_url
from dagster_project.alerts.router import AlertRouter
from dagster_project.clock import as_utc, utcnow
from dagster_project.db import create_tables

SENSOR_FAILURES_TABLE = "trainyard_sensor_failures"


@dataclass(frozen=True)
class FailureStreak:
    sensor: str
    failures: int
    first_failed_at: datetime
    last_error: str


class SensorHealth:
    """Consecutive failed ticks per sensor (a row exists only while a sensor is failing)."""

    def __init__(self, engine: Engine, schema: str | None = None) -> None:
        self.engine = engine
        self.metadata = sa.MetaData(schema=schema)
        self.table = sa.Table(
            SENSOR_FAILURES_TABLE, self.metadata,
            sa.Column("sensor", sa.String(255), primary_key=True),
            sa.Column("failures", sa.Integer(), nullable=False),
            sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("last_error", sa.Text(), nullable=False),
        )
        create_tables(engine, self.metadata, schema)

    def failed(self, sensor: str, error: str, now: datetime | None = None) -> FailureStreak:
        """Count one more failed tick (a row lock serialises two daemons counting the same sensor)."""
        now, table = as_utc(now or utcnow()), self.table
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(table).where(table.c.sensor == sensor).with_for_update()).first()
            if row is None:
                conn.execute(sa.insert(table).values(sensor=sensor, failures=1, first_failed_at=now,
                                                     last_failed_at=now, last_error=error))
                return FailureStreak(sensor, 1, now, error)
            failures = row._mapping["failures"] + 1
            conn.execute(sa.update(table).where(table.c.sensor == sensor).values(
                failures=failures, last_failed_at=now, last_error=error))
            return FailureStreak(sensor, failures, as_utc(row._mapping["first_failed_at"]), error)

    def recovered(self, sensor: str) -> int:
        """Clear the streak after a good tick; returns how many ticks had failed in a row before it."""
        table = self.table
        with self.engine.begin() as conn:
            failures = conn.execute(sa.select(table.c.failures).where(table.c.sensor == sensor)).scalar()
            if failures:
                conn.execute(sa.delete(table).where(table.c.sensor == sensor))
        return int(failures or 0)


def sensor_failing_key(sensor: str) -> str:
    return f"{AlertKind.SENSOR_FAILING.value}:{sensor}"


def sensor_failing_alert(streak: FailureStreak, *, tenant: str, dataset: str, channel: str,
                         playbook_base_url: str) -> Alert:
    return Alert(
        kind=AlertKind.SENSOR_FAILING, tenant=tenant, dataset=dataset,
        title=f"sensor {streak.sensor} has failed {streak.failures} ticks in a row",
        metric="consecutive_failed_ticks", value=streak.failures,
        details={"sensor": streak.sensor, "failing_since": streak.first_failed_at.isoformat(),
                 "last_error": streak.last_error[:1500],
                 "effect": "what this sensor watches is not acted on until a tick succeeds again"},
        dedupe_key=sensor_failing_key(streak.sensor),
        playbook_url=playbook_url(AlertKind.SENSOR_FAILING, playbook_base_url), channel=channel)


@contextmanager
def watched_tick(health: SensorHealth, router: AlertRouter, sensor: str, *, threshold: int, tenant: str,
                 dataset: str, channel: str, playbook_base_url: str) -> Iterator[None]:
    """Run one sensor tick; count it if it raises (alerting from ``threshold`` failures in a row on, throttled by
    the incident), clear the count and resolve the incident when it succeeds. The tick's own error is always
    re-raised, so Dagster still marks the tick failed and keeps its cursor where it was."""
    try:
        yield
    except Exception as exc:
        try:
            streak = health.failed(sensor, f"{type(exc).__name__}: {exc}")
            if streak.failures >= threshold:
                router.raise_alert(sensor_failing_alert(streak, tenant=tenant, dataset=dataset, channel=channel,
                                                        playbook_base_url=playbook_base_url))
        except Exception as unrecorded:  # the database is down too: the tick's own error is what matters
            exc.add_note(f"the failed tick could not be counted: {unrecorded}")
        raise
    if health.recovered(sensor):  # resolving an incident that was never opened does nothing
        router.resolve(sensor_failing_key(sensor), resolved_by=f"sensor {sensor} ticked successfully")
