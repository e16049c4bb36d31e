"""Contract tests: the emulator only serves routes the lakeFS OpenAPI spec defines, and its
responses validate against the spec's schemas (via openapi-core, not hand-written comparisons).

This is what makes "swap the emulator for a real lakeFS" a URL change: anything the platform can
observe from the emulator is something the real API is specified to return.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import yaml
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

from dagster_project.devservices.lakefs_emulator import RunningEmulator, served_routes, start_emulator

# The spec gives the 206 Content-Range header the *request* Range pattern ("bytes=a-b"), which no HTTP
# server (lakeFS included) sends; the emulator returns the RFC 9110 form "bytes a-b/size" like lakeFS.
KNOWN_SPEC_DEFECTS = ("Value bytes 0-1/12 not valid for schema",)
KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET = "contract-secret"
REPO = "contract"


SPEC = Path(__file__).resolve().parents[1] / "lakefs_spec" / "swagger.yml"
SPEC_SHA256 = "b0e9baa646f72d1966e19cad85d3113ae58457f5c363abf7118c8637d5bc4dc3"
"""lakeFS v1.84.0's ``api/swagger.yml``, kept in the repository (Apache-2.0; see ``tests/lakefs_spec/README.md``)."""


def spec_path() -> Path:
    """The spec in the repository, unless ``TRAINYARD_LAKEFS_SPEC`` points at another copy."""
    return Path(os.environ.get("TRAINYARD_LAKEFS_SPEC") or SPEC)


def test_the_spec_is_the_recorded_lakefs_release() -> None:
    assert hashlib.sha256(SPEC.read_bytes()).hexdigest() == SPEC_SHA256


@pytest.fixture(scope="module")
def spec_document() -> dict[str, Any]:
    return yaml.safe_load(spec_path().read_text())


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI.from_file_path(str(spec_path()))


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[RunningEmulator]:
    with start_emulator(tmp_path / "lakefs", KEY, SECRET) as running:
        yield running


@pytest.fixture
def hook_url() -> Iterator[str]:
    """A webhook receiver for the actions scenario: ``/ok`` answers 200, anything else 500."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200 if self.path.startswith("/ok") else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class Recorder:
    """Sends raw HTTP requests and keeps every response for validation against the spec."""

    api_url: str
    session: requests.Session
    exchanges: list[tuple[str, requests.Response]] = field(default_factory=list)

    def call(self, expected: int, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self.session.request(method, self.api_url + path, **kwargs)
        label = f"{method} {path}"
        assert response.status_code == expected, f"{label}: {response.status_code} {response.text}"
        self.exchanges.append((label, response))
        return response


def test_every_served_route_is_in_the_spec(spec_document: dict[str, Any]) -> None:
    paths = spec_document["paths"]
    routes = served_routes()
    assert len(routes) >= 30
    missing = [(m, p) for m, p in routes if p not in paths or m.lower() not in paths[p]]
    assert missing == [], f"routes served but not defined by the lakeFS spec: {missing}"
    assert len(set(routes)) == len(routes), "a route is registered twice"


def _scenario(rec: Recorder, upload_file: Path) -> None:
    """A representative platform session: every status code the platform depends on, once."""
    repo = f"/repositories/{REPO}"
    rec.call(204, "GET", "/healthcheck")
    for path in ("/config", "/config/version", "/config/storage"):
        rec.call(200, "GET", path)
    rec.call(201, "POST", "/repositories", json={"name": REPO, "storage_namespace": "local://contract"})
    rec.call(409, "POST", "/repositories", json={"name": REPO, "storage_namespace": "local://contract"})
    rec.call(200, "GET", "/repositories", params={"amount": 10})
    rec.call(200, "GET", repo)
    rec.call(404, "GET", "/repositories/missing-repo")
    with upload_file.open("rb") as handle:
        files = {"content": ("data.csv", handle, "text/csv")}
        rec.call(201, "POST", f"{repo}/branches/main/objects", params={"path": "raw/a.csv"}, files=files)
    octet = {"Content-Type": "application/octet-stream"}
    rec.call(
        201, "POST", f"{repo}/branches/main/objects", params={"path": "raw/b.bin"}, data=b"xyz", headers=octet
    )
    rec.call(
        412,
        "POST",
        f"{repo}/branches/main/objects",
        params={"path": "raw/b.bin"},
        data=b"1",
        headers={**octet, "If-None-Match": "*"},
    )
    rec.call(200, "GET", f"{repo}/branches/main/diff")
    commit = rec.call(
        201, "POST", f"{repo}/branches/main/commits", json={"message": "ingest", "metadata": {"batch": "b1"}}
    ).json()
    rec.call(400, "POST", f"{repo}/branches/main/commits", json={"message": "nothing"})
    rec.call(200, "GET", f"{repo}/commits/{commit['id']}")
    rec.call(200, "GET", f"{repo}/refs/main/commits", params={"amount": 1})
    rec.call(201, "POST", f"{repo}/branches", json={"name": "feature", "source": "main"})
    rec.call(409, "POST", f"{repo}/branches", json={"name": "feature", "source": "main"})
    rec.call(200, "GET", f"{repo}/branches")
    rec.call(200, "GET", f"{repo}/branches/feature")
    rec.call(200, "GET", f"{repo}/refs/main/objects", params={"path": "raw/a.csv"})
    rec.call(
        206, "GET", f"{repo}/refs/main/objects", params={"path": "raw/a.csv"}, headers={"Range": "bytes=0-1"}
    )
    rec.call(200, "HEAD", f"{repo}/refs/main/objects", params={"path": "raw/a.csv"})
    rec.call(404, "GET", f"{repo}/refs/main/objects", params={"path": "missing"})
    rec.call(200, "GET", f"{repo}/refs/main/objects/stat", params={"path": "raw/a.csv"})
    rec.call(200, "GET", f"{repo}/refs/main/objects/ls", params={"delimiter": "/"})
    rec.call(200, "GET", f"{repo}/refs/main/objects/ls", params={"prefix": "raw/", "amount": 1})
    rec.call(
        201,
        "POST",
        f"{repo}/branches/feature/objects",
        params={"path": "raw/a.csv"},
        data=b"f",
        headers=octet,
    )
    rec.call(201, "POST", f"{repo}/branches/feature/commits", json={"message": "feature edit"})
    rec.call(
        201, "POST", f"{repo}/branches/main/objects", params={"path": "raw/a.csv"}, data=b"m", headers=octet
    )
    rec.call(201, "POST", f"{repo}/branches/main/commits", json={"message": "main edit"})
    rec.call(200, "GET", f"{repo}/refs/main/diff/feature", params={"type": "two_dot"})
    rec.call(200, "GET", f"{repo}/refs/main/merge/feature")
    rec.call(409, "POST", f"{repo}/refs/feature/merge/main", json={})
    rec.call(200, "POST", f"{repo}/refs/feature/merge/main", json={"strategy": "source-wins"})
    rec.call(201, "POST", f"{repo}/tags", json={"id": "tickets/v1", "ref": "main"})
    rec.call(409, "POST", f"{repo}/tags", json={"id": "tickets/v1", "ref": "main"})
    rec.call(200, "GET", f"{repo}/tags", params={"prefix": "tickets/"})
    rec.call(200, "GET", f"{repo}/tags/{quote('tickets/v1', safe='')}")
    rec.call(204, "DELETE", f"{repo}/tags/{quote('tickets/v1', safe='')}")
    rec.call(204, "DELETE", f"{repo}/branches/feature/objects", params={"path": "raw/b.bin"})
    rec.call(200, "POST", f"{repo}/branches/feature/objects/delete", json={"paths": ["raw/a.csv", ""]})
    rec.call(204, "PUT", f"{repo}/branches/feature", json={"type": "reset"})
    rec.call(204, "PUT", f"{repo}/branches/feature/hard_reset", params={"ref": "main~1"})
    rec.call(204, "PUT", f"{repo}/settings/branch_protection", json=[{"pattern": "main"}])
    rec.call(200, "GET", f"{repo}/settings/branch_protection")
    rec.call(403, "POST", f"{repo}/branches/main/objects", params={"path": "x"}, data=b"x", headers=octet)
    rec.call(401, "GET", "/repositories", auth=("nobody", "wrong"))
    rec.call(204, "DELETE", f"{repo}/branches/feature")
    rec.call(204, "DELETE", repo)


def _actions_scenario(rec: Recorder, hook_url: str) -> None:
    """Hooks: a passing pre-commit, a failing pre-merge (412), a broken action file (412), and the runs API."""
    repo = f"/repositories/{REPO}-actions"
    octet = {"Content-Type": "application/octet-stream"}
    action = f"""
name: contract gate
on:
  pre-commit:
    branches: [main]
  pre-merge:
    branches: [main]
hooks:
  - id: gate
    type: webhook
    properties:
      url: "{hook_url}/ok"
      timeout: 5s
""".encode()
    rejecting = action.replace(b"on:\n  pre-commit:\n    branches: [main]\n", b"on:\n").replace(b"/ok", b"/no")
    rec.call(201, "POST", "/repositories", json={"name": f"{REPO}-actions", "storage_namespace": "local://ca"})
    upload = {"path": "_lakefs_actions/gate.yaml"}
    rec.call(201, "POST", f"{repo}/branches/main/objects", params=upload, data=action, headers=octet)
    commit = rec.call(201, "POST", f"{repo}/branches/main/commits", json={"message": "install gate"}).json()
    rec.call(201, "POST", f"{repo}/branches", json={"name": "batch", "source": "main"})
    rec.call(201, "POST", f"{repo}/branches/batch/objects", params=upload, data=rejecting, headers=octet)
    rec.call(201, "POST", f"{repo}/branches/batch/commits", json={"message": "gate now rejects merges"})
    rec.call(412, "POST", f"{repo}/refs/batch/merge/main", json={"metadata": {"batch": "b1"}})
    broken = {"path": "_lakefs_actions/broken.yaml"}
    rec.call(201, "POST", f"{repo}/branches/batch/objects", params=broken, data=b"on: [", headers=octet)
    rec.call(412, "POST", f"{repo}/branches/batch/commits", json={"message": "broken action"})
    runs = rec.call(200, "GET", f"{repo}/actions/runs").json()["results"]
    assert [(r["event_type"], r["status"]) for r in runs] == [("pre-merge", "failed"), ("pre-commit", "completed")]
    rec.call(200, "GET", f"{repo}/actions/runs", params={"branch": "main", "amount": 1})
    rec.call(200, "GET", f"{repo}/actions/runs", params={"commit": commit["id"]})
    run_id = runs[0]["run_id"]
    rec.call(200, "GET", f"{repo}/actions/runs/{run_id}")
    rec.call(404, "GET", f"{repo}/actions/runs/missing-run")
    hooks = rec.call(200, "GET", f"{repo}/actions/runs/{run_id}/hooks").json()["results"]
    rec.call(200, "GET", f"{repo}/actions/runs/{run_id}/hooks/{hooks[0]['hook_run_id']}/output")
    rec.call(404, "GET", f"{repo}/actions/runs/{run_id}/hooks/9999_9999/output")
    rec.call(204, "DELETE", repo)


def test_responses_validate_against_spec(
    openapi: OpenAPI, emulator: RunningEmulator, tmp_path: Path, hook_url: str
) -> None:
    upload_file = tmp_path / "data.csv"
    upload_file.write_bytes(b"id,name\n1,a\n")
    with requests.Session() as session:
        session.auth = (KEY, SECRET)
        recorder = Recorder(emulator.api_url, session)
        _scenario(recorder, upload_file)
        _actions_scenario(recorder, hook_url)
    failures = []
    for label, response in recorder.exchanges:
        errors = [
            str(error)
            for error in openapi.iter_response_errors(
                RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response)
            )
            if not any(defect in str(error) for defect in KNOWN_SPEC_DEFECTS)
        ]
        if errors:
            failures.append(f"{label} -> {response.status_code}: {errors}")
    assert len(recorder.exchanges) > 50
    assert failures == [], "\n".join(failures)


def test_requests_in_scenario_match_spec(openapi: OpenAPI, emulator: RunningEmulator, tmp_path: Path) -> None:
    """The JSON bodies we send (mirroring the sdk) are valid requests per the spec, too."""
    with requests.Session() as session:
        session.auth = (KEY, SECRET)
        recorder = Recorder(emulator.api_url, session)
        recorder.call(201, "POST", "/repositories", json={"name": REPO, "storage_namespace": "local://c"})
        recorder.call(201, "POST", f"/repositories/{REPO}/branches", json={"name": "dev", "source": "main"})
        recorder.call(201, "POST", f"/repositories/{REPO}/tags", json={"id": "v1", "ref": "dev"})
    for label, response in recorder.exchanges:
        errors = list(openapi.iter_request_errors(RequestsOpenAPIRequest(response.request)))
        assert errors == [], f"{label}: {errors}"
