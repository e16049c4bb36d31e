"""Where alerts wait for Slack: the outbox and incident tables, in the platform's own database.

Why an outbox: a quality gate fails inside a Dagster run or sensor tick, while Slack may be down, slow or
rate-limiting at that very moment. Posting directly would either lose the alert or block the run on Slack. So
raising an alert only writes a row -- in the same transaction that opens (or counts) the incident -- and a
separate delivery pass (:mod:`.router`) sends due rows and records what Slack answered. Rows are never deleted:
a message that failed permanently keeps its error for an operator to requeue.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from dagster_project.alerts.model import Alert
from dagster_project.clock import as_utc, opt_utc, utcnow
from dagster_project.db import create_tables, make_engine

OUTBOX_TABLE = "trainyard_alert_outbox"
INCIDENTS_TABLE = "trainyard_alert_incidents"
ACKS_TABLE = "trainyard_alert_acknowledgements"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED_PERMANENTLY = "failed_permanently"


class IncidentStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class MessageType(StrEnum):
    ALERT = "alert"
    RECOVERY = "recovery"
    ACKNOWLEDGEMENT = "acknowledgement"
    """Someone took the incident on; posted in the alert's thread."""


THREADED = (MessageType.RECOVERY, MessageType.ACKNOWLEDGEMENT)
"""Messages that belong in the original alert's Slack thread (and wait until it is delivered)."""


_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only
_TS = sa.DateTime(timezone=True)


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    dedupe_key: str
    kind: str
    channel: str
    message_type: MessageType
    payload: dict[str, Any]
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    sent_at: datetime | None
    last_error: str | None
    slack_ts: str | None

    @property
    def alert(self) -> Alert:
        return Alert.model_validate(self.payload["alert"])


@dataclass(frozen=True)
class Incident:
    dedupe_key: str
    kind: str
    channel: str
    status: IncidentStatus
    first_seen: datetime
    last_seen: datetime
    occurrences: int
    last_alert_id: int | None
    last_notified_at: datetime | None
    resolved_at: datetime | None
    resolved_by: str | None
    id: int = 0
    acknowledged_by: str | None = None
    """Who took the incident on since it (re)opened, if anyone."""
    acknowledged_at: datetime | None = None


class AlertOutbox:
    """The outbox and incident tables in any SQLAlchemy database (PostgreSQL in deployments, SQLite for the demo).

    Tables are created idempotently on construction; ``schema`` (PostgreSQL only) is created if missing, so the
    alert tables can live next to Dagster's own in the same database without mixing with them.
    """

    def __init__(self, url: str | sa.URL, schema: str | None = None, engine: Engine | None = None) -> None:
        self.engine = engine if engine is not None else make_engine(url)
        self.schema = schema
        if schema is not None and self.engine.dialect.name != "postgresql":
            raise ValueError(f"schema={schema!r} needs PostgreSQL; {self.engine.dialect.name} has no schemas")
        self.metadata = sa.MetaData(schema=schema)
        self.outbox = sa.Table(
            OUTBOX_TABLE, self.metadata,
            sa.Column("id", _ID, primary_key=True, autoincrement=True),
            sa.Column("dedupe_key", sa.String(512), nullable=False),
            sa.Column("kind", sa.String(64), nullable=False),
            sa.Column("channel", sa.String(255), nullable=False),
            sa.Column("payload", sa.JSON(), nullable=False),
            sa.Column("status", sa.String(32), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False, default=0),
            sa.Column("next_attempt_at", _TS, nullable=False),
            sa.Column("created_at", _TS, nullable=False),
            sa.Column("sent_at", _TS),
            sa.Column("last_error", sa.Text()),
            sa.Column("slack_ts", sa.String(64)),
            sa.Index(f"ix_{OUTBOX_TABLE}_due", "status", "next_attempt_at"),
            sa.Index(f"ix_{OUTBOX_TABLE}_dedupe_key", "dedupe_key"),
        )
        self.incidents = sa.Table(
            INCIDENTS_TABLE, self.metadata,
            sa.Column("id", _ID, primary_key=True, autoincrement=True),
            sa.Column("dedupe_key", sa.String(512), nullable=False, unique=True),
            sa.Column("kind", sa.String(64), nullable=False),
            sa.Column("channel", sa.String(255), nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("first_seen", _TS, nullable=False),
            sa.Column("last_seen", _TS, nullable=False),
            sa.Column("occurrences", sa.Integer(), nullable=False),
            sa.Column("last_alert_id", sa.BigInteger()),
            sa.Column("last_notified_at", _TS),
            sa.Column("resolved_at", _TS),
            sa.Column("resolved_by", sa.String(255)),
        )
        # Acknowledgements in a table of their own (append-only), so existing incident tables need no migration.
        self.acks = sa.Table(
            ACKS_TABLE, self.metadata,
            sa.Column("id", _ID, primary_key=True, autoincrement=True),
            sa.Column("dedupe_key", sa.String(512), nullable=False, index=True),
            sa.Column("actor", sa.String(255), nullable=False),
            sa.Column("note", sa.Text(), nullable=False, default=""),
            sa.Column("acknowledged_at", _TS, nullable=False),
        )
        self.create()

    def create(self) -> None:
        """Create the schema and tables if missing; safe when several processes start at once."""
        create_tables(self.engine, self.metadata, self.schema)

    def dispose(self) -> None:
        self.engine.dispose()

    def messages(self, status: OutboxStatus | str | None = None, dedupe_key: str | None = None) -> list[OutboxMessage]:
        """Outbox rows, oldest first (for dashboards, tests and operators)."""
        query = sa.select(self.outbox).order_by(self.outbox.c.id)
        if status is not None:
            query = query.where(self.outbox.c.status == str(status))
        if dedupe_key is not None:
            query = query.where(self.outbox.c.dedupe_key == dedupe_key)
        with self.engine.connect() as conn:
            return [self._message(row) for row in conn.execute(query)]

    def message(self, message_id: int) -> OutboxMessage | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.outbox).where(self.outbox.c.id == message_id)).first()
        return None if row is None else self._message(row)

    def incident(self, dedupe_key: str) -> Incident | None:
        """The incident with this dedupe key (or this numeric id, as Slack and ``trainyard alerts`` show it)."""
        column = self.incidents.c.id if dedupe_key.isdigit() else self.incidents.c.dedupe_key
        value = int(dedupe_key) if dedupe_key.isdigit() else dedupe_key
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.incidents).where(column == value)).first()
        return None if row is None else self._with_ack(self._incident(row))

    def incidents_list(self, status: IncidentStatus | None = None, limit: int = 200) -> list[Incident]:
        """Incidents, most recently seen first (``trainyard alerts``)."""
        query = sa.select(self.incidents).order_by(self.incidents.c.last_seen.desc()).limit(limit)
        if status is not None:
            query = query.where(self.incidents.c.status == status.value)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [self._with_ack(self._incident(row)) for row in rows]

    def _with_ack(self, incident: Incident) -> Incident:
        with self.engine.connect() as conn:
            ack = conn.execute(sa.select(self.acks).where(
                self.acks.c.dedupe_key == incident.dedupe_key, self.acks.c.acknowledged_at >= incident.first_seen)
                .order_by(self.acks.c.id.desc()).limit(1)).first()
        if ack is None:
            return incident
        return replace(incident, acknowledged_by=ack._mapping["actor"],
                       acknowledged_at=as_utc(ack._mapping["acknowledged_at"]))

    def requeue(self, message_id: int, now: datetime | None = None) -> bool:
        """Put a ``failed_permanently`` message back to ``pending`` once its cause (e.g. the channel) is fixed."""
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(self.outbox)
                .where(self.outbox.c.id == message_id, self.outbox.c.status == OutboxStatus.FAILED_PERMANENTLY.value)
                .values(status=OutboxStatus.PENDING.value, next_attempt_at=as_utc(now or utcnow())))
        return result.rowcount == 1

    @staticmethod
    def _message(row: sa.Row) -> OutboxMessage:
        m = row._mapping
        return OutboxMessage(
            id=int(m["id"]), dedupe_key=m["dedupe_key"], kind=m["kind"], channel=m["channel"],
            message_type=MessageType(m["payload"].get("type", MessageType.ALERT.value)), payload=m["payload"],
            status=OutboxStatus(m["status"]), attempts=int(m["attempts"]),
            next_attempt_at=as_utc(m["next_attempt_at"]), created_at=as_utc(m["created_at"]),
            sent_at=opt_utc(m["sent_at"]), last_error=m["last_error"], slack_ts=m["slack_ts"])

    @staticmethod
    def _incident(row: sa.Row) -> Incident:
        m = row._mapping
        return Incident(
            dedupe_key=m["dedupe_key"], kind=m["kind"], channel=m["channel"], status=IncidentStatus(m["status"]),
            first_seen=as_utc(m["first_seen"]), last_seen=as_utc(m["last_seen"]), occurrences=int(m["occurrences"]),
            last_alert_id=m["last_alert_id"], last_notified_at=opt_utc(m["last_notified_at"]),
            resolved_at=opt_utc(m["resolved_at"]), resolved_by=m["resolved_by"], id=int(m["id"]))


