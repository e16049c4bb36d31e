"""Alert formatting, dedupe keys, throttling and recovery (on SQLite), error classification and the playbooks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.slack_response import SlackResponse

from dagster_project.alerts import (
    DEFAULT_SEVERITY,
    PLAYBOOK_DIR,
    Alert,
    AlertKind,
    AlertOutbox,
    AlertRouter,
    Decision,
    FailureKind,
    IncidentStatus,
    MessageType,
    OutboxStatus,
    Severity,
    backoff_delay,
    classify_send_error,
    format_blocks,
    format_recovery,
    playbook_path,
    playbook_url,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PLAYBOOKS = "https://git.example/trainyard/blob/main/ops_playbooks"


def gate_alert(**overrides: Any) -> Alert:
    values: dict[str, Any] = {
        "kind": AlertKind.GATE_FAILED, "tenant": "northbank", "dataset": "support_intents", "batch_id": "drop-0042",
        "branch": "batch-support_intents-drop-0042", "title": "Agreement gate failed for northbank/support_intents",
        "metric": "agreement", "value": 0.7123, "threshold": 0.85, "comparison": ">=",
        "details": {"sample_size": 412, "worst_items": [{"item_id": f"it-{i}", "agreement": 0.3333} for i in range(8)]},
        "playbook_url": playbook_url(AlertKind.GATE_FAILED, PLAYBOOKS),
        "run_url": "http://127.0.0.1:3000/runs/8f1c", "channel": "#northbank-data-oncall", "occurred_at": T0,
    }
    values.update(overrides)
    return Alert(**values)


def all_block_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks)


class FakeSender:
    """Records what would be posted; optionally raises the queued errors first."""

    def __init__(self, errors: list[Exception] | None = None, lose_answers: int = 0) -> None:
        self.errors = list(errors or [])
        self.lose_answers = lose_answers
        self.sent: list[tuple[str, str, list[dict[str, Any]], str | None]] = []
        self.keys: dict[tuple[str, str], str] = {}
        self.lookups = 0

    def send(self, channel: str, text: str, blocks: list[dict[str, Any]], thread_ts: str | None = None,
             message_key: str | None = None) -> str:
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append((channel, text, blocks, thread_ts))
        ts = f"1700000000.{len(self.sent):06d}"
        if message_key:
            self.keys[(channel, message_key)] = ts
        if self.lose_answers:  # posted, but the answer never arrives
            self.lose_answers -= 1
            raise ConnectionResetError("connection reset by peer")
        return ts

    def find(self, channel: str, message_key: str, since: datetime) -> str | None:
        self.lookups += 1
        return self.keys.get((channel, message_key))


def slack_error(status: int, error: str, headers: dict[str, str] | None = None) -> SlackApiError:
    response = SlackResponse(client=None, http_verb="POST", api_url="http://x/api/chat.postMessage", req_args={},
                             data={"ok": False, "error": error}, headers=headers or {}, status_code=status)
    return SlackApiError("failed", response)


@pytest.fixture
def router(tmp_path: Path) -> AlertRouter:
    return AlertRouter(AlertOutbox(f"sqlite:///{tmp_path / 'alerts.db'}"), throttle=timedelta(minutes=60))


# -- the model --------------------------------------------------------------------------------------------------
def test_dedupe_key_and_severity_are_derived() -> None:
    alert = gate_alert()
    assert alert.dedupe_key == "gate_failed:northbank:support_intents:agreement:drop-0042"
    assert alert.severity is Severity.ERROR
    run_failed = gate_alert(kind="run_failed", metric=None, batch_id=None)
    assert run_failed.dedupe_key == "run_failed:northbank:support_intents:-:-"
    assert gate_alert(dedupe_key="custom").dedupe_key == "custom"
    assert gate_alert(severity="critical").severity is Severity.CRITICAL


def test_alert_is_frozen_validated_and_round_trips_through_json() -> None:
    alert = gate_alert()
    with pytest.raises(ValidationError):
        alert.title = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        gate_alert(kind="not_a_kind")
    with pytest.raises(ValidationError):
        gate_alert(comparison="=>")
    assert gate_alert(occurred_at=datetime(2026, 1, 1, 12)).occurred_at.tzinfo is not None
    assert Alert.model_validate(json.loads(alert.model_dump_json())) == alert


# -- formatting -------------------------------------------------------------------------------------------------
def test_blocks_carry_what_failed_where_by_how_much_and_what_to_do() -> None:
    alert = gate_alert()
    text, blocks = format_blocks(alert)
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["text"].startswith(":red_circle: ")
    assert alert.title in blocks[0]["text"]["text"]
    rendered = all_block_text(blocks)
    for fragment in ("northbank", "support_intents", "drop-0042", "batch-support_intents-drop-0042", "agreement",
                     "0.7123", "0.85", "&gt;=", "0.1377 short", alert.playbook_url, alert.run_url, "it-0"):
        assert fragment in rendered, fragment
    assert "it-5" not in rendered  # the worst offenders are a short list
    assert "Repeated" not in rendered
    assert "sample size: 412" in rendered
    context = [b for b in blocks if b["type"] == "context"][0]
    assert f"<{alert.playbook_url}|" in context["elements"][0]["text"]


def test_plain_text_fallback_stands_on_its_own() -> None:
    alert = gate_alert()
    text, _ = format_blocks(alert)
    for fragment in ("agreement", "0.7123", "0.85", "batch-support_intents-drop-0042", alert.playbook_url,
                     alert.run_url, "ERROR"):
        assert fragment in text, fragment


def test_repeats_are_announced_and_maximum_gates_read_over() -> None:
    alert = gate_alert(metric="duplicate_rate", value=0.62, threshold=0.5, comparison="<=", details={})
    text, blocks = format_blocks(alert, occurrences=6)
    assert "Repeated 6 times" in all_block_text(blocks)
    assert "Repeated 6 times" in text
    assert "0.12 over" in text


def test_block_limits_hold_for_long_values() -> None:
    alert = gate_alert(title="x" * 400, details={"worst": ["y" * 5000] * 50})
    _, blocks = format_blocks(alert)
    assert len(blocks[0]["text"]["text"]) <= 150
    assert all(len(b.get("text", {}).get("text", "")) <= 3000 for b in blocks if b["type"] == "section")
    assert len(blocks) <= 50


def test_data_values_are_escaped_for_mrkdwn() -> None:
    _, blocks = format_blocks(gate_alert(details={"worst": ["<!channel> & friends"]}))
    assert "<!channel>" not in all_block_text(blocks)
    assert "&lt;!channel&gt; &amp; friends" in all_block_text(blocks)


def test_recovery_message() -> None:
    alert = gate_alert()
    text, blocks = format_recovery(alert, resolved_by="priya.shah", resolved_at=T0 + timedelta(hours=1),
                                   occurrences=3)
    assert text.startswith("[RESOLVED]")
    assert "priya.shah" in text and "batch-support_intents-drop-0042" in text and alert.playbook_url in text
    assert blocks[0]["text"]["text"].startswith(":white_check_mark: Resolved:")
    assert "3 times" in all_block_text(blocks)


# -- routing on SQLite ------------------------------------------------------------------------------------------
def test_one_message_per_incident_within_the_throttle_window(router: AlertRouter) -> None:
    alert = gate_alert()
    first = router.raise_alert(alert, now=T0)
    assert first.decision is Decision.QUEUED and first.outbox_id is not None
    for minute in range(1, 6):
        decision = router.raise_alert(alert, now=T0 + timedelta(minutes=minute))
        assert decision.decision is Decision.THROTTLED
    assert len(router.outbox.messages()) == 1
    incident = router.outbox.incident(alert.dedupe_key)
    assert incident is not None
    assert incident.occurrences == 6
    assert incident.status is IncidentStatus.OPEN
    assert incident.first_seen == T0 and incident.last_seen == T0 + timedelta(minutes=5)


def test_different_batches_are_different_incidents(router: AlertRouter) -> None:
    assert router.raise_alert(gate_alert(), now=T0).queued
    assert router.raise_alert(gate_alert(batch_id="drop-0043"), now=T0).queued
    assert len(router.outbox.messages()) == 2


def test_renotify_after_the_window_with_the_repeat_count(router: AlertRouter) -> None:
    alert = gate_alert()
    router.raise_alert(alert, now=T0)
    sender = FakeSender()
    router.deliver(sender, now=T0)
    router.raise_alert(alert, now=T0 + timedelta(minutes=30))
    again = router.raise_alert(alert, now=T0 + timedelta(minutes=61))
    assert again.decision is Decision.QUEUED and again.occurrences == 3
    router.deliver(sender, now=T0 + timedelta(minutes=61))
    assert len(sender.sent) == 2
    assert "Repeated 3 times" in sender.sent[1][1]


def test_no_second_message_while_the_first_is_still_undelivered(router: AlertRouter) -> None:
    alert = gate_alert()
    router.raise_alert(alert, now=T0)
    assert router.raise_alert(alert, now=T0 + timedelta(hours=3)).decision is Decision.THROTTLED
    assert len(router.outbox.messages()) == 1


def test_resolve_queues_a_threaded_recovery_and_reopen_starts_a_new_incident(router: AlertRouter) -> None:
    alert = gate_alert()
    assert router.resolve(alert.dedupe_key, "nobody", now=T0) is False
    router.raise_alert(alert, now=T0)
    sender = FakeSender()
    router.deliver(sender, now=T0)
    assert router.resolve(alert.dedupe_key, "priya.shah", now=T0 + timedelta(minutes=20)) is True
    assert router.resolve(alert.dedupe_key, "priya.shah", now=T0 + timedelta(minutes=21)) is False
    report = router.deliver(sender, now=T0 + timedelta(minutes=20))
    assert report.sent == 1
    channel, text, _, thread_ts = sender.sent[1]
    assert channel == "#northbank-data-oncall" and "priya.shah" in text
    assert thread_ts == slack_ts_of(router, MessageType.ALERT)
    incident = router.outbox.incident(alert.dedupe_key)
    assert incident is not None and incident.status is IncidentStatus.RESOLVED and incident.resolved_by == "priya.shah"

    reopened = router.raise_alert(alert, now=T0 + timedelta(minutes=25))
    assert reopened.decision is Decision.QUEUED and reopened.occurrences == 1
    incident = router.outbox.incident(alert.dedupe_key)
    assert incident is not None and incident.status is IncidentStatus.OPEN
    assert incident.first_seen == T0 + timedelta(minutes=25)


def slack_ts_of(router: AlertRouter, message_type: MessageType) -> str | None:
    return [m for m in router.outbox.messages() if m.message_type is message_type][0].slack_ts


def test_recovery_waits_for_its_alert(router: AlertRouter) -> None:
    alert = gate_alert()
    router.raise_alert(alert, now=T0)
    router.resolve(alert.dedupe_key, "priya.shah", now=T0)
    sender = FakeSender(errors=[slack_error(500, "internal_error")])
    report = router.deliver(sender, now=T0)
    assert report.retried == 1 and report.sent == 0  # the alert failed, so the recovery was held back
    report = router.deliver(sender, now=T0 + timedelta(minutes=1))
    assert report.sent == 2
    assert [text.startswith("[RESOLVED]") for _, text, _, _ in sender.sent] == [False, True]


def test_delivery_outcomes_with_a_fake_sender(router: AlertRouter) -> None:
    router.raise_alert(gate_alert(), now=T0)
    router.raise_alert(gate_alert(channel="#gone", batch_id="b2"), now=T0)
    sender = FakeSender(errors=[slack_error(429, "ratelimited", {"Retry-After": "90"}),
                                slack_error(200, "channel_not_found")])
    report = router.deliver(sender, now=T0)
    assert (report.sent, report.retried, report.failed) == (0, 1, 1)
    assert report.next_due == T0 + timedelta(seconds=90)
    failed = router.outbox.messages(status=OutboxStatus.FAILED_PERMANENTLY)
    assert [m.channel for m in failed] == ["#gone"] and failed[0].last_error.startswith("channel_not_found")
    assert router.deliver(sender, now=T0 + timedelta(seconds=89)).sent == 0
    assert router.deliver(sender, now=T0 + timedelta(seconds=90)).sent == 1
    assert router.outbox.requeue(failed[0].id, now=T0) is True
    assert router.outbox.messages(status=OutboxStatus.PENDING)[0].channel == "#gone"


def test_a_message_whose_answer_was_lost_is_found_not_posted_again(router: AlertRouter) -> None:
    router.raise_alert(gate_alert(), now=T0)
    sender = FakeSender(lose_answers=1)
    first = router.deliver(sender, now=T0)
    assert (first.sent, first.retried) == (0, 1) and len(sender.sent) == 1  # posted; the outcome unknown
    retry = router.deliver(sender, now=T0 + timedelta(minutes=5))
    assert retry.sent == 1 and len(sender.sent) == 1 and sender.lookups == 1  # found in the channel, not re-posted
    [message] = router.outbox.messages()
    assert message.status is OutboxStatus.SENT and message.slack_ts == "1700000000.000001"


def test_a_retry_posts_when_the_earlier_attempt_never_reached_slack(router: AlertRouter) -> None:
    router.raise_alert(gate_alert(), now=T0)
    sender = FakeSender(errors=[ConnectionRefusedError("refused")])
    router.deliver(sender, now=T0)
    assert router.deliver(sender, now=T0 + timedelta(minutes=5)).sent == 1 and len(sender.sent) == 1


def test_error_classification_and_backoff() -> None:
    assert classify_send_error(slack_error(429, "ratelimited", {"Retry-After": "7"})).retry_after == timedelta(
        seconds=7)
    assert classify_send_error(slack_error(503, "service_unavailable")).kind is FailureKind.TRANSIENT
    for code in ("channel_not_found", "invalid_auth", "not_in_channel"):
        assert classify_send_error(slack_error(200, code)).kind is FailureKind.PERMANENT
    assert classify_send_error(slack_error(200, "something_new")).kind is FailureKind.TRANSIENT
    assert classify_send_error(ConnectionResetError("reset")).kind is FailureKind.CONNECTION
    assert [backoff_delay(n).total_seconds() for n in (1, 2, 3, 6, 30)] == [30, 60, 120, 900, 900]


def test_outbox_schema_is_postgres_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        AlertOutbox(f"sqlite:///{tmp_path / 'a.db'}", schema="alerts")


def test_tables_are_created_idempotently(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    AlertRouter(AlertOutbox(url)).raise_alert(gate_alert(), now=T0)
    assert len(AlertOutbox(url).messages()) == 1


# -- playbooks --------------------------------------------------------------------------------------------------
def front_matter(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), f"{path.name} has no front matter"
    block = text.split("---\n", 2)[1]
    return yaml.safe_load(block)


@pytest.mark.parametrize("kind", list(AlertKind))
def test_every_alert_kind_has_a_playbook_with_matching_front_matter(kind: AlertKind) -> None:
    path = playbook_path(kind)
    assert path.is_file(), f"alert kind {kind} has no playbook at {path}"
    meta = front_matter(path)
    assert meta["kind"] == kind.value
    assert Severity(meta["severity"]) is DEFAULT_SEVERITY[kind]
    assert isinstance(meta.get("owner"), str) and meta["owner"]
    body = path.read_text(encoding="utf-8")
    for section in ("## What it means", "## How to look", "## How to fix or escalate", "## When to reject the batch"):
        assert section in body, f"{path.name} lacks '{section}'"
    assert "batch-<dataset>-<batch_id>" in body


def test_no_playbook_without_an_alert_kind() -> None:
    kinds = {kind.value for kind in AlertKind}
    assert {p.stem for p in PLAYBOOK_DIR.glob("*.md") if p.name != "README.md"} == kinds
    assert playbook_url("gate_failed", PLAYBOOKS + "/") == f"{PLAYBOOKS}/gate_failed.md"
