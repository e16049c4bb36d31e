"""Raising and delivering alerts: at most one message per incident and throttle window, delivered at least once.

Why incidents: a failing gate is re-evaluated by every retry and every sensor tick; on-call must see it once, not
fifty times. An incident row per dedupe key (``kind:tenant:dataset:metric:batch_id``) is the lock that makes "open
the incident and queue one message" atomic across concurrent raisers, and it counts the throttled repeats so the
next message can say "repeated N times".

Why this retry policy: a message is marked ``sent`` only after Slack accepted it; transient failures back off and
retry forever, permanent ones (``channel_not_found``, ``invalid_auth`` ...) are kept as ``failed_permanently`` with
the error, never deleted. Delivery is at-least-once: a crash between Slack's acceptance and the database update
resends that message.
"""

from __future__ import annotations

import email.utils
import http.client
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import sqlalchemy as sa
from slack_sdk.errors import SlackApiError, SlackClientError
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from dagster_project.alerts.blocks import render
from dagster_project.alerts.model import Alert
from dagster_project.alerts.outbox import THREADED, AlertOutbox, Incident, IncidentStatus, MessageType, OutboxStatus
from dagster_project.clock import as_utc, opt_utc, utcnow

log = logging.getLogger(__name__)

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(minutes=15)
DEFAULT_RETRY_AFTER = timedelta(seconds=30)

PERMANENT_SLACK_ERRORS = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed", "account_inactive",
    "token_revoked", "token_expired", "no_permission", "missing_scope", "restricted_action", "team_access_not_granted",
    "ekm_access_denied", "invalid_blocks", "invalid_blocks_format", "msg_too_long", "no_text", "invalid_arguments",
})


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
    """Posts one message and returns Slack's message ``ts``; raises ``SlackApiError`` or a connection error.

    Every message carries ``message_key`` (Slack message metadata), so :meth:`find` can tell whether an earlier
    attempt whose answer was lost did reach the channel."""

    def send(self, channel: str, text: str, blocks: list[dict[str, Any]], thread_ts: str | None = None,
             message_key: str | None = None) -> str: ...

    def find(self, channel: str, message_key: str, since: datetime) -> str | None:
        """The ``ts`` of the message posted with ``message_key`` in ``channel`` since ``since``, if any."""
        ...


def message_key(message_id: int) -> str:
    return f"trainyard-outbox-{message_id}"


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
            return max(timedelta(0), as_utc(email.utils.parsedate_to_datetime(str(raw))) - now)
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER


def classify_send_error(error: BaseException, now: datetime | None = None) -> SendFailure:
    """Decide what a failed send means: wait for Retry-After, back off, or give up on this message."""
    now = as_utc(now or utcnow())
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
        now = as_utc(now or utcnow())
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
                       "occurrences": occurrences, "first_seen": first_seen.isoformat(), "incident_id": current.id}
            outbox_id = self._enqueue(conn, alert.dedupe_key, alert.kind.value, alert.channel, payload, now)
            conn.execute(sa.update(inc).where(inc.c.dedupe_key == alert.dedupe_key).values(
                status=IncidentStatus.OPEN.value, kind=alert.kind.value, channel=alert.channel,
                first_seen=first_seen, last_seen=max(current.last_seen, now), occurrences=occurrences,
                last_alert_id=outbox_id, last_notified_at=now, resolved_at=None, resolved_by=None))
            return AlertDecision(Decision.QUEUED, alert.dedupe_key, occurrences, outbox_id)

    def resolve(self, dedupe_key: str, resolved_by: str, now: datetime | None = None) -> bool:
        """Close an open incident and queue a recovery message to the same channel, threaded under the original
        alert once that was delivered. Returns False (and does nothing) when no incident is open."""
        now = as_utc(now or utcnow())
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

    def acknowledge(self, incident_key: str, actor: str, note: str = "", now: datetime | None = None) -> Incident:
        """Record that ``actor`` took the open incident on, and say so in the alert's Slack thread.

        ``incident_key`` is the dedupe key or the incident's number. Raises ``LookupError`` for an unknown incident
        and ``ValueError`` for one that is already resolved (nothing left to take on)."""
        now = as_utc(now or utcnow())
        incident = self.outbox.incident(incident_key)
        if incident is None:
            raise LookupError(f"no incident {incident_key!r}; `trainyard alerts` lists the open ones")
        if incident.status is not IncidentStatus.OPEN:
            raise ValueError(f"incident {incident.id} ({incident.dedupe_key}) was resolved at "
                             f"{incident.resolved_at:%Y-%m-%d %H:%M} UTC by {incident.resolved_by}")
        box = self.outbox.outbox
        with self.outbox.engine.begin() as conn:
            conn.execute(sa.insert(self.outbox.acks).values(dedupe_key=incident.dedupe_key, actor=actor, note=note,
                                                            acknowledged_at=now))
            original = conn.execute(sa.select(box.c.payload).where(box.c.id == incident.last_alert_id)).first()
            if original is not None:
                payload = {"type": MessageType.ACKNOWLEDGEMENT.value, "alert": original._mapping["payload"]["alert"],
                           "original_id": incident.last_alert_id, "acknowledged_by": actor, "note": note,
                           "acknowledged_at": now.isoformat(), "incident_id": incident.id}
                self._enqueue(conn, incident.dedupe_key, incident.kind, incident.channel, payload, now)
        return self.outbox.incident(incident.dedupe_key) or incident

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
    def deliver(self, sender: Sender, now: datetime | None = None, limit: int = 100,
                mentions: Callable[[Alert], tuple[str, ...]] | None = None,
                acknowledge_button: bool = False) -> DeliveryReport:
        """Send due pending messages oldest-first; record Slack's answer for each.

        429: the message and the rest of its channel wait for Retry-After. 5xx: exponential backoff and the
        channel is skipped for the rest of the pass (keeps order). Connection errors: backoff and the pass stops
        (Slack is unreachable). Permanent errors: ``failed_permanently`` with the error kept.
        On PostgreSQL each message is claimed with ``FOR UPDATE SKIP LOCKED``, so concurrent deliverers never
        double-send; SQLite (local demo) assumes a single deliverer.
        """
        now = as_utc(now or utcnow())
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
            outcome = self._deliver_one(sender, int(message_id), now, report, mentions, acknowledge_button)
            if outcome is FailureKind.CONNECTION:
                break
            if outcome is not None:
                blocked.add(channel)
        with self.outbox.engine.connect() as conn:
            next_due = conn.execute(sa.select(sa.func.min(box.c.next_attempt_at))
                                    .where(box.c.status == OutboxStatus.PENDING.value)).scalar()
        report.next_due = opt_utc(next_due)
        return report

    def _deliver_one(self, sender: Sender, message_id: int, now: datetime, report: DeliveryReport,
                     mentions: Callable[[Alert], tuple[str, ...]] | None = None,
                     acknowledge_button: bool = False) -> FailureKind | None:
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
            if message.message_type in THREADED:
                original = conn.execute(sa.select(box.c.status, box.c.slack_ts)
                                        .where(box.c.id == int(message.payload["original_id"]))).first()
                if original is not None and original.status == OutboxStatus.PENDING.value:
                    return FailureKind.TRANSIENT  # never announce the recovery before the alert itself
                thread_ts = original.slack_ts if original is not None else None
            first = message.message_type is MessageType.ALERT  # thread replies page no one and need no buttons
            text, blocks = render(message, mentions(message.alert) if mentions and first else (),
                                  acknowledge_button and first)
            attempts = message.attempts + 1
            key = message_key(message.id)
            try:
                # A retry may follow an attempt that Slack accepted but whose answer was lost: look before posting,
                # so the message is delivered once.
                ts = (sender.find(message.channel, key, message.created_at) if message.attempts else None) or \
                    sender.send(message.channel, text, blocks, thread_ts=thread_ts, message_key=key)
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

