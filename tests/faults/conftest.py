"""The fault-injection suite's services: real processes on loopback that a test can kill, stall and restart.

Why separate from ``tests/conftest.py``: there the services live as long as the session and never fail. Here each
test owns its moto process, its lakeFS emulator process (data on disk, so a restart keeps what was committed, as a
lakeFS server would), a PostgreSQL cluster of its own (stopping the shared server would stop every other test's
database too) and an HTTP proxy in front of S3 that can stall a response in the middle of its body.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from dagster_project.devservices.s3 import wait_until_healthy
from dagster_project.devservices.slack_receiver import RunningSlackReceiver, start_slack_receiver
from dagster_project.settings import EXAMPLE_TENANTS_FILE, SECRET_ENV_VARS
from tests.conftest import LAKEFS_KEY, LAKEFS_SECRET, free_port

WAIT_SECONDS = 60.0


class Service:
    """One server process that can be started, killed (SIGKILL, as a crash) and started again on the same port."""

    def __init__(self, name: str, argv: list[str], url: str, health_path: str, log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.url, self.health_url, self.log = name, argv, url, url + health_path, log
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        wait_until_healthy(self.health_url, timeout=WAIT_SECONDS, process=self.process)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=WAIT_SECONDS)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[Service]:
    port = free_port()
    service = Service("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                      f"http://127.0.0.1:{port}", "/moto-api/", tmp_path / "moto.log",
                      {"MOTO_ALLOW_NONEXISTENT_REGION": "true"})
    service.start()
    yield service
    service.kill()


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Service]:
    port = free_port()
    argv = [sys.executable, "-m", "dagster_project.cli", "lakefs-emulator", "--port", str(port),
            "--data-dir", str(tmp_path / "lakefs"), "--access-key-id", LAKEFS_KEY, "--secret-access-key", LAKEFS_SECRET]
    service = Service("lakefs-emulator", argv, f"http://127.0.0.1:{port}", "/api/v1/healthcheck",
                      tmp_path / "lakefs.log")
    service.start()
    yield service
    service.kill()


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own (initdb, trust auth on loopback), stopped as a crash would stop it."""

    def __init__(self) -> None:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not binaries:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql (scripts/ensure_postgres.sh "
                               "installs them)")
        self.bin = Path(binaries[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="trainyard-faults-pg-"))  # /tmp: readable by the postgres user
        self.data = self.root / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o755)
        self._as_owner([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                        "--no-sync"])

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _as_owner(self, argv: list[str]) -> None:
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=WAIT_SECONDS)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                        str(self.root / "server.log"), "-w", "-t", str(int(WAIT_SECONDS)), "start"])
        psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres").close()

    def stop(self) -> None:
        """``immediate``: no shutdown checkpoint, every connection cut -- what a crash or a kill looks like."""
        self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    cluster.start()
    yield cluster
    cluster.remove()


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream.removeprefix("http://")
        self.stall_suffix = ""
        self.stalls_left = 0
        self.stalled = 0
        self.abandoned = 0
        self.release = threading.Event()


class _ProxyHandler(BaseHTTPRequestHandler):
    """Forward one request to S3; a stalled response sends its headers and half its body, then nothing."""

    server: _Proxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- keep test output quiet
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=WAIT_SECONDS)
        upstream.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
        answer = upstream.getresponse()
        payload = answer.read()
        upstream.close()
        stall = (self.command == "GET" and self.server.stall_suffix
                 and self.path.split("?")[0].endswith(self.server.stall_suffix) and self.server.stalls_left > 0)
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if stall:
            self.server.stalls_left -= 1
            self.server.stalled += 1
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            if self._client_hangs_up():
                self.server.abandoned += 1
            self.close_connection = True
            return
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _client_hangs_up(self) -> bool:
        """Wait until the client closes the connection (its read timeout), the proxy is closed or WAIT_SECONDS."""
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline and not self.server.release.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.1)
            if readable:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
        return False

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward  # noqa: N815 -- http.server's spelling


class StallingProxy:
    def __init__(self, upstream: str) -> None:
        self._server = _Proxy(upstream)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def stall(self, suffix: str, times: int) -> None:
        self._server.stall_suffix, self._server.stalls_left = suffix, times

    @property
    def stalled(self) -> int:
        return self._server.stalled

    @property
    def abandoned(self) -> int:
        """Stalled responses the client gave up on (closed the connection) before the proxy did."""
        return self._server.abandoned

    def close(self) -> None:
        self._server.release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def slack() -> Iterator[RunningSlackReceiver]:
    with start_slack_receiver(token="xoxb-faults") as receiver:
        yield receiver


@pytest.fixture
def fault_env(tmp_path: Path, moto: Service, emulator: Service, slack: RunningSlackReceiver,
              monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Point the platform at this test's services; ``configure(s3_url=..., database_url=...)`` overrides."""

    def configure(s3_url: str | None = None, database_url: str | None = None, **extra: str) -> None:
        env = {
            "TRAINYARD_HOME": str(tmp_path / "home"),
            "TRAINYARD_S3_ENDPOINT_URL": s3_url or moto.url,
            "TRAINYARD_S3_ACCESS_KEY_ID": "test",
            "TRAINYARD_S3_SECRET_ACCESS_KEY": "test-secret",
            "TRAINYARD_LANDING_BUCKET": f"landing-{uuid.uuid4().hex[:12]}",
            "TRAINYARD_LAKEFS_URL": emulator.url,
            "TRAINYARD_LAKEFS_ACCESS_KEY_ID": LAKEFS_KEY,
            "TRAINYARD_LAKEFS_SECRET_ACCESS_KEY": LAKEFS_SECRET,
            "TRAINYARD_TENANTS_FILE": str(EXAMPLE_TENANTS_FILE),
            "TRAINYARD_GATEKEEPER_URL": "",
            "TRAINYARD_DATABASE_URL": database_url or f"sqlite:///{tmp_path / 'platform.db'}",
            "TRAINYARD_SLACK_BOT_TOKEN": "xoxb-faults",
            "TRAINYARD_SLACK_BASE_URL": slack.base_url,
            **extra,
        }
        for name in SECRET_ENV_VARS.values():
            env.setdefault(name, "fault-secret")
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    return configure


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance
