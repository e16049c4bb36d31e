"""lakeFS actions (hooks) in the emulator, driven through the official ``lakefs_sdk`` only.

A tiny webhook receiver (stdlib ``http.server`` on 127.0.0.1) records every request and answers with a
configurable status, or sleeps past the hook's timeout.  The tests pin down lakeFS's semantics that the
platform relies on, including the documented gotcha: pre-merge actions are read from the merge *source*.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import lakefs_sdk
import pytest
from lakefs_sdk.exceptions import ApiException

from dagster_project.devservices.lakefs_emulator import start_emulator

KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET = "actions-secret"
REPO = "tickets"
HOOK_SECRET = "s3cr3t-gate-token"


@dataclass
class Received:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    """Webhook endpoint: ``status`` is the answer; ``delay`` seconds are slept before answering."""

    url: str = ""
    status: int = 200
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    on_request: Callable[[Received], None] | None = None  # e.g. call back into lakeFS like a real gatekeeper


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = urlsplit(self.path)
            state.requests.append(
                Received(parts.path, parse_qs(parts.query), dict(self.headers.items()), json.loads(body))
            )
            if state.on_request is not None:
                state.on_request(state.requests[-1])
            if state.delay:
                state.release.wait(state.delay)
            answer = json.dumps({"verdict": "ok" if state.status < 300 else "rejected"}).encode()
            try:
                self.send_response(state.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:
                pass  # the emulator gave up (timeout) and closed the connection

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class Lake:
    def __init__(self, client: lakefs_sdk.ApiClient, tmp: Path) -> None:
        self.branches = lakefs_sdk.BranchesApi(client)
        self.objects = lakefs_sdk.ObjectsApi(client)
        self.commits = lakefs_sdk.CommitsApi(client)
        self.refs = lakefs_sdk.RefsApi(client)
        self.actions = lakefs_sdk.ActionsApi(client)
        self.repos = lakefs_sdk.RepositoriesApi(client)
        self.tmp = tmp
        self._files = 0

    def upload(self, branch: str, path: str, content: bytes) -> None:
        """lakefs_sdk 1.86 reads ``content`` from a file path, so spill the bytes to a file first."""
        self._files += 1
        source = self.tmp / f"upload-{self._files}.bin"
        source.write_bytes(content)
        self.objects.upload_object(REPO, branch, path, content=str(source))

    def commit(self, branch: str, message: str, **metadata: str) -> lakefs_sdk.Commit:
        return self.commits.commit(REPO, branch, lakefs_sdk.CommitCreation(message=message, metadata=metadata))

    def branch(self, name: str, source: str) -> str:
        return self.branches.create_branch(REPO, lakefs_sdk.BranchCreation(name=name, source=source))

    def head(self, branch: str) -> str:
        return self.branches.get_branch(REPO, branch).commit_id

    def merge(self, source: str, dest: str, **kwargs: Any) -> str:
        return self.refs.merge_into_branch(REPO, source, dest, merge=lakefs_sdk.Merge(**kwargs)).reference

    def staged(self, branch: str) -> list[str]:
        return [d.path for d in self.branches.diff_branch(REPO, branch).results]


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    with (
        start_emulator(tmp_path / "lakefs", KEY, SECRET) as running,
        lakefs_sdk.ApiClient(lakefs_sdk.Configuration(host=running.api_url, username=KEY, password=SECRET)) as c,
    ):
        api = Lake(c, tmp_path)
        api.repos.create_repository(
            lakefs_sdk.RepositoryCreation(name=REPO, storage_namespace="local://tickets", default_branch="main")
        )
        yield api


def gate_action(url: str, event: str = "pre-merge", branches: str = "[main]", timeout: str = "10s") -> bytes:
    return f"""
name: trainyard gate
description: refuse batches the gatekeeper rejects
on:
  {event}:
    branches: {branches}
hooks:
  - id: gatekeeper
    type: webhook
    description: ask the gatekeeper
    properties:
      url: "{url}/lakefs/{event}"
      timeout: {timeout}
      query_params:
        source: emulator
      headers:
        X-Trainyard-Secret: "{HOOK_SECRET}"
""".encode()


def install_gate(lake: Lake, receiver: Receiver, **kwargs: str) -> str:
    """Commit the action file on main and cut a batch branch with one new file from it."""
    lake.upload("main", "_lakefs_actions/gate.yaml", gate_action(receiver.url, **kwargs))
    lake.commit("main", "install gate")
    lake.branch("batch-1", "main")
    lake.upload("batch-1", "tickets/part-0.csv", b"id\n1\n")
    return lake.commit("batch-1", "ingest batch 1", batch="b1").id


def abort_message(err: pytest.ExceptionInfo[ApiException]) -> str:
    assert err.value.status == 412
    return json.loads(err.value.body)["message"]


def test_pre_merge_hook_approves_and_gets_lakefs_payload(lake: Lake, receiver: Receiver) -> None:
    source_head = install_gate(lake, receiver)
    before = datetime.now(UTC).replace(microsecond=0)
    merged = lake.merge("batch-1", "main", message="land batch 1", metadata={"batch_id": "b1", "ticket": "T-7"})

    assert lake.head("main") == merged
    assert lake.commits.get_commit(REPO, merged).parents[1] == source_head
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.path == "/lakefs/pre-merge"
    assert request.query == {"source": ["emulator"]}
    assert request.headers["X-Trainyard-Secret"] == HOOK_SECRET
    assert request.headers["Content-Type"] == "application/json"
    body = request.body
    assert datetime.fromisoformat(body.pop("event_time")) >= before
    assert body == {
        "event_type": "pre-merge",
        "action_name": "trainyard gate",
        "hook_id": "gatekeeper",
        "repository_id": REPO,
        "branch_id": "main",
        "source_ref": source_head,  # lakeFS passes the resolved source commit
        "commit_id": source_head,
        "commit_message": "land batch 1",
        "committer": KEY,
        "commit_metadata": {"batch_id": "b1", "ticket": "T-7"},
        "merge_source": "batch-1",
    }


def test_webhook_can_call_back_into_lakefs_while_the_merge_waits(lake: Lake, receiver: Receiver) -> None:
    """A gatekeeper reads the source commit and the diff during the hook: no deadlock, real answers."""
    source_head = install_gate(lake, receiver)
    seen: list[tuple[dict[str, str], list[str], str]] = []

    def inspect(request: Received) -> None:
        commit = lake.commits.get_commit(REPO, request.body["commit_id"])
        diff = lake.refs.diff_refs(REPO, request.body["branch_id"], request.body["commit_id"]).results
        seen.append((commit.metadata, [d.path for d in diff], lake.head("main")))

    receiver.on_request = inspect
    main_before = lake.head("main")
    merged = lake.merge("batch-1", "main")
    assert seen == [({"batch": "b1"}, ["tickets/part-0.csv"], main_before)]  # main not yet moved during the hook
    assert lake.head("main") == merged != main_before
    assert lake.commits.get_commit(REPO, merged).parents == [main_before, source_head]


@pytest.mark.parametrize("status", [403, 500])
def test_pre_merge_hook_rejection_blocks_merge(lake: Lake, receiver: Receiver, status: int) -> None:
    install_gate(lake, receiver)
    main_before = lake.head("main")
    receiver.status = status
    with pytest.raises(ApiException) as err:
        lake.merge("batch-1", "main")
    message = abort_message(err)
    assert message.startswith("pre-merge hook aborted, run id '")
    assert "hook 'gatekeeper'" in message and "action 'trainyard gate'" in message
    assert f"webhook request failed (status code: {status})" in message
    assert lake.head("main") == main_before
    assert "tickets/part-0.csv" not in [o.path for o in lake.objects.list_objects(REPO, "main").results]


def test_pre_merge_hook_timeout_blocks_merge(lake: Lake, receiver: Receiver) -> None:
    install_gate(lake, receiver, timeout="500ms")
    main_before = lake.head("main")
    receiver.delay = 3.0
    with pytest.raises(ApiException) as err:
        lake.merge("batch-1", "main")
    message = abort_message(err)
    assert "hook 'gatekeeper'" in message
    assert "Client.Timeout exceeded" in message
    assert lake.head("main") == main_before
    receiver.release.set()


def test_unreachable_webhook_blocks_merge(lake: Lake, receiver: Receiver) -> None:
    install_gate(lake, receiver)
    lake.upload("batch-1", "_lakefs_actions/gate.yaml", gate_action("http://127.0.0.1:1"))
    lake.commit("batch-1", "point the gate at nothing")
    main_before = lake.head("main")
    with pytest.raises(ApiException) as err:
        lake.merge("batch-1", "main")
    message = abort_message(err)
    assert 'Post "http://127.0.0.1:1/lakefs/pre-merge": dial tcp 127.0.0.1:1: connect: connection refused' in message
    assert lake.head("main") == main_before


def test_source_that_deletes_its_action_file_merges_without_the_hook(lake: Lake, receiver: Receiver) -> None:
    """The documented lakeFS gotcha: actions come from the merge source, so a batch can disable the gate."""
    install_gate(lake, receiver)
    receiver.status = 403  # the gate would refuse the merge, if it were asked
    lake.objects.delete_object(REPO, "batch-1", "_lakefs_actions/gate.yaml")
    lake.commit("batch-1", "drop the gate")
    merged = lake.merge("batch-1", "main")
    assert receiver.requests == []
    assert lake.head("main") == merged
    assert "_lakefs_actions/gate.yaml" not in [o.path for o in lake.objects.list_objects(REPO, "main").results]
    assert lake.actions.list_repository_runs(REPO).results == []


def test_action_on_destination_only_is_not_run(lake: Lake, receiver: Receiver) -> None:
    """The converse: a gate added to main after the batch branched is unknown to the source."""
    lake.branch("batch-1", "main")
    lake.upload("batch-1", "tickets/part-0.csv", b"id\n1\n")
    lake.commit("batch-1", "ingest")
    lake.upload("main", "_lakefs_actions/gate.yaml", gate_action(receiver.url))
    lake.commit("main", "install gate")
    receiver.status = 403
    lake.merge("batch-1", "main")
    assert receiver.requests == []


def test_branch_glob_not_matching_skips_hook(lake: Lake, receiver: Receiver) -> None:
    lake.upload("main", "_lakefs_actions/gate.yaml", gate_action(receiver.url, branches='["release-*"]'))
    lake.commit("main", "install gate for release branches")
    lake.branch("batch-1", "main")
    lake.upload("batch-1", "tickets/part-0.csv", b"id\n1\n")
    lake.commit("batch-1", "ingest")
    receiver.status = 500
    merged = lake.merge("batch-1", "main")
    assert receiver.requests == []
    assert lake.head("main") == merged
    lake.branch("release-1", "main")
    lake.branch("batch-2", "main")
    lake.upload("batch-2", "tickets/part-1.csv", b"id\n2\n")
    lake.commit("batch-2", "ingest 2")
    with pytest.raises(ApiException) as err:
        lake.merge("batch-2", "release-1")
    assert "status code: 500" in abort_message(err)
    assert [r.body["branch_id"] for r in receiver.requests] == ["release-1"]


def test_pre_commit_hook_failure_blocks_commit_and_keeps_staging(lake: Lake, receiver: Receiver) -> None:
    lake.upload("main", "_lakefs_actions/commit-gate.yaml", gate_action(receiver.url, "pre-commit", '["batch-*"]'))
    lake.commit("main", "install commit gate")
    lake.branch("batch-7", "main")
    lake.upload("batch-7", "tickets/part-0.csv", b"id\n1\n")
    head_before = lake.head("batch-7")
    receiver.status = 403
    with pytest.raises(ApiException) as err:
        lake.commit("batch-7", "ingest batch 7", batch="b7")
    message = abort_message(err)
    assert message.startswith("pre-commit hook aborted, run id '")
    assert "hook 'gatekeeper'" in message and "(status code: 403)" in message
    assert lake.head("batch-7") == head_before
    assert lake.staged("batch-7") == ["tickets/part-0.csv"]

    body = receiver.requests[0].body
    assert receiver.requests[0].path == "/lakefs/pre-commit"
    assert (body["event_type"], body["branch_id"], body["source_ref"]) == ("pre-commit", "batch-7", "batch-7")
    assert (body["commit_message"], body["commit_metadata"]) == ("ingest batch 7", {"batch": "b7"})
    assert "commit_id" not in body  # empty, and lakeFS omits it (omitempty)
    assert "merge_source" not in body

    receiver.status = 200
    commit = lake.commit("batch-7", "ingest batch 7", batch="b7")
    assert lake.head("batch-7") == commit.id
    assert lake.staged("batch-7") == []
    # main is not matched by the batch-* glob: committing there calls nothing
    lake.upload("main", "notes.txt", b"n")
    lake.commit("main", "notes")
    assert len(receiver.requests) == 2


def test_pre_commit_reads_staged_action_files(lake: Lake, receiver: Receiver) -> None:
    """Actions for pre-commit come from the branch's staging view: a staged action file already applies."""
    lake.upload("main", "_lakefs_actions/commit-gate.yaml", gate_action(receiver.url, "pre-commit", "[main]"))
    receiver.status = 500
    with pytest.raises(ApiException) as err:
        lake.commit("main", "install commit gate")
    assert "status code: 500" in abort_message(err)
    assert lake.staged("main") == ["_lakefs_actions/commit-gate.yaml"]


def test_action_runs_hooks_and_output(lake: Lake, receiver: Receiver) -> None:
    source_head = install_gate(lake, receiver)
    receiver.status = 500
    with pytest.raises(ApiException):
        lake.merge("batch-1", "main")
    receiver.status = 200
    merged = lake.merge("batch-1", "main")

    runs = lake.actions.list_repository_runs(REPO).results
    assert [(r.event_type, r.status, r.branch) for r in runs] == [
        ("pre-merge", "completed", "main"),
        ("pre-merge", "failed", "main"),
    ]
    ok, failed = runs
    assert ok.run_id < failed.run_id  # ids decrease with time, so ascending order is newest first
    assert ok.commit_id == merged  # lakeFS records the merge commit once the merge succeeds
    assert failed.commit_id == source_head
    assert failed.start_time <= failed.end_time <= ok.start_time <= ok.end_time

    fetched = lake.actions.get_run(REPO, failed.run_id)
    assert (fetched.run_id, fetched.status, fetched.event_type) == (failed.run_id, "failed", "pre-merge")
    assert [r.run_id for r in lake.actions.list_repository_runs(REPO, branch="main", amount=1).results] == [ok.run_id]
    page = lake.actions.list_repository_runs(REPO, amount=1)
    assert page.pagination.has_more and page.pagination.next_offset == ok.run_id
    after = lake.actions.list_repository_runs(REPO, after=page.pagination.next_offset).results
    assert [r.run_id for r in after] == [failed.run_id]
    assert lake.actions.list_repository_runs(REPO, branch="batch-1").results == []
    assert [r.run_id for r in lake.actions.list_repository_runs(REPO, commit=merged).results] == [ok.run_id]

    hooks = lake.actions.list_run_hooks(REPO, failed.run_id).results
    assert [(h.hook_run_id, h.action, h.hook_id, h.status) for h in hooks] == [
        ("0000_0000", "trainyard gate", "gatekeeper", "failed")
    ]
    output = bytes(lake.actions.get_run_hook_output(REPO, failed.run_id, "0000_0000")).decode()
    assert f"POST {receiver.url}/lakefs/pre-merge" in output
    assert "X-Trainyard-Secret: " + HOOK_SECRET in output
    assert '"event_type":"pre-merge"' in output
    assert "HTTP/1.1 500" in output and '{"verdict": "rejected"}' in output
    assert "Error: webhook request failed (status code: 500)" in output
    ok_output = bytes(lake.actions.get_run_hook_output(REPO, ok.run_id, "0000_0000")).decode()
    assert "HTTP/1.1 200" in ok_output and "Error:" not in ok_output

    with pytest.raises(ApiException) as missing:
        lake.actions.get_run(REPO, "no-such-run")
    assert missing.value.status == 404
    with pytest.raises(ApiException) as missing_hook:
        lake.actions.get_run_hook_output(REPO, ok.run_id, "0009_0009")
    assert missing_hook.value.status == 404


def test_first_failing_hook_stops_the_rest(lake: Lake, receiver: Receiver) -> None:
    action = f"""
name: two step gate
on:
  pre-commit:
hooks:
  - id: first
    type: webhook
    properties: {{url: "{receiver.url}/first"}}
  - id: second
    type: webhook
    properties: {{url: "{receiver.url}/second"}}
""".encode()
    lake.upload("main", "_lakefs_actions/a.yaml", action)
    receiver.status = 409
    with pytest.raises(ApiException) as err:
        lake.commit("main", "two hooks")
    assert "hook 'first'" in abort_message(err)
    assert [r.path for r in receiver.requests] == ["/first"]
    run = lake.actions.list_repository_runs(REPO).results[0]
    hooks = lake.actions.list_run_hooks(REPO, run.run_id).results
    assert [(h.hook_id, h.status) for h in hooks] == [("first", "failed"), ("second", "failed")]
    assert hooks[1].start_time.year == 1  # skipped: never started (lakeFS reports the zero time)


def test_post_commit_and_post_merge_run_after_success_and_cannot_fail_it(lake: Lake, receiver: Receiver) -> None:
    action = f"""
name: notifier
on:
  post-commit:
  post-merge:
    branches: [main]
hooks:
  - id: notify
    type: webhook
    properties: {{url: "{receiver.url}/post"}}
""".encode()
    lake.upload("main", "_lakefs_actions/notify.yaml", action)
    receiver.status = 500  # post-* failures are recorded but do not fail the operation
    commit = lake.commit("main", "install notifier")
    assert lake.head("main") == commit.id
    lake.branch("batch-1", "main")
    lake.upload("batch-1", "tickets/part-0.csv", b"id\n1\n")
    batch_commit = lake.commit("batch-1", "ingest")
    merged = lake.merge("batch-1", "main")
    events = [(r.body["event_type"], r.body["branch_id"], r.body["commit_id"]) for r in receiver.requests]
    assert events == [
        ("post-commit", "main", commit.id),
        ("post-commit", "batch-1", batch_commit.id),
        ("post-merge", "main", merged),
    ]
    runs = lake.actions.list_repository_runs(REPO).results
    assert [(r.event_type, r.status, r.commit_id) for r in runs] == [
        ("post-merge", "failed", merged),
        ("post-commit", "failed", batch_commit.id),
        ("post-commit", "failed", commit.id),
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"name: broken\non: [pre-commit\n", "yaml: line"),
        (b"name: no events\nhooks: []\n", "'on' is required"),
        (b"name: bad event\non:\n  pre-push:\nhooks: []\n", "event 'pre-push' is not supported"),
        (b"name: bad hook\non:\n  pre-commit:\nhooks:\n  - id: h1\n    type: shell\n", "type 'shell' unknown"),
        (b"name: no url\non:\n  pre-commit:\nhooks:\n  - id: h1\n    type: webhook\n", "missing url"),
        (
            b"name: bad timeout\non:\n  pre-commit:\nhooks:\n  - id: h1\n    type: webhook\n"
            b"    properties: {url: 'http://127.0.0.1:1', timeout: soon}\n",
            'time: invalid duration "soon"',
        ),
    ],
)
def test_invalid_action_file_fails_with_the_file_named(lake: Lake, content: bytes, expected: str) -> None:
    lake.upload("main", "_lakefs_actions/broken.yaml", content)
    head_before = lake.head("main")
    with pytest.raises(ApiException) as err:
        lake.commit("main", "install a broken action")
    message = abort_message(err)
    assert "_lakefs_actions/broken.yaml" in message
    assert expected in message
    assert lake.head("main") == head_before
    assert lake.staged("main") == ["_lakefs_actions/broken.yaml"]


def test_unsupported_hook_types_fail_clearly(lake: Lake) -> None:
    action = b"""
name: lua gate
on:
  pre-commit:
hooks:
  - id: script
    type: lua
    properties:
      script: "error('no')"
"""
    lake.upload("main", "_lakefs_actions/lua.yaml", action)
    with pytest.raises(ApiException) as err:
        lake.commit("main", "lua")
    assert "hook type 'lua' is not supported by the lakeFS emulator" in abort_message(err)


def test_runs_of_unknown_repository_are_not_found(lake: Lake) -> None:
    with pytest.raises(ApiException) as err:
        lake.actions.list_repository_runs("missing-repo")
    assert err.value.status == 404
    assert lake.actions.list_repository_runs(REPO).results == []


def test_emulator_without_actions_is_untouched(tmp_path: Path) -> None:
    """No action files: commits and merges behave exactly as before and record no runs."""
    with (
        start_emulator(tmp_path / "plain", KEY, SECRET) as running,
        lakefs_sdk.ApiClient(lakefs_sdk.Configuration(host=running.api_url, username=KEY, password=SECRET)) as c,
    ):
        lake = Lake(c, tmp_path)
        lake.repos.create_repository(lakefs_sdk.RepositoryCreation(name=REPO, storage_namespace="local://p"))
        lake.upload("main", "a.txt", b"a")
        lake.commit("main", "a")
        lake.branch("side", "main")
        lake.upload("side", "b.txt", b"b")
        lake.commit("side", "b")
        lake.merge("side", "main")
        assert lake.actions.list_repository_runs(REPO).results == []
