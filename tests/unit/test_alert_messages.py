"""Slack messages as on-call and data owners read them: evidence as sentences and counts (never Python reprs),
buttons only where Slack can open them, the right people mentioned, and incidents someone can take on."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dagster_project.alerts import AlertOutbox, AlertRouter, IncidentStatus, MessageType, format_blocks, render
from dagster_project.devservices.slack_receiver import invalid_blocks
from dagster_project.gates.notify import gate_alert
from dagster_project.quality.checks import pii_residual
from dagster_project.settings import Settings
from dagster_project.stages.batch import Batch
from dagster_project.tenants import TenantsConfig
from tests.unit.test_alerts import FakeSender
from tests.unit.test_data_checks import WITH_PII

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def pii_alert(example_config: TenantsConfig, playbooks: str, records: int = 110):
    tenant = example_config.tenant("stahlwerk")
    result = pii_residual(WITH_PII, "text")
    result = result.model_copy(update={"value": float(records)})
    batch = Batch(tenant, tenant.datasets[0], "bad-1", repo=None)  # type: ignore[arg-type]
    return gate_alert(result, True, batch, playbooks, "http://127.0.0.1:3000/runs/abc")


def test_offenders_read_as_text_with_counts_per_kind(example_config: TenantsConfig) -> None:
    text, blocks = format_blocks(pii_alert(example_config, "https://docs.example/playbooks"))
    rendered = json.dumps(blocks, ensure_ascii=False)
    assert "['" not in rendered and "kinds=" not in rendered  # no Python reprs
    assert "*Findings by kind:* card 1, email 1, phone 1" in rendered
    assert "record `r3` · matches 2 · kinds card, phone" in rendered
    assert "top 5 of" not in rendered and "comparison" not in rendered
    assert "pii_residual: 110 PII findings are left in texts about to go to vendors; at most 0 allowed" in rendered
    assert invalid_blocks(blocks) is None


def test_buttons_only_for_addresses_slack_can_open(example_config: TenantsConfig) -> None:
    _, web = format_blocks(pii_alert(example_config, "https://docs.example/playbooks"), incident_id=7)
    [actions] = [b for b in web if b["type"] == "actions"]
    assert [(e["text"]["text"], e["url"]) for e in actions["elements"]] == [
        ("View run", "http://127.0.0.1:3000/runs/abc"), ("Playbook", "https://docs.example/playbooks/gate_failed.md")]
    assert "trainyard ack 7 --as" in json.dumps(web, ensure_ascii=False)

    _, local = format_blocks(pii_alert(example_config, "file:///srv/ops_playbooks"))
    [actions] = [b for b in local if b["type"] == "actions"]
    assert [e["text"]["text"] for e in actions["elements"]] == ["View run"]  # a file:// button would be refused
    assert "TRAINYARD_PLAYBOOK_BASE_URL" in json.dumps(local, ensure_ascii=False)
    assert invalid_blocks([{"type": "actions", "elements": [{"type": "button", "url": "file:///x"}]}])


def test_playbooks_default_to_the_trainyard_service_slack_can_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAINYARD_PLAYBOOK_BASE_URL", raising=False)
    settings = Settings(gatekeeper_url="https://trainyard.example:9340/lakefs/pre-merge")
    assert settings.resolved_playbook_base_url == "https://trainyard.example:9340/playbooks"
    assert Settings(gatekeeper_url="", playbook_base_url="https://git.example/ops").resolved_playbook_base_url == \
        "https://git.example/ops"


def test_mentions_come_from_the_tenants_file(example_config: TenantsConfig) -> None:
    northbank = example_config.tenant("northbank")
    assert northbank.mentions_for(approval=False) == ("S0NBONCALL",)
    assert northbank.mentions_for(approval=True) == ("U0PRIYA01", "U0TOM0001")
    text, blocks = format_blocks(pii_alert(example_config, "https://x.example"), mentions=("S0NBONCALL", "U0ANNA001"))
    assert text.startswith("<!subteam^S0NBONCALL> <@U0ANNA001> ")
    assert "<!subteam^S0NBONCALL> <@U0ANNA001>" in json.dumps(blocks, ensure_ascii=False)
    with pytest.raises(ValueError, match="not listed in data_owners"):
        northbank.model_validate({**northbank.model_dump(), "slack_user_ids": {"someone@else.example": "U0X1"}})


def test_an_incident_is_acknowledged_in_the_alerts_thread(tmp_path: Path, example_config: TenantsConfig) -> None:
    router = AlertRouter(AlertOutbox(f"sqlite:///{tmp_path / 'a.db'}"))
    alert = pii_alert(example_config, "https://x.example")
    router.raise_alert(alert, now=T0)
    sender = FakeSender()
    router.deliver(sender, now=T0, mentions=lambda a: ("U0ANNA001",))
    incident = router.outbox.incident(alert.dedupe_key)
    assert incident is not None and incident.acknowledged_by is None

    acked = router.acknowledge(str(incident.id), "anna.becker@stahlwerk.example", "on it",
                               now=T0 + timedelta(minutes=2))
    assert acked.acknowledged_by == "anna.becker@stahlwerk.example" and acked.status is IncidentStatus.OPEN
    router.deliver(sender, now=T0 + timedelta(minutes=3))
    (_, first_text, _, _), (_, second_text, _, thread) = sender.sent
    assert "<@U0ANNA001>" in first_text
    assert thread == "1700000000.000001" and "acknowledged" in second_text and "on it" in second_text
    assert "<@" not in second_text  # the thread reply pages no one again
    [ack] = [m for m in router.outbox.messages() if m.message_type is MessageType.ACKNOWLEDGEMENT]
    assert render(ack)[0] == second_text

    with pytest.raises(LookupError, match="no incident"):
        router.acknowledge("999", "x@y.example")
    router.resolve(alert.dedupe_key, "check passed", now=T0 + timedelta(minutes=5))
    with pytest.raises(ValueError, match="was resolved"):
        router.acknowledge(alert.dedupe_key, "x@y.example")


def test_the_acknowledge_button_appears_where_slack_interactions_reach_trainyard(
        example_config: TenantsConfig, tmp_path: Path) -> None:
    from urllib.parse import urlencode

    from dagster_project.alerts.interactions import NotFromSlack, handle, slack_signature, verify

    alert = pii_alert(example_config, "https://x.example")
    _, plain = format_blocks(alert, incident_id=3)
    _, interactive = format_blocks(alert, incident_id=3, acknowledge=True)
    assert "acknowledge" not in json.dumps(plain)
    [ack] = [e for b in interactive if b["type"] == "actions" for e in b["elements"] if e["action_id"] == "acknowledge"]
    assert ack["value"] == "3" and "url" not in ack and invalid_blocks(interactive) is None

    body = b"payload=%7B%7D"
    headers = {"X-Slack-Request-Timestamp": "1000", "X-Slack-Signature": slack_signature("s3cret", "1000", body)}
    verify("s3cret", headers, body, now=1100)
    for secret, now in (("other", 1100), ("s3cret", 1000 + 301), ("", 1100)):
        with pytest.raises(NotFromSlack):
            verify(secret, headers, body, now=now)
    router = AlertRouter(AlertOutbox(f"sqlite:///{tmp_path / 'i.db'}"))
    url_click = urlencode({"payload": json.dumps({"type": "block_actions", "user": {"id": "U1"},
                                                  "actions": [{"action_id": "view_run"}]})}).encode()
    assert handle(url_click, router, lambda uid, name: uid) == "nothing to record"
