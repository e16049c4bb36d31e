"""On-call acting from Slack: the *Acknowledge* button of an alert, received by the Trainyard service.

Why its own module: the button reaches Trainyard over the public internet, so every request is checked against
Slack's signing secret (``v0`` HMAC-SHA256 of ``v0:<timestamp>:<body>``, at most five minutes old, as Slack
documents) before anything is recorded; then it is the same acknowledgement as ``trainyard ack`` -- one record on
the incident, one message in the alert's thread -- with the person named by the email the tenants file gives
their Slack id (``slack_user_ids``), or by their Slack id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs

from dagster_project.alerts.router import AlertRouter

ACK_ACTION = "acknowledge"
MAX_AGE_SECONDS = 300


class InteractionRefused(ValueError):
    """A request Trainyard does not act on: not an interaction it understands."""


class NotFromSlack(InteractionRefused):
    """Not signed by Slack with the signing secret, or too old (a replay)."""


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> None:
    """Raise :class:`NotFromSlack` unless Slack signed ``body`` with ``secret`` in the last five minutes."""
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get("x-slack-request-timestamp", "")
    signature = lower.get("x-slack-signature", "")
    if not secret:
        raise NotFromSlack("Slack interactivity is not configured (TRAINYARD_SLACK_SIGNING_SECRET)")
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > MAX_AGE_SECONDS:
        raise NotFromSlack("missing or stale X-Slack-Request-Timestamp")
    if not hmac.compare_digest(slack_signature(secret, timestamp, body).encode(), signature.encode("utf-8", "replace")):
        raise NotFromSlack("bad X-Slack-Signature")


def handle(body: bytes, router: AlertRouter, who: Callable[[str, str], str]) -> str:
    """Record what the interaction asks (an acknowledgement); returns what was done. ``who(user_id, name)`` names
    the person for the record."""
    try:
        payload = json.loads(parse_qs(body.decode("utf-8"))["payload"][0])
    except (KeyError, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise InteractionRefused("not a Slack interaction payload") from exc
    if payload.get("type") != "block_actions":
        raise InteractionRefused(f"interaction type {payload.get('type')!r} is not one Trainyard handles")
    actions = [a for a in payload.get("actions", []) if a.get("action_id") == ACK_ACTION]
    if not actions:  # Slack also reports clicks on URL buttons (View run, Playbook): nothing to record
        return "nothing to record"
    user = payload.get("user") or {}
    actor = who(str(user.get("id", "")), str(user.get("username") or user.get("name") or ""))
    incident = router.acknowledge(str(actions[0].get("value", "")), actor, "from Slack")
    return f"incident {incident.id} acknowledged by {actor}"
