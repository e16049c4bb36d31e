"""The platform's own database (alert outbox, incidents, approvals): engines and idempotent table creation.

PostgreSQL in every shared deployment (optionally in a schema of its own next to Dagster's tables), SQLite for
the embedded demo. Tables are created on first use, safely when several processes start at once.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, ProgrammingError


def make_engine(url: str | sa.URL) -> Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # Wait for the write lock instead of failing when a sensor and a run write at the same time.
        return sa.create_engine(parsed, connect_args={"timeout": 30})
    return sa.create_engine(parsed, pool_pre_ping=True)


def create_tables(engine: Engine, metadata: sa.MetaData, schema: str | None) -> None:
    """Create the schema and tables if missing; a concurrent creator winning the race is fine."""
    if schema is not None and engine.dialect.name != "postgresql":
        raise ValueError(f"schema={schema!r} needs PostgreSQL; {engine.dialect.name} has no schemas")
    for attempt in range(3):
        try:
            with engine.begin() as conn:
                if schema is not None:
                    conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
                metadata.create_all(conn, checkfirst=True)
            return
        except (IntegrityError, ProgrammingError):
            if attempt == 2:
                raise
