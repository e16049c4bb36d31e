"""Alerting for on-call: one actionable Slack message per incident, written to a database outbox first.

Why an outbox: a quality gate fails inside a Dagster run or sensor tick, while Slack may be down, slow or
rate-limiting at that very moment. Posting directly would either lose the alert or block the run on Slack.
So raising an alert only writes a row -- in the same transaction that opens (or counts) the incident -- and a
separate delivery pass sends due rows and records what Slack answered. A message is marked ``sent`` only
after Slack accepted it; transient failures back off and retry forever, permanent ones
(``channel_not_found``, ``invalid_auth`` ...) are kept as ``failed_permanently`` with the error, never deleted.
Delivery is at-least-once: a crash between Slack's acceptance and the database update resends that message.

Why incidents: a failing gate is re-evaluated by every retry and every sensor tick; on-call must see it
once, not fifty times. An incident row per dedupe key (``kind:tenant:dataset:metric:batch_id``) is the lock
that makes "open the incident and queue one message" atomic across concurrent raisers, and it counts the
throttled repeats so the next message can say "repeated N times".

Why here and framework-free: the gate logic, sensors and the CLI all raise alerts; none of that should need
Dagster to be tested. ``resources/slack.py`` wraps this module for Dagster.
"""

from __future__ import annotations

import email.utils
import http.client
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from dagster_project.db import create_tables, make_engine

log = logging.getLogger(__name__)

PLAYBOOK_DIR = Path(__file__).resolve().parents[1] / "ops_playbooks"
"""One Markdown runbook per alert kind, at the repository root (found from an editable install too)."""

OUTBOX_TABLE = "trainyard_alert_outbox"
INCIDENTS_TABLE = "trainyard_alert_incidents"

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(minutes=15)
DEFAULT_RETRY_AFTER = timedelta(seconds=30)

PERMANENT_SLACK_ERRORS = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed", "account_inactive",
    "token_revoked", "token_expired", "no_permission", "missing_scope", "restricted_action", "team_access_not_granted",
    "ekm_access_denied", "invalid_blocks", "invalid_blocks_format", "msg_too_long", "no_text", "invalid_arguments",
})
"""Slack error codes that no retry can fix; anything else is retried with backoff (an alert is never dropped)."""


# -- kinds and severities -------------------------------------------------------------------------------------
class Severity(StrEnum):
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class AlertKind(StrEnum):
    """Every alert kind the platform raises -- the single list; each has ``ops_playbooks/<kind>.md``."""

    GATE_FAILED = "gate_failed"
    """A blocking quality gate failed; the batch is stopped before publish."""
    CHECK_WARNING = "check_warning"
    """A non-blocking (WARN) check failed; the batch continues."""
    RUN_FAILED = "run_failed"
    """A batch run failed for a reason other than a gate."""
    MERGE_CONFLICT = "merge_conflict"
    """Merging a batch branch into main hit a conflict."""
    APPROVAL_REQUESTED = "approval_requested"
    """A batch passed every gate and waits for its data owners' approval (publish policy ``owner``)."""


DEFAULT_SEVERITY: dict[AlertKind, Severity] = {
    AlertKind.GATE_FAILED: Severity.ERROR,
    AlertKind.CHECK_WARNING: Severity.WARNING,
    AlertKind.RUN_FAILED: Severity.ERROR,
    AlertKind.MERGE_CONFLICT: Severity.ERROR,
    AlertKind.APPROVAL_REQUESTED: Severity.INFO,
}
"""The severity an alert gets unless the raiser says otherwise; each playbook's front matter states the same."""

SEVERITY_EMOJI: dict[Severity, str] = {
    Severity.CRITICAL: ":rotating_light:",
    Severity.ERROR: ":red_circle:",
    Severity.WARNING: ":warning:",
    Severity.INFO: ":information_source:",
}
RESOLVED_EMOJI = ":white_check_mark:"


def playbook_path(kind: AlertKind | str) -> Path:
    """The runbook file for an alert kind (``ops_playbooks/<kind>.md`` at the repository root)."""
    return PLAYBOOK_DIR / f"{AlertKind(kind).value}.md"


def playbook_url(kind: AlertKind | str, base_url: str) -> str:
    """Where on-call reads the runbook, e.g. ``<repo web URL>/blob/main/ops_playbooks/gate_failed.md``."""
    return f"{base_url.rstrip('/')}/{AlertKind(kind).value}.md"


# -- the alert --------------------------------------------------------------------------------------------------
Comparison = Literal[">=", ">", "<=", "<", "==", "!="]


def _aware(value: datetime) -> datetime:
    """Timestamps are UTC everywhere; SQLite hands back naive datetimes, which are UTC by construction."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def derive_dedupe_key(kind: str, tenant: str, dataset: str, metric: str | None, batch_id: str | None) -> str:
    """``kind:tenant:dataset:metric:batch_id`` with ``-`` for a missing part: one incident per gate and batch."""
    return ":".join([str(kind), tenant, dataset, metric or "-", batch_id or "-"])


class Alert(BaseModel):
    """Everything on-call needs to act: what failed, where (tenant, dataset, batch, branch), by how much, and
    what to do (playbook and run links). Immutable, JSON-serialisable (it is stored in the outbox)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: AlertKind
    severity: Severity
    tenant: str = Field(min_length=1)
    dataset: str = Field(min_length=1)
    batch_id: str | None = None
    branch: str | None = None
    """The lakeFS branch holding the batch (``batch-<dataset>-<batch_id>``)."""
    title: str = Field(min_length=1)
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None
    comparison: Comparison | None = None
    """What the value must satisfy against the threshold, e.g. ``>=`` for a minimum."""
    details: dict[str, Any] = Field(default_factory=dict)
    """Extra evidence; list values (e.g. ``worst_items``) are shown as the worst offenders."""
    dedupe_key: str
    playbook_url: str = Field(min_length=1)
    run_url: str | None = None
    channel: str = Field(min_length=1)
    """The tenant's Slack channel, e.g. ``#northbank-data-oncall``."""
    occurred_at: datetime = Field(default_factory=_utcnow)

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_kind(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("severity") is None and data.get("kind") is not None:
            data["severity"] = DEFAULT_SEVERITY[AlertKind(data["kind"])]
        if not data.get("dedupe_key") and data.get("kind") is not None:
            data["dedupe_key"] = derive_dedupe_key(AlertKind(data["kind"]).value, data.get("tenant", ""),
                                                   data.get("dataset", ""), data.get("metric"), data.get("batch_id"))
        return data

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _aware(value)


# -- formatting -------------------------------------------------------------------------------------------------
HEADER_LIMIT = 150
SECTION_TEXT_LIMIT = 2900
MAX_OFFENDERS = 5


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".4g")


def _escape(text: str) -> str:
    """Slack mrkdwn control characters (``&``, ``<``, ``>``) in values that come from data."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_deviation(alert: Alert) -> str | None:
    """"by how much": e.g. ``0.71 (required >= 0.85; 0.14 short)``."""
    if alert.value is None:
        return None
    text = _number(alert.value)
    if alert.threshold is None or alert.comparison is None:
        return text
    gap = alert.value - alert.threshold
    if alert.comparison in (">=", ">") and gap < 0 or alert.comparison in ("<=", "<") and gap > 0:
        word = "short" if gap < 0 else "over"
        return f"{text} (required {alert.comparison} {_number(alert.threshold)}; {_number(abs(gap))} {word})"
    return f"{text} (required {alert.comparison} {_number(alert.threshold)})"


def _offender_lines(details: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, items in details.items():
        if not isinstance(items, list | tuple) or not items:
            continue
        lines.append(f"*{_escape(key.replace('_', ' ').capitalize())}* (top {min(len(items), MAX_OFFENDERS)} "
                     f"of {len(items)})")
        for item in items[:MAX_OFFENDERS]:
            if isinstance(item, dict):
                rendered = ", ".join(f"{k}={_number(v) if isinstance(v, float) else v}" for k, v in item.items())
            else:
                rendered = str(item)
            lines.append(f"• {_escape(_truncate(rendered, 200))}")
    return lines


def _scalar_details(details: dict[str, Any]) -> list[str]:
    return [f"{key}: {_number(value) if isinstance(value, float) else value}"
            for key, value in details.items() if not isinstance(value, list | tuple | dict)]


def _where(alert: Alert) -> str:
    parts = [f"{alert.tenant}/{alert.dataset}"]
    if alert.batch_id:
        parts.append(f"batch {alert.batch_id}")
    if alert.branch:
        parts.append(f"branch {alert.branch}")
    return ", ".join(parts)


def _links(alert: Alert) -> list[str]:
    """The Slack links every message about an alert carries: the Dagster run (if any) and the playbook."""
    links = [f"<{alert.run_url}|Dagster run>"] if alert.run_url else []
    return [*links, f"<{alert.playbook_url}|Playbook: {alert.kind.value}>"]


def format_blocks(alert: Alert, occurrences: int = 1) -> tuple[str, list[dict[str, Any]]]:
    """The Slack message for an alert: (plain-text fallback, Block Kit blocks).

    The fallback is what notifications, screen readers and clients without blocks show, so it carries the
    essentials on its own: title, where, metric, value vs threshold, branch, run and playbook links.
    """
    severity = Severity(alert.severity)
    deviation = describe_deviation(alert)
    fields = [f"*Tenant / dataset*\n{_escape(alert.tenant)} / {_escape(alert.dataset)}",
              f"*Batch*\n`{_escape(alert.batch_id)}`" if alert.batch_id else "*Batch*\nn/a",
              f"*Branch*\n`{_escape(alert.branch)}`" if alert.branch else "*Branch*\nn/a"]
    if alert.metric:
        fields.append(f"*Metric*\n{_escape(alert.metric)}")
    if deviation is not None:
        fields.append(f"*Value vs threshold*\n{_escape(deviation)}")
    fields.append(f"*Severity*\n{severity.value}")
    blocks: list[dict[str, Any]] = [
        {"type": "header",
         "text": {"type": "plain_text", "emoji": True,
                  "text": _truncate(f"{SEVERITY_EMOJI[severity]} {alert.title}", HEADER_LIMIT)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _truncate(f, 1900)} for f in fields[:10]]},
    ]
    if occurrences > 1:
        blocks.append({"type": "section", "text": {
            "type": "mrkdwn", "text": f":repeat: Repeated {occurrences} times (repeats are counted, not re-posted)."}})
    offenders = _offender_lines(alert.details)
    if offenders:
        blocks.append({"type": "section",
                       "text": {"type": "mrkdwn", "text": _truncate("\n".join(offenders), SECTION_TEXT_LIMIT)}})
    links = _links(alert)
    extra = _scalar_details(alert.details)
    context = [" · ".join(links), f"{alert.kind.value} · {alert.occurred_at.strftime('%Y-%m-%d %H:%M:%S UTC')}"]
    if extra:
        context.append(_escape(_truncate(" · ".join(extra), 1900)))
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": c} for c in context]})

    text = f"[{severity.value.upper()}] {alert.title} ({_where(alert)})"
    if alert.metric:
        text += f": {alert.metric} = {deviation if deviation is not None else 'n/a'}"
        if alert.threshold is not None and alert.comparison is None:
            text += f", threshold {_number(alert.threshold)}"
    if occurrences > 1:
        text += f". Repeated {occurrences} times"
    if alert.run_url:
        text += f". Run: {alert.run_url}"
    text += f". Playbook: {alert.playbook_url}"
    return text, blocks


def format_recovery(alert: Alert, resolved_by: str | None = None, resolved_at: datetime | None = None,
                    occurrences: int = 1) -> tuple[str, list[dict[str, Any]]]:
    """The "resolved" message for an incident opened by ``alert``: (plain-text fallback, blocks)."""
    who = f" by {resolved_by}" if resolved_by else ""
    when = f" at {_aware(resolved_at).strftime('%Y-%m-%d %H:%M:%S UTC')}" if resolved_at else ""
    text = f"[RESOLVED] {alert.title} ({_where(alert)}) resolved{who}{when}"
    if occurrences > 1:
        text += f" after {occurrences} occurrences"
    text += f". Playbook: {alert.playbook_url}"
    summary = f"Resolved{_escape(who)}{when}."
    if occurrences > 1:
        summary += f" The alert fired {occurrences} times while open."
    if alert.metric:
        summary += f"\nWas: {_escape(alert.metric)} = {_escape(describe_deviation(alert) or 'n/a')}"
    links = _links(alert)
    blocks: list[dict[str, Any]] = [
        {"type": "header",
         "text": {"type": "plain_text", "emoji": True,
                  "text": _truncate(f"{RESOLVED_EMOJI} Resolved: {alert.title}", HEADER_LIMIT)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": summary},
         "fields": [{"type": "mrkdwn", "text": f"*Tenant / dataset*\n{_escape(alert.tenant)} / "
                                               f"{_escape(alert.dataset)}"},
                    {"type": "mrkdwn", "text": f"*Batch*\n{_escape(alert.batch_id or 'n/a')}"},
                    {"type": "mrkdwn", "text": f"*Branch*\n{_escape(alert.branch or 'n/a')}"}]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(links)}]},
    ]
    return text, blocks


# -- storage ----------------------------------------------------------------------------------------------------
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


def _opt(value: datetime | None) -> datetime | None:
    return None if value is None else _aware(value)


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
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.incidents).where(self.incidents.c.dedupe_key == dedupe_key)).first()
        return None if row is None else self._incident(row)

    def requeue(self, message_id: int, now: datetime | None = None) -> bool:
        """Put a ``failed_permanently`` message back to ``pending`` once its cause (e.g. the channel) is fixed."""
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(self.outbox)
                .where(self.outbox.c.id == message_id, self.outbox.c.status == OutboxStatus.FAILED_PERMANENTLY.value)
                .values(status=OutboxStatus.PENDING.value, next_attempt_at=_aware(now or _utcnow())))
        return result.rowcount == 1

    @staticmethod
    def _message(row: sa.Row) -> OutboxMessage:
        m = row._mapping
        return OutboxMessage(
            id=int(m["id"]), dedupe_key=m["dedupe_key"], kind=m["kind"], channel=m["channel"],
            message_type=MessageType(m["payload"].get("type", MessageType.ALERT.value)), payload=m["payload"],
            status=OutboxStatus(m["status"]), attempts=int(m["attempts"]),
            next_attempt_at=_aware(m["next_attempt_at"]), created_at=_aware(m["created_at"]),
            sent_at=_opt(m["sent_at"]), last_error=m["last_error"], slack_ts=m["slack_ts"])

    @staticmethod
    def _incident(row: sa.Row) -> Incident:
        m = row._mapping
        return Incident(
            dedupe_key=m["dedupe_key"], kind=m["kind"], channel=m["channel"], status=IncidentStatus(m["status"]),
            first_seen=_aware(m["first_seen"]), last_seen=_aware(m["last_seen"]), occurrences=int(m["occurrences"]),
            last_alert_id=m["last_alert_id"], last_notified_at=_opt(m["last_notified_at"]),
            resolved_at=_opt(m["resolved_at"]), resolved_by=m["resolved_by"])


# -- routing and delivery ---------------------------------------------------------------------------------------
class Decision(StrEnum):
    QUEUED = "queued"
    THROTTLED = "throttled"


@dataclass(frozen=True)
class AlertDecision:
    """What ``raise_alert`` did: queued a message (``outbox_id``) or only counted a repeat of an open incident."""

    decision: Decision
    dedupe_key: str
    occurrences: int
    outbox_id: int | None = None

    @property
    def queued(self) -> bool:
        return self.decision is Decision.QUEUED


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    """Transient failures (429, 5xx, connection errors) rescheduled for later."""
    failed: int = 0
    """Messages that became ``failed_permanently`` in this pass."""
    next_due: datetime | None = None
    """The earliest ``next_attempt_at`` among messages still pending after the pass."""
    errors: list[str] = field(default_factory=list)
    """One line per failed send: message id, channel, Slack's error."""


class Sender(Protocol):
    """Posts one message and returns Slack's message ``ts``; raises ``SlackApiError`` or a connection error."""

    def send(self, channel: str, text: str, blocks: list[dict[str, Any]], thread_ts: str | None = None) -> str: ...


class FailureKind(StrEnum):
    RATE_LIMITED = "rate_limited"
    TRANSIENT = "transient"
    CONNECTION = "connection"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class SendFailure:
    kind: FailureKind
    error: str
    retry_after: timedelta | None = None


def _retry_after(headers: dict[str, Any], now: datetime) -> timedelta:
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if isinstance(raw, list | tuple):
        raw = raw[0] if raw else None
    if raw is None:
        return DEFAULT_RETRY_AFTER
    try:
        return timedelta(seconds=max(0.0, float(str(raw).strip())))
    except ValueError:
        try:
            return max(timedelta(0), _aware(email.utils.parsedate_to_datetime(str(raw))) - now)
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER


def classify_send_error(error: BaseException, now: datetime | None = None) -> SendFailure:
    """Decide what a failed send means: wait for Retry-After, back off, or give up on this message."""
    now = _aware(now or _utcnow())
    if isinstance(error, SlackApiError):
        response = error.response
        status = int(getattr(response, "status_code", 0) or 0)
        data = getattr(response, "data", None)
        code = str(data.get("error")) if isinstance(data, dict) and data.get("error") else f"http_{status}"
        if status == 429 or code == "ratelimited":
            return SendFailure(FailureKind.RATE_LIMITED, f"{code} (HTTP {status})",
                               _retry_after(dict(getattr(response, "headers", {}) or {}), now))
        if status < 500 and code in PERMANENT_SLACK_ERRORS:
            return SendFailure(FailureKind.PERMANENT, f"{code} (HTTP {status})")
        return SendFailure(FailureKind.TRANSIENT, f"{code} (HTTP {status})")
    if isinstance(error, OSError | http.client.HTTPException | SlackClientError):
        return SendFailure(FailureKind.CONNECTION, f"{type(error).__name__}: {error}")
    return SendFailure(FailureKind.TRANSIENT, f"{type(error).__name__}: {error}")


def backoff_delay(attempts: int) -> timedelta:
    """30 s after the first failure, doubling per attempt, capped at 15 minutes (``attempts`` counts this one)."""
    exponent = max(0, attempts - 1)
    return min(BACKOFF_BASE * (2 ** min(exponent, 20)), BACKOFF_CAP)


class AlertRouter:
    """Turns raised alerts into at most one queued message per incident and throttle window, and delivers them."""

    def __init__(self, outbox: AlertOutbox, throttle: timedelta = timedelta(minutes=60)) -> None:
        self.outbox = outbox
        self.throttle = throttle

    # raising ---------------------------------------------------------------------------------------------------
    def raise_alert(self, alert: Alert, now: datetime | None = None) -> AlertDecision:
        """Queue a message for ``alert`` unless its incident is open and was notified within the throttle window
        (or its notification is still waiting to be delivered): then only count the occurrence.

        One transaction: the incident row is inserted if missing (``ON CONFLICT DO NOTHING``) and then locked
        (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite serialises writers), so concurrent raisers of the same
        alert queue exactly one message.
        """
        now = _aware(now or _utcnow())
        inc = self.outbox.incidents
        with self.outbox.engine.begin() as conn:
            self._insert_incident_if_missing(conn, alert, now)
            row = conn.execute(sa.select(inc).where(inc.c.dedupe_key == alert.dedupe_key).with_for_update()).one()
            current = AlertOutbox._incident(row)
            if current.status is IncidentStatus.OPEN and current.last_notified_at is not None and (
                    now - current.last_notified_at < self.throttle or self._still_pending(conn, current.last_alert_id)):
                occurrences = current.occurrences + 1
                conn.execute(sa.update(inc).where(inc.c.dedupe_key == alert.dedupe_key).values(
                    occurrences=occurrences, last_seen=max(current.last_seen, now)))
                return AlertDecision(Decision.THROTTLED, alert.dedupe_key, occurrences)

            reopened = current.status is IncidentStatus.RESOLVED
            occurrences = 1 if reopened else current.occurrences + 1
            first_seen = now if reopened else current.first_seen
            payload = {"type": MessageType.ALERT.value, "alert": alert.model_dump(mode="json"),
                       "occurrences": occurrences, "first_seen": first_seen.isoformat()}
            outbox_id = self._enqueue(conn, alert.dedupe_key, alert.kind.value, alert.channel, payload, now)
            conn.execute(sa.update(inc).where(inc.c.dedupe_key == alert.dedupe_key).values(
                status=IncidentStatus.OPEN.value, kind=alert.kind.value, channel=alert.channel,
                first_seen=first_seen, last_seen=max(current.last_seen, now), occurrences=occurrences,
                last_alert_id=outbox_id, last_notified_at=now, resolved_at=None, resolved_by=None))
            return AlertDecision(Decision.QUEUED, alert.dedupe_key, occurrences, outbox_id)

    def resolve(self, dedupe_key: str, resolved_by: str, now: datetime | None = None) -> bool:
        """Close an open incident and queue a recovery message to the same channel, threaded under the original
        alert once that was delivered. Returns False (and does nothing) when no incident is open."""
        now = _aware(now or _utcnow())
        inc, box = self.outbox.incidents, self.outbox.outbox
        with self.outbox.engine.begin() as conn:
            row = conn.execute(sa.select(inc).where(inc.c.dedupe_key == dedupe_key).with_for_update()).first()
            if row is None or row._mapping["status"] != IncidentStatus.OPEN.value:
                return False
            current = AlertOutbox._incident(row)
            original = conn.execute(sa.select(box.c.payload).where(box.c.id == current.last_alert_id)).first()
            if original is None:  # an incident is only ever opened together with its first message
                raise RuntimeError(f"incident {dedupe_key!r} has no alert message {current.last_alert_id}")
            payload = {"type": MessageType.RECOVERY.value, "alert": original._mapping["payload"]["alert"],
                       "original_id": current.last_alert_id, "resolved_by": resolved_by,
                       "resolved_at": now.isoformat(), "occurrences": current.occurrences}
            self._enqueue(conn, dedupe_key, current.kind, current.channel, payload, now)
            conn.execute(sa.update(inc).where(inc.c.dedupe_key == dedupe_key).values(
                status=IncidentStatus.RESOLVED.value, resolved_at=now, resolved_by=resolved_by))
        return True

    def _insert_incident_if_missing(self, conn: Connection, alert: Alert, now: datetime) -> None:
        values = {"dedupe_key": alert.dedupe_key, "kind": alert.kind.value, "channel": alert.channel,
                  "status": IncidentStatus.OPEN.value, "first_seen": now, "last_seen": now, "occurrences": 0}
        table = self.outbox.incidents
        dialect = conn.dialect.name
        if dialect == "postgresql":
            conn.execute(postgresql.insert(table).values(**values).on_conflict_do_nothing(index_elements=["dedupe_key"]))
        elif dialect == "sqlite":
            conn.execute(sqlite.insert(table).values(**values).on_conflict_do_nothing(index_elements=["dedupe_key"]))
        else:
            exists = conn.execute(sa.select(table.c.id).where(table.c.dedupe_key == alert.dedupe_key)).first()
            if exists is None:
                try:
                    with conn.begin_nested():
                        conn.execute(sa.insert(table).values(**values))
                except IntegrityError:
                    pass  # a concurrent raiser inserted it; we lock and read it next

    def _still_pending(self, conn: Connection, message_id: int | None) -> bool:
        if message_id is None:
            return False
        box = self.outbox.outbox
        status = conn.execute(sa.select(box.c.status).where(box.c.id == message_id)).scalar()
        return status == OutboxStatus.PENDING.value

    def _enqueue(self, conn: Connection, dedupe_key: str, kind: str, channel: str, payload: dict[str, Any],
                 now: datetime) -> int:
        box = self.outbox.outbox
        result = conn.execute(sa.insert(box).values(
            dedupe_key=dedupe_key, kind=kind, channel=channel, payload=payload, status=OutboxStatus.PENDING.value,
            attempts=0, next_attempt_at=now, created_at=now))
        return int(result.inserted_primary_key[0])

    # delivering ------------------------------------------------------------------------------------------------
    def deliver(self, sender: Sender, now: datetime | None = None, limit: int = 100) -> DeliveryReport:
        """Send due pending messages oldest-first; record Slack's answer for each.

        429: the message and the rest of its channel wait for Retry-After. 5xx: exponential backoff and the
        channel is skipped for the rest of the pass (keeps order). Connection errors: backoff and the pass stops
        (Slack is unreachable). Permanent errors: ``failed_permanently`` with the error kept.
        On PostgreSQL each message is claimed with ``FOR UPDATE SKIP LOCKED``, so concurrent deliverers never
        double-send; SQLite (local demo) assumes a single deliverer.
        """
        now = _aware(now or _utcnow())
        box = self.outbox.outbox
        report = DeliveryReport()
        with self.outbox.engine.connect() as conn:
            due = conn.execute(
                sa.select(box.c.id, box.c.channel)
                .where(box.c.status == OutboxStatus.PENDING.value, box.c.next_attempt_at <= now)
                .order_by(box.c.created_at, box.c.id).limit(limit)).all()
        blocked: set[str] = set()
        for message_id, channel in due:
            if channel in blocked:
                continue
            outcome = self._deliver_one(sender, int(message_id), now, report)
            if outcome is FailureKind.CONNECTION:
                break
            if outcome is not None:
                blocked.add(channel)
        with self.outbox.engine.connect() as conn:
            next_due = conn.execute(sa.select(sa.func.min(box.c.next_attempt_at))
                                    .where(box.c.status == OutboxStatus.PENDING.value)).scalar()
        report.next_due = _opt(next_due)
        return report

    def _deliver_one(self, sender: Sender, message_id: int, now: datetime,
                     report: DeliveryReport) -> FailureKind | None:
        """Deliver one message; returns the failure kind when its channel should not be tried again this pass."""
        box = self.outbox.outbox
        with self.outbox.engine.begin() as conn:
            row = conn.execute(
                sa.select(box).where(box.c.id == message_id, box.c.status == OutboxStatus.PENDING.value,
                                     box.c.next_attempt_at <= now)
                .with_for_update(skip_locked=True)).first()
            if row is None:  # delivered or claimed by a concurrent deliverer meanwhile
                return None
            message = AlertOutbox._message(row)
            thread_ts: str | None = None
            if message.message_type is MessageType.RECOVERY:
                original = conn.execute(sa.select(box.c.status, box.c.slack_ts)
                                        .where(box.c.id == int(message.payload["original_id"]))).first()
                if original is not None and original.status == OutboxStatus.PENDING.value:
                    return FailureKind.TRANSIENT  # never announce the recovery before the alert itself
                thread_ts = original.slack_ts if original is not None else None
            text, blocks = render(message)
            attempts = message.attempts + 1
            try:
                ts = sender.send(message.channel, text, blocks, thread_ts=thread_ts)
            except Exception as error:  # noqa: BLE001 -- every failure is classified; an alert is never dropped
                failure = classify_send_error(error, now)
                report.errors.append(f"{message.id} {message.channel}: {failure.error}")
                if failure.kind is FailureKind.PERMANENT:
                    log.error("alert %s to %s failed permanently: %s", message.id, message.channel, failure.error)
                    conn.execute(sa.update(box).where(box.c.id == message.id).values(
                        status=OutboxStatus.FAILED_PERMANENTLY.value, attempts=attempts, last_error=failure.error))
                    report.failed += 1
                    return None
                retry_at = now + (failure.retry_after if failure.kind is FailureKind.RATE_LIMITED
                                  else backoff_delay(attempts))
                log.warning("alert %s to %s not delivered (%s); retry at %s", message.id, message.channel,
                            failure.error, retry_at.isoformat())
                conn.execute(sa.update(box).where(box.c.id == message.id).values(
                    attempts=attempts, next_attempt_at=retry_at, last_error=failure.error))
                if failure.kind is FailureKind.RATE_LIMITED:
                    conn.execute(sa.update(box).where(
                        box.c.channel == message.channel, box.c.status == OutboxStatus.PENDING.value,
                        box.c.next_attempt_at < retry_at).values(next_attempt_at=retry_at))
                report.retried += 1
                return failure.kind
            conn.execute(sa.update(box).where(box.c.id == message.id).values(
                status=OutboxStatus.SENT.value, attempts=attempts, sent_at=now, slack_ts=ts, last_error=None))
            report.sent += 1
            return None


def render(message: OutboxMessage) -> tuple[str, list[dict[str, Any]]]:
    """The text and blocks an outbox message is posted with."""
    alert = message.alert
    occurrences = int(message.payload.get("occurrences", 1))
    if message.message_type is MessageType.RECOVERY:
        resolved_at = message.payload.get("resolved_at")
        return format_recovery(alert, message.payload.get("resolved_by"),
                               datetime.fromisoformat(resolved_at) if resolved_at else None, occurrences)
    return format_blocks(alert, occurrences)


# -- Slack -------------------------------------------------------------------------------------------------------
class SlackSender:
    """Posts through slack-sdk's ``WebClient`` with its retry handlers disabled: the outbox owns retries, so a
    rate limit or outage is recorded and rescheduled instead of blocking a sensor tick inside the client."""

    def __init__(self, token: str, base_url: str = "https://slack.com/api/", timeout: int = 10) -> None:
        self.client = WebClient(token=token, base_url=base_url if base_url.endswith("/") else base_url + "/",
                                timeout=timeout, retry_handlers=[])

    def send(self, channel: str, text: str, blocks: Sequence[dict[str, Any]], thread_ts: str | None = None) -> str:
        response = self.client.chat_postMessage(
            channel=channel, text=text, blocks=list(blocks), thread_ts=thread_ts,
            reply_broadcast=True if thread_ts else None, unfurl_links=False, unfurl_media=False)
        return str(response["ts"])


# -- building alerts from platform events -------------------------------------------------------------------------
def comparison_operator(text: str | None) -> Comparison | None:
    """The operator in a check's comparison text, e.g. ``">= (upper bound)"`` -> ``">="``."""
    if not text:
        return None
    for operator in (">=", "<=", "==", "!=", ">", "<"):
        if operator in text:
            return operator  # type: ignore[return-value]
    return None


def check_alert(*, tenant: str, dataset: str, batch_id: str | None, branch: str | None, check: str, blocking: bool,
                value: float | None, threshold: float | None, comparison: str | None, worst: list[Any],
                channel: str, playbook_base_url: str, run_url: str | None) -> Alert:
    """The alert for a failed quality check: ``gate_failed`` when it blocks the batch, else ``check_warning``."""
    kind = AlertKind.GATE_FAILED if blocking else AlertKind.CHECK_WARNING
    verb = "blocked" if blocking else "warning on"
    batch = f" batch {batch_id}" if batch_id else ""
    return Alert(
        kind=kind, tenant=tenant, dataset=dataset, batch_id=batch_id, branch=branch,
        title=f"{check} gate {verb} {tenant}/{dataset}{batch}",
        metric=check, value=value, threshold=threshold, comparison=comparison_operator(comparison),
        details={"comparison": comparison, "worst_offenders": worst},
        playbook_url=playbook_url(kind, playbook_base_url), run_url=run_url, channel=channel,
    )


def merge_conflict_alert(*, tenant: str, dataset: str, batch_id: str, branch: str, error: str, channel: str,
                         playbook_base_url: str, run_url: str | None) -> Alert:
    """The alert for a batch whose merge into main conflicted (nothing was merged; the branch is intact)."""
    return Alert(kind=AlertKind.MERGE_CONFLICT, tenant=tenant, dataset=dataset, batch_id=batch_id, branch=branch,
                 title=f"merge conflict publishing {tenant}/{dataset} batch {batch_id}", metric="merge",
                 details={"error": error[:1500]}, channel=channel,
                 playbook_url=playbook_url(AlertKind.MERGE_CONFLICT, playbook_base_url), run_url=run_url)
