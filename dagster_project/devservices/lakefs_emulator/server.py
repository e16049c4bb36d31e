"""The runnable lakeFS emulator: the application object, the threaded HTTP server and start/serve helpers.

Why this exists: it is what tests, the embedded dev services and ``trainyard lakefs-emulator`` run; it
checks lakeFS's HTTP basic auth, dispatches ``/api/v1`` requests to the registered handlers, answers with
the spec's ``Error`` documents and shuts down cleanly (closing keep-alive connections).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .common import API_PREFIX, ApiError
from .handlers.health import _healthcheck
from .routing import Request, Response, error_response, match_route
from .store import Store


class LakeFSEmulator:
    """The emulated lakeFS: credentials, persistent state, and request dispatch."""

    def __init__(self, data_dir: Path | str, access_key_id: str, secret_access_key: str) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.store = Store(self.data_dir)

    def authenticate(self, authorization: str | None) -> str | None:
        """Return the user id for valid basic-auth credentials (lakeFS uses the key's owner)."""
        if not authorization or not authorization.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        key, _, secret = decoded.partition(":")
        if key == self.access_key_id and secret == self.secret_access_key:
            return key
        return None

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> Response:
        """Route one HTTP request and turn domain errors into the spec's Error documents."""
        parts = urlsplit(target)
        if not parts.path.startswith(API_PREFIX + "/"):
            return error_response(404, "path not found")
        try:
            found = match_route(method, parts.path[len(API_PREFIX) :])
            if found is None:
                return error_response(404, "path not found")
            handler, params = found
            user = ""
            if handler is not _healthcheck:
                user = self.authenticate(headers.get("Authorization")) or ""
                if not user:
                    return error_response(401, "error authenticating request")
            query = parse_qs(parts.query, keep_blank_values=True)
            return handler(self, Request(method, params, query, headers, body, user))
        except ApiError as err:
            return error_response(err.status, err.message, err.extra)

    def close(self) -> None:
        self.store.close()


class _Server(ThreadingHTTPServer):
    """Threading server that can close idle keep-alive connections so shutdown never hangs."""

    daemon_threads = False  # server_close() joins handler threads, so stop() leaves nothing running
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: LakeFSEmulator) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self._connections_lock:
            self._connections.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes; avoid 40 ms delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Stay quiet: the emulator runs inside tests and the services command."""

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            response = self.server.app.handle(self.command, self.path, self.headers, body)
        except Exception as err:  # noqa: BLE001 - an emulator bug must still answer with the Error schema
            response = error_response(500, f"internal error: {err}")
        self.send_response(response.status)
        if response.content_type:
            self.send_header("Content-Type", response.content_type)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD" and response.status not in (204, 304):
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _dispatch


class RunningEmulator:
    """A background emulator server; ``url`` excludes and ``api_url`` includes ``/api/v1``."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        host, port = server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self.api_url = self.url + API_PREFIX

    def stop(self) -> None:
        """Stop serving, drop open connections, wait for the thread and close the database."""
        if not self._thread.is_alive():
            return
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._server.app.close()

    def __enter__(self) -> RunningEmulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_emulator(
    data_dir: Path | str, access_key_id: str, secret_access_key: str, host: str = "127.0.0.1", port: int = 0
) -> RunningEmulator:
    """Serve in a background thread (port 0 = pick a free port)."""
    server = _Server((host, port), LakeFSEmulator(data_dir, access_key_id, secret_access_key))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="lakefs-emulator", daemon=True)
    thread.start()
    return RunningEmulator(server, thread)


def serve(host: str, port: int, data_dir: Path | str, access_key_id: str, secret_access_key: str) -> None:
    """Serve in the foreground until SIGINT/SIGTERM."""
    running = start_emulator(data_dir, access_key_id, secret_access_key, host, port)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"lakeFS emulator listening on {running.api_url} (data in {data_dir})", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        running.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
