"""Alert delivery end to end: a real PostgreSQL outbox, slack-sdk over HTTP, and the local Slack receiver.

Time is controlled by passing ``now=`` to the router, so retries and throttle windows are tested without sleeping.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from dagster_project.alerts import (
    Alert,
    AlertKind,
    AlertOutbox,
    AlertRouter,
    Decision,
    IncidentStatus,
    MessageType,
    OutboxStatus,
    SlackSender,
    playbook_url,
)
from dagster_project.devservices.slack_receiver import RunningSlackReceiver, channel_id, start_slack_receiver
from resources.platform_db import PlatformDatabaseResource
from resources.slack import AlertsResource, SlackResource
from tests.conftest import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER

TOKEN = "xoxb-trainyard-test"
CHANNEL = "#northbank-data-oncall"
PLAYBOOKS = "https://git.example/trainyard/blob/main/ops_playbooks"


def pg_url(database: str) -> str:
    return f"postgresql+psycopg2://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{database}"


@pytest.fixture
def schema() -> str:
    return f"alerts_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def outbox(postgres_database: str, schema: str) -> Iterator[AlertOutbox]:
    box = AlertOutbox(pg_url(postgres_database), schema=schema)
    yield box
    box.dispose()


@pytest.fixture
def router(outbox: AlertOutbox) -> AlertRouter:
    return AlertRouter(outbox, throttle=timedelta(minutes=60))


@pytest.fixture
def slack() -> Iterator[RunningSlackReceiver]:
    with start_slack_receiver(token=TOKEN) as receiver:
        yield receiver


@pytest.fixture
def sender(slack: RunningSlackReceiver) -> SlackSender:
    return SlackSender(token=TOKEN, base_url=slack.base_url, timeout=5)


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def gate_alert(**overrides: Any) -> Alert:
    values: dict[str, Any] = {
        "kind": AlertKind.GATE_FAILED, "tenant": "northbank", "dataset": "support_intents", "batch_id": "drop-0042",
        "branch": "batch-support_intents-drop-0042", "title": "Agreement gate failed for northbank/support_intents",
        "metric": "agreement", "value": 0.7123, "threshold": 0.85, "comparison": ">=",
        "details": {"sample_size": 412, "worst_items": [{"item_id": "it-17", "agreement": 0.3333}]},
        "playbook_url": playbook_url(AlertKind.GATE_FAILED, PLAYBOOKS),
        "run_url": "http://127.0.0.1:3000/runs/8f1c", "channel": CHANNEL,
    }
    values.update(overrides)
    return Alert(**values)


def test_tables_live_in_their_own_postgres_schema(outbox: AlertOutbox, schema: str, postgres_connection) -> None:
    with postgres_connection.cursor() as cursor:
        cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,))
        tables = [row[0] for row in cursor.fetchall()]
    assert tables == ["trainyard_alert_acknowledgements", "trainyard_alert_incidents", "trainyard_alert_outbox"]
    AlertOutbox(outbox.engine.url, schema=schema).dispose()  # creating again is a no-op


def test_failed_gate_posts_exactly_one_actionable_message(router: AlertRouter, slack: RunningSlackReceiver,
                                                          sender: SlackSender, now: datetime) -> None:
    alert = gate_alert()
    assert router.raise_alert(alert, now=now).decision is Decision.QUEUED
    report = router.deliver(sender, now=now)
    assert (report.sent, report.retried, report.failed) == (1, 0, 0)

    [message] = slack.messages
    assert message.channel == CHANNEL
    blocks = str(message.blocks)
    for fragment in ("agreement", "0.7123", "0.85", "batch-support_intents-drop-0042", alert.playbook_url, "it-17"):
        assert fragment in blocks, fragment
        assert fragment in (message.text or "") or fragment == "it-17", fragment

    for minute in range(1, 6):
        assert router.raise_alert(alert, now=now + timedelta(minutes=minute)).decision is Decision.THROTTLED
        router.deliver(sender, now=now + timedelta(minutes=minute))
    assert len(slack.messages) == 1
    incident = router.outbox.incident(alert.dedupe_key)
    assert incident is not None and incident.occurrences == 6 and incident.status is IncidentStatus.OPEN
    [row] = router.outbox.messages()
    assert row.status is OutboxStatus.SENT and row.slack_ts == message.ts and row.sent_at == now


@pytest.mark.parametrize("outage", [None, 503], ids=["connection-dropped", "http-503"])
def test_slack_down_loses_nothing(router: AlertRouter, slack: RunningSlackReceiver, sender: SlackSender,
                                  now: datetime, outage: int | None) -> None:
    slack.set_down(True, status=outage)
    router.raise_alert(gate_alert(), now=now)
    router.raise_alert(gate_alert(batch_id="drop-0043", branch="batch-support_intents-drop-0043"), now=now)

    first = router.deliver(sender, now=now)
    assert first.sent == 0 and first.retried == 1  # the pass stops at the first failure: no hammering
    assert first.next_due == now  # the second message was not tried yet
    second = router.deliver(sender, now=now + timedelta(seconds=5))
    assert second.sent == 0 and second.retried == 1
    assert slack.messages == []
    pending = router.outbox.messages(status=OutboxStatus.PENDING)
    assert len(pending) == 2 and all(m.last_error for m in pending)
    assert router.deliver(sender, now=now + timedelta(seconds=10)).retried == 0  # backing off: nothing due

    slack.set_down(False)
    report = router.deliver(sender, now=now + timedelta(minutes=5))
    assert report.sent == 2 and report.next_due is None
    assert [m.text.split("batch ")[1][:9] for m in slack.messages] == ["drop-0042", "drop-0043"]  # oldest first


def test_rate_limit_waits_for_retry_after(router: AlertRouter, slack: RunningSlackReceiver, sender: SlackSender,
                                          now: datetime) -> None:
    router.raise_alert(gate_alert(), now=now)
    router.raise_alert(gate_alert(batch_id="drop-0043"), now=now)
    slack.rate_limit_next(1, retry_after=120)

    report = router.deliver(sender, now=now)
    assert (report.sent, report.retried) == (0, 1)
    assert report.next_due == now + timedelta(seconds=120)
    assert all(m.next_attempt_at == now + timedelta(seconds=120) for m in router.outbox.messages())
    requests_after_429 = len(slack.requests)
    assert requests_after_429 == 1  # the channel was not tried again in the same pass

    assert router.deliver(sender, now=now + timedelta(seconds=119)).sent == 0
    assert len(slack.requests) == requests_after_429  # nothing was sent before Retry-After
    report = router.deliver(sender, now=now + timedelta(seconds=120))
    assert report.sent == 2
    assert len(slack.messages) == 2
    first = router.outbox.messages()[0]
    assert first.attempts == 2 and first.status is OutboxStatus.SENT


def test_transient_5xx_backs_off_exponentially(router: AlertRouter, slack: RunningSlackReceiver,
                                               sender: SlackSender, now: datetime) -> None:
    router.raise_alert(gate_alert(), now=now)
    slack.fail_next(2, status=500)
    assert router.deliver(sender, now=now).retried == 1
    assert router.outbox.messages()[0].next_attempt_at == now + timedelta(seconds=30)
    assert router.deliver(sender, now=now + timedelta(seconds=30)).retried == 1
    assert router.outbox.messages()[0].next_attempt_at == now + timedelta(seconds=90)
    assert router.deliver(sender, now=now + timedelta(seconds=89)).sent == 0
    assert router.deliver(sender, now=now + timedelta(seconds=90)).sent == 1
    assert len(slack.messages) == 1


def test_channel_not_found_is_kept_as_failed_permanently(router: AlertRouter, slack: RunningSlackReceiver,
                                                         sender: SlackSender, now: datetime) -> None:
    slack.channel_not_found("#deleted-channel")
    router.raise_alert(gate_alert(channel="#deleted-channel"), now=now)
    router.raise_alert(gate_alert(tenant="hollandia", dataset="defect_reports", channel="#hollandia-oncall"), now=now)

    report = router.deliver(sender, now=now)
    assert (report.sent, report.failed) == (1, 1)
    assert [m.channel for m in slack.messages] == ["#hollandia-oncall"]
    [failed] = router.outbox.messages(status=OutboxStatus.FAILED_PERMANENTLY)
    assert failed.channel == "#deleted-channel" and "channel_not_found" in (failed.last_error or "")
    assert router.deliver(sender, now=now + timedelta(hours=1)).failed == 0  # not retried, not deleted
    assert router.outbox.message(failed.id) is not None


def test_bad_token_is_a_permanent_failure(router: AlertRouter, slack: RunningSlackReceiver, now: datetime) -> None:
    router.raise_alert(gate_alert(), now=now)
    report = router.deliver(SlackSender(token="xoxb-wrong", base_url=slack.base_url), now=now)
    assert report.failed == 1
    assert "invalid_auth" in (router.outbox.messages()[0].last_error or "")


def test_resolve_sends_a_recovery_in_the_alert_thread(router: AlertRouter, slack: RunningSlackReceiver,
                                                      sender: SlackSender, now: datetime) -> None:
    alert = gate_alert()
    router.raise_alert(alert, now=now)
    router.deliver(sender, now=now)
    assert router.resolve(alert.dedupe_key, "priya.shah", now=now + timedelta(minutes=30)) is True
    assert router.resolve(alert.dedupe_key, "priya.shah", now=now + timedelta(minutes=31)) is False
    router.deliver(sender, now=now + timedelta(minutes=30))

    original, recovery = slack.messages
    assert recovery.channel == original.channel == CHANNEL
    assert recovery.thread_ts == original.ts
    assert "priya.shah" in (recovery.text or "") and "Resolved" in str(recovery.blocks)
    types = [m.message_type for m in router.outbox.messages(dedupe_key=alert.dedupe_key)]
    assert types == [MessageType.ALERT, MessageType.RECOVERY]
    incident = router.outbox.incident(alert.dedupe_key)
    assert incident is not None and incident.status is IncidentStatus.RESOLVED


def race(routers: list[AlertRouter], alert: Alert, now: datetime, threads_per_router: int) -> list[Decision]:
    """Raise ``alert`` from every router in several threads released at the same instant."""
    barrier = threading.Barrier(len(routers) * threads_per_router)
    decisions: list[Decision] = []
    errors: list[BaseException] = []

    def raise_it(router: AlertRouter) -> None:
        try:
            barrier.wait(timeout=10)
            decisions.append(router.raise_alert(alert, now=now).decision)
        except BaseException as error:  # noqa: BLE001 -- surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=raise_it, args=(router,)) for router in routers
               for _ in range(threads_per_router)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    return decisions


def test_concurrent_raisers_queue_one_message(postgres_database: str, schema: str, outbox: AlertOutbox,
                                              slack: RunningSlackReceiver, sender: SlackSender, now: datetime) -> None:
    routers = [AlertRouter(AlertOutbox(pg_url(postgres_database), schema=schema)) for _ in range(2)]
    for round_ in range(5):
        alert = gate_alert(batch_id=f"race-{round_}")
        # a new incident (nothing to lock yet: the unique incident row decides) ...
        decisions = race(routers, alert, now, threads_per_router=4)
        assert sorted(decisions) == [Decision.QUEUED] + [Decision.THROTTLED] * 7
        assert len(outbox.messages(dedupe_key=alert.dedupe_key)) == 1
        incident = outbox.incident(alert.dedupe_key)
        assert incident is not None and incident.occurrences == 8
        # ... and an existing incident whose throttle window just ended (the row lock decides)
        routers[0].deliver(sender, now=now)
        later = now + timedelta(minutes=61)
        decisions = race(routers, alert, later, threads_per_router=4)
        assert sorted(decisions) == [Decision.QUEUED] + [Decision.THROTTLED] * 7
        assert len(outbox.messages(dedupe_key=alert.dedupe_key)) == 2
    assert len(slack.messages) == 5
    for router in routers:
        router.outbox.dispose()


def test_concurrent_deliverers_send_each_message_once(postgres_database: str, schema: str, router: AlertRouter,
                                                      slack: RunningSlackReceiver, now: datetime) -> None:
    for i in range(12):
        router.raise_alert(gate_alert(batch_id=f"drop-{i:04d}", channel=f"#chan-{i % 3}"), now=now)
    others = [AlertRouter(AlertOutbox(pg_url(postgres_database), schema=schema)) for _ in range(3)]
    threads = [threading.Thread(target=r.deliver, args=(SlackSender(TOKEN, slack.base_url),), kwargs={"now": now})
               for r in others]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(slack.messages) == 12
    assert len({m.text for m in slack.messages}) == 12
    assert all(m.status is OutboxStatus.SENT for m in router.outbox.messages())
    for other in others:
        other.outbox.dispose()


def test_dagster_resources_wire_the_same_flow(postgres_database: str, schema: str, slack: RunningSlackReceiver,
                                              now: datetime) -> None:
    database = PlatformDatabaseResource(url=pg_url(postgres_database), db_schema=schema)
    alerts = AlertsResource(database=database, throttle_minutes=5, playbook_base_url=PLAYBOOKS)
    slack_resource = SlackResource(token=TOKEN, base_url=slack.base_url)
    router = alerts.router()
    assert router.throttle == timedelta(minutes=5)
    alert = gate_alert(kind=AlertKind.MERGE_CONFLICT, playbook_url=alerts.playbook_url(AlertKind.MERGE_CONFLICT),
                       metric=None, value=None, threshold=None, comparison=None)
    assert router.raise_alert(alert, now=now).queued
    assert router.raise_alert(alert, now=now + timedelta(minutes=4)).decision is Decision.THROTTLED
    assert router.raise_alert(alert, now=now + timedelta(minutes=6)).decision is Decision.THROTTLED  # still unsent
    assert router.deliver(slack_resource.sender(), now=now + timedelta(minutes=6)).sent == 1
    assert router.raise_alert(alert, now=now + timedelta(minutes=12)).queued
    assert router.deliver(slack_resource.sender(), now=now + timedelta(minutes=12)).sent == 1
    assert "Repeated 4 times" in (slack.messages[1].text or "")
    assert f"{PLAYBOOKS}/merge_conflict.md" in (slack.messages[0].text or "")


def test_receiver_accepts_form_and_json_bodies_like_slack(slack: RunningSlackReceiver) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    form = httpx.post(slack.base_url + "chat.postMessage", headers=auth,
                      data={"channel": "#form", "text": "hi", "blocks": '[{"type": "divider"}]'}).json()
    as_json = httpx.post(slack.base_url + "chat.postMessage", headers=auth, json={"channel": "#json", "text": "yo"})
    assert form["ok"] is True and form["channel"] == channel_id("#form") and form["ts"]  # an id, as Slack answers
    assert as_json.json()["ok"] is True
    assert [(m.channel, m.blocks) for m in slack.messages] == [("#form", [{"type": "divider"}]), ("#json", None)]
    assert httpx.post(slack.base_url + "auth.test", headers=auth).json()["ok"] is True
    assert httpx.post(slack.base_url + "auth.test").json() == {"ok": False, "error": "invalid_auth"}
    assert SlackSender(TOKEN, slack.base_url).client.auth_test()["team"] == "trainyard-local"
    slack.rate_limit_next(1, retry_after=7)
    limited = httpx.post(slack.base_url + "chat.postMessage", headers=auth, json={"channel": "#json", "text": "yo"})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert limited.json() == {"ok": False, "error": "ratelimited"}


def test_a_lost_answer_from_slack_does_not_post_the_alert_twice(router: AlertRouter, slack: RunningSlackReceiver,
                                                                sender: SlackSender, now: datetime) -> None:
    slack.lose_next_response(1)  # Slack posts the message, then the connection drops before the answer
    router.raise_alert(gate_alert(), now=now)
    first = router.deliver(sender, now=now)
    assert (first.sent, first.retried) == (0, 1) and len(slack.messages) == 1

    retry = router.deliver(sender, now=now + timedelta(minutes=5))
    assert retry.sent == 1 and len(slack.messages) == 1  # found by its metadata in the channel's history
    [row] = router.outbox.messages()
    assert row.status is OutboxStatus.SENT and row.slack_ts == slack.messages[0].ts
    assert slack.messages[0].metadata == {"event_type": "trainyard_alert",
                                          "event_payload": {"key": f"trainyard-outbox-{row.id}"}}
