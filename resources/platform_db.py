"""The platform's own database as one Dagster resource: the alert outbox, incidents, sensor health and approvals
share it.

Why one resource: alerts and approvals live in the same database (PostgreSQL next to Dagster's tables in every
deployment, SQLite for the embedded demo), so they share one URL -- a secret, since it carries the password --
and one engine per process instead of a copy of the settings and a connection pool each.
"""

from __future__ import annotations

from functools import lru_cache

import dagster as dg
import sqlalchemy as sa

from dagster_project.alerts import AlertOutbox, SensorHealth
from dagster_project.db import make_engine
from dagster_project.publishing.approvals import ApprovalStore


@lru_cache(maxsize=8)
def _engine(url: str) -> sa.Engine:
    return make_engine(url)


@lru_cache(maxsize=8)
def _outbox(url: str, schema: str | None) -> AlertOutbox:
    """One idempotent table creation per process and database, not per sensor tick."""
    return AlertOutbox(url, schema=schema, engine=_engine(url))


@lru_cache(maxsize=8)
def _sensor_health(url: str, schema: str | None) -> SensorHealth:
    return SensorHealth(_engine(url), schema=schema)


@lru_cache(maxsize=8)
def _approvals(url: str, schema: str | None) -> ApprovalStore:
    return ApprovalStore(url, schema=schema, engine=_engine(url))


class PlatformDatabaseResource(dg.ConfigurableResource):
    """Where Trainyard keeps its own tables."""

    url: str
    """SQLAlchemy URL, e.g. ``postgresql+psycopg2://user:pw@host:5432/dagster``; pass it as
    ``dg.EnvVar("TRAINYARD_DATABASE_URL")``."""
    db_schema: str | None = None
    """PostgreSQL schema for Trainyard's tables, created if missing."""

    def outbox(self) -> AlertOutbox:
        return _outbox(self.url, self.db_schema)

    def sensor_health(self) -> SensorHealth:
        return _sensor_health(self.url, self.db_schema)

    def approvals(self) -> ApprovalStore:
        return _approvals(self.url, self.db_schema)
