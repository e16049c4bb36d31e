"""The platform's own database (alert outbox, incidents, approvals): engines, idempotent table creation, locks.

PostgreSQL in every shared deployment (optionally in a schema of its own next to Dagster's tables), SQLite for
the embedded demo. Tables are created on first use, safely when several processes start at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, ProgrammingError


def make_engine(url: str | sa.URL) -> Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":  # the embedded default lives under TRAINYARD_HOME
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
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


class LockBusy(RuntimeError):
    """A non-blocking :func:`named_lock` found the lock held by someone else."""


_LOCAL_LOCKS: dict[str, threading.Lock] = {}
_LOCAL_LOCKS_GUARD = threading.Lock()


@contextmanager
def named_lock(engine: Engine, name: str, blocking: bool = True) -> Iterator[None]:
    """Hold the lock ``name`` across processes that share the platform database.

    PostgreSQL: a session advisory lock on a connection of its own (released by the server if this process dies).
    SQLite (the embedded demo, one machine): an exclusive ``flock`` on a file next to the database, which the
    kernel releases if the process dies; an in-memory database falls back to a lock in this process.
    ``blocking=False`` raises :class:`LockBusy` instead of waiting.
    """
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    if engine.dialect.name == "postgresql":
        key = int.from_bytes(digest[:8], "big", signed=True)
        with engine.connect() as conn:
            if blocking:
                conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            elif not conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
                raise LockBusy(f"lock {name!r} is held")
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        with _LOCAL_LOCKS_GUARD:
            lock = _LOCAL_LOCKS.setdefault(name, threading.Lock())
        if not lock.acquire(blocking=blocking):
            raise LockBusy(f"lock {name!r} is held")
        try:
            yield
        finally:
            lock.release()
        return
    path = Path(database).resolve().with_name(f"{Path(database).name}.{digest[:8].hex()}.lock")
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise LockBusy(f"lock {name!r} is held") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
