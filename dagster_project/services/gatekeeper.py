"""The gatekeeper service: the HTTP endpoint lakeFS calls before every merge into ``main``.

A production service (``trainyard gatekeeper``, a container of its own in ``infra/``), not a local stand-in: it
checks the shared secret, hands the lakeFS pre-merge event to
:func:`~dagster_project.publishing.gatekeeper.evaluate_merge` and answers 200 to allow or 412 to refuse. Any error
while deciding refuses the merge: an unanswerable merge must not reach ``main``.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from dagster_project.alerts import AlertKind, AlertOutbox, AlertRouter, playbook_path
from dagster_project.alerts.interactions import InteractionRefused, NotFromSlack, handle, verify
from dagster_project.lakefs import LakeFSRepository, settings_client
from dagster_project.publishing.approvals import ApprovalStore
from dagster_project.publishing.gatekeeper import SECRET_HEADER, MergeDecision, gatekeeper_decider
from dagster_project.settings import Settings
from dagster_project.tenants import load_tenants

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/lakefs/pre-merge"
PLAYBOOKS_PATH = "/playbooks/"
SLACK_INTERACTIVITY_PATH = "/slack/interactivity"
MAX_INTERACTION_BYTES = 64 * 1024
"""Set as the Slack app's Interactivity Request URL (``<public origin>/slack/interactivity``)."""
DECISIONS_KEPT = 1000


class _Handler(BaseHTTPRequestHandler):
    server: _GatekeeperServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._answer(HTTPStatus.OK, {"status": "ok"})
        elif path.startswith(PLAYBOOKS_PATH):
            self._playbook(path[len(PLAYBOOKS_PATH):])
        else:
            self._answer(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def _playbook(self, name: str) -> None:
        """The runbook of an alert kind, so the link in a Slack alert opens on a phone (no repository access)."""
        kind = name.removesuffix(".md")
        if kind not in {k.value for k in AlertKind}:
            self._answer(HTTPStatus.NOT_FOUND, {"error": f"no playbook {name!r}"})
            return
        try:
            data = playbook_path(kind).read_bytes()
        except OSError:  # an install without the ops_playbooks folder: say so rather than fail
            self._answer(HTTPStatus.NOT_FOUND, {"error": f"playbook {name!r} is not installed here; set "
                                                         "TRAINYARD_PLAYBOOK_BASE_URL"})
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/plain; charset=utf-8")  # Markdown, readable as it is
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _slack_interaction(self) -> None:
        if self.server.interactions is None:
            self._answer(HTTPStatus.NOT_FOUND, {"error": "Slack interactivity is not configured"})
            return
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > MAX_INTERACTION_BYTES:  # read nothing unbounded before the check
            self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"ok": False, "error": "body missing or too large"})
            return
        body = self.rfile.read(int(length))
        try:
            # Header names compared case-insensitively (a proxy may lower-case them).
            done = self.server.interactions({k.lower(): v for k, v in self.headers.items()}, body)
        except InteractionRefused as exc:
            status = HTTPStatus.UNAUTHORIZED if isinstance(exc, NotFromSlack) else HTTPStatus.BAD_REQUEST
            self._answer(status, {"ok": False, "error": str(exc)})
            return
        except (LookupError, ValueError) as exc:  # an unknown or already resolved incident: say so, in Slack
            self._answer(HTTPStatus.OK, {"response_type": "ephemeral", "replace_original": False, "text": str(exc)})
            return
        self._answer(HTTPStatus.OK, {"response_type": "ephemeral", "replace_original": False, "text": done})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        if self.path.split("?", 1)[0] == SLACK_INTERACTIVITY_PATH:
            self._slack_interaction()
            return
        if self.path.split("?", 1)[0] != WEBHOOK_PATH:
            self._answer(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        payload: Any = {}
        secret = self.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(secret.encode(), self.server.secret.encode()):
            self._answer(HTTPStatus.UNAUTHORIZED, {"allowed": False, "reason": "missing or wrong shared secret"})
            return
        try:
            payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0") or 0)) or b"{}")
            decision = self.server.decide(payload)
        except Exception as exc:  # refuse on any doubt: an unanswerable merge must not reach main
            decision = MergeDecision(False, f"gatekeeper error: {exc}")
        self.server.decisions.append((payload if isinstance(payload, dict) else {}, decision))
        if not decision.allowed:
            log.warning("refused merge into %s/%s: %s", payload.get("repository_id", "?") if isinstance(
                payload, dict) else "?", payload.get("branch_id", "?") if isinstance(payload, dict) else "?",
                decision.reason)
        status = HTTPStatus.OK if decision.allowed else HTTPStatus.PRECONDITION_FAILED
        self._answer(status, {"allowed": decision.allowed, "reason": decision.reason})


class _GatekeeperServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], secret: str, decide: Callable[[dict], MergeDecision],
                 interactions: Callable[[dict[str, str], bytes], str] | None = None) -> None:
        super().__init__(address, _Handler)
        self.secret = secret
        self.decide = decide
        self.interactions = interactions
        # The latest decisions, for tests and the operator's view; bounded so a long-running service never grows.
        self.decisions: deque[tuple[dict[str, Any], MergeDecision]] = deque(maxlen=DECISIONS_KEPT)


@dataclass
class RunningGatekeeper:
    server: _GatekeeperServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{WEBHOOK_PATH}"

    @property
    def decisions(self) -> deque[tuple[dict[str, Any], MergeDecision]]:
        return self.server.decisions

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> RunningGatekeeper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_gatekeeper(host: str, port: int, secret: str, decide: Callable[[dict], MergeDecision],
                     interactions: Callable[[dict[str, str], bytes], str] | None = None) -> RunningGatekeeper:
    server = _GatekeeperServer((host, port), secret, decide, interactions)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="gatekeeper",
                              daemon=True)
    thread.start()
    return RunningGatekeeper(server, thread)


def start_gatekeeper_from_settings(settings: Settings) -> RunningGatekeeper:
    """The gatekeeper as configured by settings (tenants file, lakeFS, approvals database, shared secret)."""
    parts = urlsplit(settings.gatekeeper_url or "")
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"TRAINYARD_GATEKEEPER_URL={settings.gatekeeper_url!r} needs an explicit host and port")
    client = settings_client(settings)
    store = ApprovalStore(settings.resolved_database_url, schema=settings.database_schema)
    tenants = load_tenants(settings.tenants_file)
    decide = gatekeeper_decider(tenants, lambda name: LakeFSRepository(client, name), store)
    interactions = None
    if signing_secret := settings.slack_signing_secret.get_secret_value():
        router = AlertRouter(AlertOutbox(settings.resolved_database_url, schema=settings.database_schema))
        emails = {uid: email for t in tenants.tenants for email, uid in t.slack_user_ids.items()}

        def interactions(headers: dict[str, str], body: bytes) -> str:
            verify(signing_secret, headers, body)
            return handle(body, router, lambda uid, name: emails.get(uid) or f"slack:{uid}" + (
                f" ({name})" if name else ""))

    return start_gatekeeper(parts.hostname, parts.port, settings.gatekeeper_secret.get_secret_value(), decide,
                            interactions)
