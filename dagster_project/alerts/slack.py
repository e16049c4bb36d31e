"""The one place Trainyard talks to Slack: slack-sdk's ``WebClient``, behind the router's ``Sender`` protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slack_sdk import WebClient


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


