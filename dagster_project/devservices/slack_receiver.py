"""A local stand-in for Slack's Web API: a real HTTP server that slack-sdk's ``WebClient`` can post to.

Why: alert delivery must be proven end to end -- through slack-sdk's real HTTP requests, status codes,
``Retry-After`` headers and error bodies -- without a Slack workspace. Pointing ``WebClient(base_url=...)`` here
is the only difference from production. The receiver records every accepted message for assertions and can be
told to misbehave the way Slack does: 5xx errors, 429 rate limits, an outage, a missing channel, a bad token, and
a response lost after the message was posted.

Speaks: ``POST /api/chat.postMessage`` (JSON, form-urlencoded or multipart body, with message ``metadata``),
``conversations.list``, ``conversations.history`` (``include_all_metadata``) and ``POST /api/auth.test``;
any other method answers ``{"ok": false, "error": "unknown_method"}`` like Slack does.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

API_PREFIX = "/api/"



def invalid_blocks(blocks: list) -> str | None:
    """The Block Kit rules Slack enforces that a rendering can get wrong: at most 50 blocks, a header's plain text
    at most 150 characters, section text at most 3000, buttons' URLs web addresses (Slack refuses ``file://``)."""
    if len(blocks) > 50:
        return "no more than 50 items allowed [json-pointer:/blocks]"
    for i, block in enumerate(blocks):
        text = (block.get("text") or {}).get("text", "") if isinstance(block.get("text"), dict) else ""
        if block.get("type") == "header" and len(text) > 150:
            return f"must be less than 151 characters [json-pointer:/blocks/{i}/text]"
        if block.get("type") == "section" and len(text) > 3000:
            return f"must be less than 3001 characters [json-pointer:/blocks/{i}/text]"
        for j, element in enumerate(block.get("elements", []) if block.get("type") == "actions" else []):
            url = element.get("url")
            if url is not None and not str(url).startswith(("http://", "https://")):
                return f"invalid url [json-pointer:/blocks/{i}/elements/{j}/url]"
    return None


@dataclass(frozen=True)

class ReceivedMessage:
    """A message Slack would have posted."""

    channel: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    ts: str
    thread_ts: str | None = None
    metadata: dict[str, Any] | None = None


def channel_id(name: str) -> str:
    """A stable Slack-style id for a channel name (history and ``conversations.list`` use ids)."""
    return "C" + hashlib.sha1(name.lstrip("#").encode("utf-8")).hexdigest()[:10].upper()


@dataclass(frozen=True)
class ReceivedRequest:
    """Every request that reached the server, including refused ones (``status`` is what was answered, 0 when
    the connection was dropped)."""

    method: str
    status: int
    body: dict[str, Any]
    at: float


@dataclass
class _Behaviour:
    fail_next: int = 0
    fail_status: int = 500
    rate_limit_next: int = 0
    retry_after: float = 30
    down: bool = False
    down_status: int | None = None
    lose_next_response: int = 0
    """Accept the next messages, then drop the connection instead of answering (the outcome is unknown)."""
    channel_errors: dict[str, str] = field(default_factory=dict)


class SlackReceiverState:
    """Recorded traffic and failure switches, shared by the handler threads."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.lock = threading.Lock()
        self.behaviour = _Behaviour()
        self._messages: list[ReceivedMessage] = []
        self.known_channels: set[str] = set()
        """Channels that exist before anything is posted to them (``conversations.list`` shows them)."""
        self._requests: list[ReceivedRequest] = []
        self._counter = 0

    def next_ts(self) -> str:
        """Like Slack's: the post time in microseconds, unique and increasing within the workspace."""
        self._counter = max(self._counter + 1, int(time.time() * 1_000_000))
        return f"{self._counter // 1_000_000}.{self._counter % 1_000_000:06d}"

    def record_request(self, method: str, status: int, body: dict[str, Any]) -> None:
        self._requests.append(ReceivedRequest(method, status, body, time.time()))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- keep test output quiet
        return

    def do_GET(self) -> None:  # noqa: N802
        self._answer(405, {"ok": False, "error": "method_not_allowed"})

    def do_POST(self) -> None:  # noqa: N802
        state = self.server.state
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        method = self.path.split("?", 1)[0]
        method = method[len(API_PREFIX):] if method.startswith(API_PREFIX) else method.lstrip("/")
        try:
            body = self._parse_body(raw)
        except (ValueError, UnicodeDecodeError):
            body = {}
        with state.lock:
            status, payload, headers = self._decide(state, method, body)
            if method == "chat.postMessage" and payload.get("ok") and state.behaviour.lose_next_response > 0:
                state.behaviour.lose_next_response -= 1
                status = 0
            state.record_request(method, status, body)
        if status == 0:  # "down": drop the connection without an answer, like a dead load balancer
            self.close_connection = True
            return
        self._answer(status, payload, headers)

    def _decide(self, state: SlackReceiverState, method: str,
                body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        behaviour = state.behaviour
        if behaviour.down:
            status = behaviour.down_status or 0
            return status, {"ok": False, "error": "service_unavailable"}, {}
        if behaviour.rate_limit_next > 0:
            behaviour.rate_limit_next -= 1
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(int(behaviour.retry_after))}
        if behaviour.fail_next > 0:
            behaviour.fail_next -= 1
            return behaviour.fail_status, {"ok": False, "error": "internal_error"}, {}
        if state.token is not None and self.headers.get("Authorization") != f"Bearer {state.token}":
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        if method == "auth.test":
            return 200, {"ok": True, "url": "https://trainyard-local.slack.com/", "team": "trainyard-local",
                         "user": "trainyard-alerts", "team_id": "T00000000", "user_id": "U00000000",
                         "bot_id": "B00000000"}, {}
        if method == "chat.postMessage":
            channel = str(body.get("channel") or "")
            if not channel:
                return 200, {"ok": False, "error": "channel_not_found"}, {}
            if channel in behaviour.channel_errors:
                return 200, {"ok": False, "error": behaviour.channel_errors[channel]}, {}
            blocks = body.get("blocks")
            if isinstance(blocks, str):
                blocks = json.loads(blocks)
            if invalid := invalid_blocks(blocks or []):  # as Slack does: the whole message is refused
                return 200, {"ok": False, "error": "invalid_blocks", "errors": [invalid]}, {}
            text = body.get("text")
            if not text and not blocks:
                return 200, {"ok": False, "error": "no_text"}, {}
            ts = state.next_ts()
            thread_ts = body.get("thread_ts") or None
            metadata = body.get("metadata")
            if isinstance(metadata, str):
                metadata = json.loads(metadata)
            state._messages.append(ReceivedMessage(channel, text, blocks, ts, thread_ts, metadata or None))
            message = {"type": "message", "text": text or "", "ts": ts, "bot_id": "B00000000"}
            if blocks:
                message["blocks"] = blocks
            return 200, {"ok": True, "channel": channel_id(channel), "ts": ts, "message": message}, {}
        if method == "conversations.list":
            names = sorted({m.channel for m in state._messages} | set(state.known_channels))
            return 200, {"ok": True, "channels": [{"id": channel_id(n), "name": n.lstrip("#")} for n in names],
                         "response_metadata": {"next_cursor": ""}}, {}
        if method == "conversations.history":
            wanted, oldest = str(body.get("channel") or ""), float(body.get("oldest") or 0)
            with_metadata = str(body.get("include_all_metadata", "")).lower() in ("1", "true")
            found = [m for m in reversed(state._messages)
                     if channel_id(m.channel) == wanted and float(m.ts) >= oldest]
            return 200, {"ok": True, "messages": [
                {"type": "message", "ts": m.ts, "text": m.text or "",
                 **({"metadata": m.metadata} if with_metadata and m.metadata else {})} for m in found],
                "has_more": False, "response_metadata": {"next_cursor": ""}}, {}
        return 200, {"ok": False, "error": "unknown_method"}, {}

    def _parse_body(self, raw: bytes) -> dict[str, Any]:
        content_type = self.headers.get("Content-Type", "")
        if not raw:
            return {}
        if content_type.startswith("application/json"):
            parsed = json.loads(raw.decode("utf-8"))
            return parsed if isinstance(parsed, dict) else {}
        if content_type.startswith("multipart/form-data"):
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
            return {part.get_param("name", header="content-disposition"): part.get_content()
                    for part in message.iter_parts()}
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))

    def _answer(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: SlackReceiverState) -> None:
        super().__init__(address, _Handler)
        self.state = state


@dataclass
class RunningSlackReceiver:
    """A started receiver: point ``WebClient(base_url=receiver.base_url)`` at it."""

    host: str
    port: int
    state: SlackReceiverState
    _server: _Server
    _thread: threading.Thread

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}{API_PREFIX}"

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self.state.lock:
            return list(self.state._messages)

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self.state.lock:
            return list(self.state._requests)

    def messages_to(self, channel: str) -> list[ReceivedMessage]:
        return [message for message in self.messages if message.channel == channel]

    def lose_next_response(self, n: int = 1) -> None:
        """Accept the next ``n`` messages but drop the connection before answering (Slack posted them)."""
        with self.state.lock:
            self.state.behaviour.lose_next_response = n

    def fail_next(self, n: int, status: int = 500) -> None:
        """Answer the next ``n`` requests with ``status`` and ``{"ok": false, "error": "internal_error"}``."""
        with self.state.lock:
            self.state.behaviour.fail_next, self.state.behaviour.fail_status = n, status

    def rate_limit_next(self, n: int, retry_after: float = 30) -> None:
        """Answer the next ``n`` requests with 429, ``Retry-After: <retry_after>`` and ``error: ratelimited``."""
        with self.state.lock:
            self.state.behaviour.rate_limit_next, self.state.behaviour.retry_after = n, retry_after

    def set_down(self, down: bool = True, status: int | None = None) -> None:
        """Simulate an outage: drop every connection without answering, or answer ``status`` (e.g. 503)."""
        with self.state.lock:
            self.state.behaviour.down, self.state.behaviour.down_status = down, status

    def channel_not_found(self, channel: str) -> None:
        """Posting to ``channel`` answers ``{"ok": false, "error": "channel_not_found"}``, as for a deleted channel."""
        self.fail_channel(channel, "channel_not_found")

    def fail_channel(self, channel: str, error: str) -> None:
        """Posting to ``channel`` answers ``{"ok": false, "error": error}`` (e.g. ``not_in_channel``)."""
        with self.state.lock:
            self.state.behaviour.channel_errors[channel] = error

    def reset(self) -> None:
        """Clear recorded traffic and every failure switch."""
        with self.state.lock:
            self.state.behaviour = _Behaviour()
            self.state._messages.clear()
            self.state._requests.clear()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> RunningSlackReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_slack_receiver(host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> RunningSlackReceiver:
    """Start the receiver in a background thread (``port=0`` picks a free port). With ``token`` set, requests
    without ``Authorization: Bearer <token>`` are refused with ``invalid_auth``."""
    state = SlackReceiverState(token)
    server = _Server((host, port), state)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="slack-receiver",
                              daemon=True)
    thread.start()
    return RunningSlackReceiver(host, server.server_address[1], state, server, thread)
