"""Time, the one way the platform keeps it: timezone-aware UTC everywhere.

Why a module: alerts, approvals and landing all store and compare timestamps, and SQLite (the embedded demo's
database) hands datetimes back without a timezone. They are UTC by construction, so reading them back means
attaching UTC, never guessing a local zone; one helper does that for every table.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime (as SQLite returns it) is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)
