"""The one place Trainyard talks to Slack: slack-sdk's ``WebClient``, behind the router's ``Sender`` protocol.

Why message metadata and a history lookup: when the answer to ``chat.postMessage`` is lost (a timeout, a dropped
connection), the message may or may not be in the channel. Posting again could post it twice; not posting could
lose it. Every message carries its outbox key as Slack message metadata, and a retry first looks for that key in
the channel's recent history. Needs the ``channels:history``/``groups:history`` and ``channels:read``/
``groups:read`` scopes besides ``chat:write``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from slack_sdk import WebClient

METADATA_EVENT = "trainyard_alert"
HISTORY_CLOCK_SKEW = timedelta(minutes=10)
"""How much earlier than the outbox row a message may be stamped by Slack's clock and still be found. The
metadata key is unique, so a wider window only costs a longer history page, never a wrong match."""


class SlackSender:
    """Posts through slack-sdk's ``WebClient`` with its retry handlers disabled: the outbox owns retries, so a
    rate limit or outage is recorded and rescheduled instead of blocking a sensor tick inside the client."""

    def __init__(self, token: str, base_url: str = "https://slack.com/api/", timeout: int = 10) -> None:
        self.client = WebClient(token=token, base_url=base_url if base_url.endswith("/") else base_url + "/",
                                timeout=timeout, retry_handlers=[])
        self._channel_ids: dict[str, str] = {}

    def send(self, channel: str, text: str, blocks: Sequence[dict[str, Any]], thread_ts: str | None = None,
             message_key: str | None = None) -> str:
        metadata = {"event_type": METADATA_EVENT, "event_payload": {"key": message_key}} if message_key else None
        response = self.client.chat_postMessage(
            channel=channel, text=text, blocks=list(blocks), thread_ts=thread_ts,
            reply_broadcast=True if thread_ts else None, unfurl_links=False, unfurl_media=False, metadata=metadata)
        if channel.startswith("#") and response.get("channel"):
            self._channel_ids[channel] = str(response["channel"])
        return str(response["ts"])

    def find(self, channel: str, message_key: str, since: datetime) -> str | None:
        channel_id = self._channel_id(channel)
        if channel_id is None:
            return None
        for message in self._history(channel_id, since):
            metadata = message.get("metadata") or {}
            if metadata.get("event_type") == METADATA_EVENT and (metadata.get("event_payload") or {}).get(
                    "key") == message_key:
                return str(message["ts"])
        return None

    def _history(self, channel_id: str, since: datetime) -> Iterator[dict[str, Any]]:
        cursor = None
        oldest = (since - HISTORY_CLOCK_SKEW).timestamp()  # Slack stamps by its clock, the outbox by ours
        while True:
            page = self.client.conversations_history(channel=channel_id, oldest=f"{oldest:.6f}",
                                                     include_all_metadata=True, limit=200, cursor=cursor)
            yield from page.get("messages", [])
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return

    def _channel_id(self, channel: str) -> str | None:
        """``#name`` -> the channel id history needs (an id is passed through)."""
        if not channel.startswith("#"):
            return channel
        if channel not in self._channel_ids:
            cursor = None
            while True:
                page = self.client.conversations_list(types="public_channel,private_channel", limit=1000,
                                                      exclude_archived=True, cursor=cursor)
                for found in page.get("channels", []):
                    self._channel_ids[f"#{found['name']}"] = str(found["id"])
                cursor = (page.get("response_metadata") or {}).get("next_cursor")
                if channel in self._channel_ids or not cursor:
                    break
        return self._channel_ids.get(channel)
