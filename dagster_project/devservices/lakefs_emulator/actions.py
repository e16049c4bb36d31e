"""lakeFS actions (hooks): action-file parsing and validation, webhooks, the hook runner and run documents.

Why this exists: lakeFS runs the hooks declared under ``_lakefs_actions/`` on pre/post-commit and
pre/post-merge; the platform gates merges with a pre-merge webhook, so the emulator reproduces lakeFS's
action-file rules (YAML 1.2, 412 on invalid files), webhook requests, hook logs and the ``ActionRun`` /
``HookRun`` documents served by the ``actions/runs`` routes.
"""

from __future__ import annotations

import fnmatch
import http.client
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import yaml

from .common import ApiError, Tree

if TYPE_CHECKING:  # type-only: the store creates the runner, so importing it at runtime would be a cycle
    from .store import Store

ACTIONS_PREFIX = "_lakefs_actions/"
RUN_ID_EPOCH_NS = 32503680000 * 1_000_000_000  # 3000-01-01: run ids count down towards it, like lakeFS's
ACTION_RUN_COLUMNS = (
    "repo", "run_id", "branch", "source_ref", "event_type", "commit_id", "start_time", "end_time", "passed"
)  # fmt: skip
HOOK_RUN_COLUMNS = (
    "repo", "run_id", "hook_run_id", "action_name", "hook_id", "start_time", "end_time", "passed", "output"
)  # fmt: skip
# Events lakeFS accepts in action files (pkg/actions/action.go); the emulator fires the commit/merge ones.
SUPPORTED_EVENTS = (
    "pre-commit", "post-commit", "pre-merge", "post-merge", "pre-create-branch", "post-create-branch",
    "pre-delete-branch", "post-delete-branch", "pre-create-tag", "post-create-tag", "pre-delete-tag",
    "post-delete-tag",
)  # fmt: skip
HOOK_TYPES = ("webhook", "airflow", "lua")
ACTION_NAME_RE = re.compile(r"^\w[\w\-. ]+$", re.ASCII)
HOOK_ID_RE = re.compile(r"^[_a-zA-Z][\-_a-zA-Z0-9]{1,255}$")
ENV_REF_RE = re.compile(r"\{\{\s*ENV\.(\w+)\s*\}\}")
GO_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
GO_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
WEBHOOK_DEFAULT_TIMEOUT = 60.0
ZERO_TIME = "0001-01-01T00:00:00Z"


class ActionError(Exception):
    """An action file that cannot be loaded or a hook that cannot be set up (aborts pre-* operations)."""


class _ActionYamlLoader(yaml.SafeLoader):
    """YAML 1.2 booleans like Go's yaml.v3: ``on:`` is a key, not ``True`` as in PyYAML's YAML 1.1."""


_ActionYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ActionYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass
class HookRecord:
    """What lakeFS passes to its hooks service (graveler.HookRecord) for one event."""

    event_type: str
    repo: str
    branch: str
    source_ref: str  # where actions are read from: merge source commit, committed branch, new commit
    commit_id: str
    message: str
    committer: str
    metadata: dict[str, str]
    merge_source: str = ""


@dataclass
class Action:
    """One parsed action file: ``on`` maps event types to branch patterns (empty = every branch)."""

    path: str
    name: str
    on: dict[str, list[str]]
    hooks: list[dict[str, Any]]

    def matches(self, event_type: str, branch: str) -> bool:
        if event_type not in self.on:
            return False
        patterns = self.on[event_type]
        return not patterns or any(fnmatch.fnmatchcase(branch, pattern) for pattern in patterns)


def _yaml_type(value: Any) -> str:
    return {dict: "!!map", list: "!!seq", str: "!!str", bool: "!!bool", int: "!!int", float: "!!float"}.get(
        type(value), "!!null"
    )


def _scalar_text(value: Any, target: str) -> str:
    """yaml.v3 decodes any scalar into a Go string field; collections are an unmarshal error."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        raise ActionError(f"yaml: unmarshal errors: cannot unmarshal {_yaml_type(value)} into {target}")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_action(path: str, data: bytes) -> Action:
    """Parse and validate one action file with lakeFS's rules (``ParseAction`` + ``Action.Validate``)."""
    try:
        document = yaml.load(data.decode("utf-8"), Loader=_ActionYamlLoader)  # noqa: S506 - a SafeLoader
    except UnicodeDecodeError as err:
        raise ActionError(f"parsing file {path}: yaml: invalid UTF-8: {err}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or str(err)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ActionError(f"parsing file {path}: yaml: {where}{problem}") from err
    try:
        return _validate_action(path, document)
    except ActionError as err:
        raise ActionError(f"parsing file {path}: {err}") from err


def _validate_action(path: str, document: Any) -> Action:
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ActionError(f"yaml: unmarshal errors: cannot unmarshal {_yaml_type(document)} into actions.Action")
    name = _scalar_text(document.get("name"), "string")
    on_raw = document.get("on")
    hooks_raw = document.get("hooks") or []
    if on_raw is not None and not isinstance(on_raw, dict):
        raise ActionError(f"yaml: unmarshal errors: cannot unmarshal {_yaml_type(on_raw)} into map[EventType]*ActionOn")
    if not isinstance(hooks_raw, list):
        raise ActionError(f"yaml: unmarshal errors: cannot unmarshal {_yaml_type(hooks_raw)} into []ActionHook")
    if not name:
        raise ActionError("'name' is required: invalid action")
    if not ACTION_NAME_RE.match(name):
        raise ActionError("'name' is invalid: invalid action")
    if not on_raw:
        raise ActionError("'on' is required: invalid action")
    on: dict[str, list[str]] = {}
    for event, spec in on_raw.items():
        event = _scalar_text(event, "EventType")
        if event not in SUPPORTED_EVENTS:
            raise ActionError(f"event '{event}' is not supported: invalid action")
        if spec is not None and not isinstance(spec, dict):
            raise ActionError(f"yaml: unmarshal errors: cannot unmarshal {_yaml_type(spec)} into actions.ActionOn")
        branches = (spec or {}).get("branches") or []
        if not isinstance(branches, list):
            raise ActionError(f"yaml: unmarshal errors: cannot unmarshal {_yaml_type(branches)} into []string")
        if branches and "tag" in event:
            raise ActionError("'branches' is not supported in tag event types. invalid event parameter")
        on[event] = [_scalar_text(b, "string") for b in branches]
    hooks, ids = [], set()
    for index, raw in enumerate(hooks_raw):
        if not isinstance(raw, dict):
            raise ActionError(f"yaml: unmarshal errors: cannot unmarshal {_yaml_type(raw)} into actions.ActionHook")
        hook_id = _scalar_text(raw.get("id"), "string")
        hook_type = _scalar_text(raw.get("type"), "HookType")
        properties = raw.get("properties") or {}
        if not isinstance(properties, dict):
            raise ActionError(f"yaml: unmarshal errors: cannot unmarshal {_yaml_type(properties)} into Properties")
        if not HOOK_ID_RE.match(hook_id):
            raise ActionError(f"hook[{index}] missing ID: invalid action")
        if hook_id in ids:
            raise ActionError(f"hook[{index}] duplicate ID '{hook_id}': invalid action")
        ids.add(hook_id)
        if hook_type not in HOOK_TYPES:
            raise ActionError(f"hook[{index}] type '{hook_type}' unknown: invalid action")
        hooks.append({"id": hook_id, "type": hook_type, "properties": properties})
    return Action(path, name, on, hooks)


def parse_go_duration(text: str) -> float:
    """Seconds in a Go ``time.ParseDuration`` string such as ``500ms``, ``10s``, ``1m30s``."""
    body = text[1:] if text[:1] in "+-" else text
    parts = GO_DURATION_RE.findall(body)
    if body == "0":
        return 0.0
    if not parts or "".join(number + unit for number, unit in parts) != body:
        raise ActionError(f'time: invalid duration "{text}"')
    seconds = sum(float(number) * GO_DURATION_UNITS[unit] for number, unit in parts)
    return -seconds if text.startswith("-") else seconds


class SecureString:
    """A property value; ``{{ ENV.NAME }}`` references are resolved and masked in hook logs (as lakeFS)."""

    def __init__(self, raw: str) -> None:
        self.secure = bool(ENV_REF_RE.search(raw))

        def lookup(match: re.Match[str]) -> str:
            if match.group(1) not in os.environ:
                raise ActionError(f"{match.group(1)}: missing env var")
            return os.environ[match.group(1)]

        self.value = ENV_REF_RE.sub(lookup, raw)

    def __str__(self) -> str:
        return "*****" if self.secure else self.value


@dataclass
class Webhook:
    """``type: webhook``: POST the event as JSON; any non-2xx answer, error or timeout fails the hook."""

    url: str
    timeout: float
    query_params: list[tuple[str, SecureString]]
    headers: list[tuple[str, SecureString]]

    @classmethod
    def from_properties(cls, properties: dict[str, Any]) -> Webhook:
        url = properties.get("url")
        if url is None:
            raise ActionError("missing url: webhook wrong format")
        if not isinstance(url, str):
            raise ActionError("webhook url must be string: webhook wrong format")
        timeout = WEBHOOK_DEFAULT_TIMEOUT
        if isinstance(properties.get("timeout"), str) and properties["timeout"]:
            try:
                timeout = parse_go_duration(properties["timeout"])
            except ActionError as err:
                raise ActionError(f"webhook request duration: {err}") from err
        query: list[tuple[str, SecureString]] = []
        raw_query = properties.get("query_params")
        if raw_query is not None:
            if not isinstance(raw_query, dict):
                raise ActionError("extracting query params: unsupported query params: webhook wrong format")
            for key, value in raw_query.items():
                values = value if isinstance(value, list) else [value]
                if not all(isinstance(v, str) for v in values):
                    raise ActionError("extracting query params: query params should be strings: webhook wrong format")
                query.extend((str(key), SecureString(v)) for v in values)
        headers: list[tuple[str, SecureString]] = []
        raw_headers = properties.get("headers")
        if raw_headers is not None:
            if not isinstance(raw_headers, dict) or not all(isinstance(v, str) for v in raw_headers.values()):
                raise ActionError("extracting headers: headers should be strings: webhook wrong format")
            headers = [(str(key), SecureString(value)) for key, value in raw_headers.items()]
        return cls(url, timeout, query, headers)

    def run(self, body: bytes, log: list[str]) -> None:
        """Send the request, writing lakeFS's hook log (request, duration, response dump) to ``log``."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ActionError(f'Post "{self.url}": unsupported protocol scheme "{parts.scheme}"')
        query = parse_qsl(parts.query, keep_blank_values=True) + [(k, v.value) for k, v in self.query_params]
        target = (parts.path or "/") + (f"?{urlencode(sorted(query, key=lambda kv: kv[0]))}" if query else "")
        headers = [*self.headers, ("Content-Type", SecureString("application/json"))]
        log.append(f"Request:\nPOST {self.url}\n")
        log.append("Query Params:\n" + "".join(f"{k}: {v}\n" for k, v in self.query_params))
        log.append("Headers:\n" + "".join(f"{k}: {v}\n" for k, v in headers))
        log.append(f"Request Body:\n{body.decode()}\n\n")
        connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = connection_class(parts.hostname, parts.port, timeout=self.timeout)
        start = time.monotonic()
        try:
            connection.request("POST", target, body, {k: v.value for k, v in headers})
            response = connection.getresponse()
            payload = response.read()
        except TimeoutError as err:
            log.append(f"\nRequest duration: {_go_duration(time.monotonic() - start)}\n")
            reason = "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            raise ActionError(f'Post "{self.url}": {reason}') from err
        except (OSError, http.client.HTTPException) as err:
            log.append(f"\nRequest duration: {_go_duration(time.monotonic() - start)}\n")
            reason = str(err)
            if isinstance(err, ConnectionRefusedError):  # Go's net/http wording
                port = parts.port or (443 if parts.scheme == "https" else 80)
                reason = f"dial tcp {parts.hostname}:{port}: connect: connection refused"
            raise ActionError(f'Post "{self.url}": {reason}') from err
        finally:
            connection.close()
        log.append(f"\nRequest duration: {_go_duration(time.monotonic() - start)}\n")
        dump = "".join(f"{name}: {value}\r\n" for name, value in response.getheaders())
        text = payload.decode("utf-8", "replace")
        log.append(f"\nResponse:\nHTTP/1.1 {response.status} {response.reason}\r\n{dump}\r\n{text}")
        if not 200 <= response.status < 300:
            raise ActionError(f"webhook request failed (status code: {response.status})")


@dataclass
class UnsupportedHook:
    """Lua and Airflow hooks are valid lakeFS hooks the emulator cannot run: running one fails the hook."""

    hook_type: str

    def run(self, body: bytes, log: list[str]) -> None:
        raise ActionError(f"hook type '{self.hook_type}' is not supported by the lakeFS emulator")


def _go_duration(seconds: float) -> str:
    return f"{seconds * 1000:.6f}ms" if seconds < 1 else f"{seconds:.6f}s"


def _rfc3339(timestamp: float | None) -> str:
    if not timestamp:
        return ZERO_TIME
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def event_payload(record: HookRecord, action_name: str, hook_id: str) -> bytes:
    """lakeFS's webhook body (pkg/actions/event.go): Go ``omitempty`` fields are left out when empty."""
    info: dict[str, Any] = {
        "event_type": record.event_type,
        "event_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "action_name": action_name,
        "hook_id": hook_id,
        "repository_id": record.repo,
        "branch_id": record.branch,
        "source_ref": record.source_ref,
        "commit_id": record.commit_id,
        "commit_message": record.message,
        "committer": record.committer,
        "commit_metadata": record.metadata,
        "merge_source": record.merge_source,
    }
    omit_empty = ("source_ref", "commit_id", "commit_metadata", "merge_source")
    return json.dumps({k: v for k, v in info.items() if v or k not in omit_empty}, separators=(",", ":")).encode()


class ActionRunner:
    """Loads ``_lakefs_actions/`` from a tree, runs the matching hooks and records the run (lakeFS's
    actions service).  Hooks run in file order, one at a time; the first failure skips the rest."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def load(self, tree: Tree) -> list[Action]:
        """Every object directly under ``_lakefs_actions/`` is an action file, whatever its extension."""
        actions: list[Action] = []
        for path in sorted(tree):
            if path.startswith(ACTIONS_PREFIX) and "/" not in path[len(ACTIONS_PREFIX) :]:
                data = self.store.blob_path(tree[path]["address"]).read_bytes()
                actions.append(parse_action(path, data))
        names: set[str] = set()
        for action in actions:
            if action.name in names:
                raise ActionError(f"action name '{action.name}' already loaded: invalid action")
            names.add(action.name)
        return actions

    def run(self, record: HookRecord, tree: Tree) -> str | None:
        """Run the hooks ``record`` triggers; returns the run id (None: nothing matched).

        A failing pre-* run raises 412 (lakeFS's HookAbortError); post-* failures are only recorded.
        """
        pre_event = record.event_type.startswith("pre-")
        run_id = self.store.new_run_id()
        try:
            matched = [a for a in self.load(tree) if a.matches(record.event_type, record.branch)]
            tasks = [
                (f"{action_index:04d}_{hook_index:04d}", action, hook, self._hook(action, hook))
                for action_index, action in enumerate(matched)
                for hook_index, hook in enumerate(action.hooks)
            ]
        except ActionError as err:
            if pre_event:
                raise ApiError(412, f"{record.event_type} hook aborted, run id '{run_id}': {err}") from err
            return None
        if not tasks:
            return None
        failure = ""
        hook_rows = []
        for hook_run_id, action, hook, runner in tasks:
            row = {
                "repo": record.repo,
                "run_id": run_id,
                "hook_run_id": hook_run_id,
                "action_name": action.name,
                "hook_id": hook["id"],
                "start_time": None,
                "end_time": None,
                "passed": 0,
                "output": "",
            }
            hook_rows.append(row)
            if failure:
                continue  # skipped hooks are recorded as failed, without times (as lakeFS does)
            log: list[str] = []
            row["start_time"] = time.time()
            try:
                runner.run(event_payload(record, action.name, hook["id"]), log)
                row["passed"] = 1
            except ActionError as err:
                log.append(f"Error: {err}\n")
                failure = f"hook run id '{hook_run_id}' failed on action '{action.name}' hook '{hook['id']}': {err}"
            row["end_time"] = time.time()
            row["output"] = "".join(log)
        started = [row for row in hook_rows if row["start_time"]]
        self.store.save_run(
            {
                "repo": record.repo,
                "run_id": run_id,
                "branch": record.branch,
                "source_ref": record.source_ref,
                "event_type": record.event_type,
                "commit_id": record.commit_id,
                "start_time": min(row["start_time"] for row in started),
                "end_time": max(row["end_time"] for row in started),
                "passed": 0 if failure else 1,
            },
            hook_rows,
        )
        if failure and pre_event:
            raise ApiError(412, f"{record.event_type} hook aborted, run id '{run_id}': {failure}")
        return run_id

    @staticmethod
    def _hook(action: Action, hook: dict[str, Any]) -> Webhook | UnsupportedHook:
        try:
            if hook["type"] == "webhook":
                return Webhook.from_properties(hook["properties"])
            return UnsupportedHook(hook["type"])
        except ActionError as err:
            raise ActionError(f"{action.path}: action '{action.name}' hook '{hook['id']}': {err}") from err


def action_run_document(run: dict[str, Any]) -> dict[str, Any]:
    """The spec's ``ActionRun``."""
    return {
        "run_id": run["run_id"],
        "branch": run["branch"],
        "start_time": _rfc3339(run["start_time"]),
        "end_time": _rfc3339(run["end_time"]),
        "event_type": run["event_type"],
        "status": "completed" if run["passed"] else "failed",
        "commit_id": run["commit_id"],
    }


def hook_run_document(hook: dict[str, Any]) -> dict[str, Any]:
    """The spec's ``HookRun``."""
    return {
        "hook_run_id": hook["hook_run_id"],
        "action": hook["action_name"],
        "hook_id": hook["hook_id"],
        "start_time": _rfc3339(hook["start_time"]),
        "end_time": _rfc3339(hook["end_time"]),
        "status": "completed" if hook["passed"] else "failed",
    }
