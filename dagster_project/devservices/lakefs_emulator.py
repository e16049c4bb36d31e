"""A local lakeFS API emulator: a real HTTP server that follows the lakeFS v1 OpenAPI spec.

Why this exists: no lakeFS server can be installed on the machines Trainyard is developed and tested
on, yet the platform versions its data with lakeFS.  The platform talks to lakeFS exclusively through
the official ``lakefs_sdk`` client, so this emulator serves the same ``/api/v1`` routes, status codes
and JSON documents as lakeFS; pointing the platform at a real lakeFS is only a URL change.

Model (as in lakeFS): a commit is an immutable snapshot of ``path -> object`` (stored once as a
content-addressed "meta range"); a branch is a head commit plus a staging area of uncommitted
changes; tags point at commits.  Metadata lives in sqlite, object bytes in content-addressed blob
files, both under ``data_dir``, so a restart with the same ``data_dir`` keeps everything.

Implemented: healthcheck, config (version/storage, no presign, no import), repositories, branches
(create/get/list/delete, reset of uncommitted changes, hard reset), objects (upload as multipart or
octet-stream, get with Range, head, stat, ls with delimiter, delete, bulk delete), commits (create,
get, log with filters), diffs (uncommitted, two-dot and three-dot), merges (three-way, conflict
detection, dest-wins/source-wins, squash), merge base, tags, branch protection rules, HTTP basic auth,
actions (hooks) and their runs (below).
Ref expressions: branch, tag, full or unique-prefix commit id, ``@`` (committed only), ``~N``, ``^N``.

Actions (hooks), with lakeFS's semantics: every object directly under ``_lakefs_actions/`` is parsed and
validated as an action file (``name``, ``on: {event: {branches: [globs]}}``, ``hooks``); a file that does
not parse or validate aborts the operation with 412 naming the file.  ``pre-commit`` actions are read from
the committed branch's staging view (committed + staged files); ``pre-merge`` actions from the merge
*source* commit (the documented gotcha: a source that deletes its action file disables the gate), both
matched against the branch being written (the committed branch / merge destination).  ``webhook`` hooks
POST lakeFS's event JSON (``event_type``, ``event_time``, ``action_name``, ``hook_id``, ``repository_id``,
``branch_id``, ``source_ref``, ``commit_id``, ``commit_message``, ``committer``, ``commit_metadata``,
``merge_source``; empty optional fields are omitted like Go's ``omitempty``) with the configured
``headers`` and ``query_params`` (``{{ ENV.NAME }}`` references resolved) and ``timeout`` (Go duration,
default 1m).  A non-2xx answer, connection error or timeout aborts a pre-* operation with 412 and
changes nothing.  ``post-commit``/``post-merge`` run after success; their failures are only recorded.
Runs, hook runs and hook logs are stored in sqlite and served by the ``actions/runs`` routes; run ids
decrease with time like lakeFS's, so listings are newest first.  Hooks run outside the store lock (a
webhook may call back into the API); commits and merges into one branch are serialised meanwhile, and
writes that arrive during pre-commit hooks stay staged for the next commit, as with lakeFS's sealed
staging tokens.  Differences from lakeFS: hooks run one at a time in file order (lakeFS runs different
action files concurrently) and the first failure skips every remaining hook; post-* hooks run
synchronously before the response (lakeFS runs them in the background); ``lua`` and ``airflow`` hooks pass
validation but fail when run; the hook ``if`` condition is ignored; branch/tag create/delete events are
accepted in action files but never fired.

Answered with 501: bare, read-only and sample-data repositories, ``source_metarange`` commits.
Not implemented (routes are not registered, so they answer 404): users/groups/policies/credentials
management, login/tokens, presigned URLs and multipart uploads, imports, staging/link APIs,
cherry-pick, revert, garbage collection, pull requests, repository metadata, dump/restore, object copy
and user-metadata updates.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fnmatch
import hashlib
import heapq
import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlencode, urlsplit

import yaml

API_PREFIX = "/api/v1"
LAKEFS_VERSION = "1.84.0"
DEFAULT_AMOUNT = 100
MAX_AMOUNT = 1000
EMPTY_TREE: dict[str, dict[str, Any]] = {}

# Validation rules copied from lakeFS (pkg/validator and graveler/validate.go).
BRANCH_RE = re.compile(r"^\w[-\w]*$", re.ASCII)
REPOSITORY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")
NAMESPACE_RE = re.compile(r"^(s3|gs|https?|mem|local|transient)://.*$")
REF_MODIFIERS_RE = re.compile(r"^(?P<base>.+?)(?P<mods>(?:[~^]\d*)+)$")
HEX_RE = re.compile(r"^[0-9a-f]+$")

Tree = dict[str, dict[str, Any]]


class ApiError(Exception):
    """An error that maps to an HTTP status and the spec's ``Error`` document."""

    def __init__(self, status: int, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}


@dataclass
class ResolvedRef:
    """A ref resolved to a commit; ``branch`` is set when reads must include the branch's staging."""

    commit_id: str
    branch: str | None = None


# --------------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS repos (id TEXT PRIMARY KEY, storage_namespace TEXT NOT NULL,
    default_branch TEXT NOT NULL, creation_date INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS commits (repo TEXT NOT NULL, id TEXT NOT NULL, parents TEXT NOT NULL,
    committer TEXT NOT NULL, message TEXT NOT NULL, creation_date INTEGER NOT NULL,
    meta_range_id TEXT NOT NULL, metadata TEXT NOT NULL, generation INTEGER NOT NULL,
    seq INTEGER NOT NULL, PRIMARY KEY (repo, id));
CREATE TABLE IF NOT EXISTS metaranges (id TEXT PRIMARY KEY, tree TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS branches (repo TEXT NOT NULL, name TEXT NOT NULL, commit_id TEXT NOT NULL,
    PRIMARY KEY (repo, name));
CREATE TABLE IF NOT EXISTS staging (repo TEXT NOT NULL, branch TEXT NOT NULL, path TEXT NOT NULL,
    entry TEXT, PRIMARY KEY (repo, branch, path));
CREATE TABLE IF NOT EXISTS tags (repo TEXT NOT NULL, id TEXT NOT NULL, commit_id TEXT NOT NULL,
    PRIMARY KEY (repo, id));
CREATE TABLE IF NOT EXISTS protection (repo TEXT PRIMARY KEY, rules TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS action_runs (repo TEXT NOT NULL, run_id TEXT NOT NULL, branch TEXT NOT NULL,
    source_ref TEXT NOT NULL, event_type TEXT NOT NULL, commit_id TEXT NOT NULL, start_time REAL,
    end_time REAL, passed INTEGER NOT NULL, PRIMARY KEY (repo, run_id));
CREATE TABLE IF NOT EXISTS hook_runs (repo TEXT NOT NULL, run_id TEXT NOT NULL, hook_run_id TEXT NOT NULL,
    action_name TEXT NOT NULL, hook_id TEXT NOT NULL, start_time REAL, end_time REAL, passed INTEGER NOT NULL,
    output TEXT NOT NULL, PRIMARY KEY (repo, run_id, hook_run_id));
"""


def _canonical(value: Any) -> str:
    """Stable JSON used for content addressing (ids must not depend on dict ordering)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _same_object(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """lakeFS compares entries by identity (address + metadata), not by mtime."""
    if a is None or b is None:
        return a is b
    keys = ("checksum", "address", "content_type", "metadata")
    return all(a.get(k) == b.get(k) for k in keys)


def diff_trees(left: Tree, right: Tree) -> list[tuple[str, str, dict[str, Any]]]:
    """Changes that turn ``left`` into ``right`` as sorted ``(path, type, entry)`` tuples."""
    changes = []
    for path in sorted(set(left) | set(right)):
        before, after = left.get(path), right.get(path)
        if before is None and after is not None:
            changes.append((path, "added", after))
        elif after is None and before is not None:
            changes.append((path, "removed", before))
        elif before is not None and after is not None and not _same_object(before, after):
            changes.append((path, "changed", after))
    return changes


class Store:
    """Repositories, refs, commits and objects persisted in sqlite plus content-addressed blobs.

    Every public method takes the store lock and runs in one sqlite transaction, which keeps the
    server consistent under concurrent requests without finer-grained locking.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.blob_dir = data_dir / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(data_dir / "lakefs.sqlite3", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._tree_cache: dict[str, Tree] = {}
        # lakeFS locks a branch for commits and merges (hooks included); other requests keep being served.
        self._branch_locks: dict[tuple[str, str], threading.Lock] = {}
        self._branch_locks_guard = threading.Lock()
        self._last_run_key = 0
        self.actions = ActionRunner(self)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Serialise access and commit (or roll back) the sqlite transaction."""
        with self._lock, self._db:
            yield self._db

    # ----- low level helpers (callers hold the lock) -----

    def _one(self, sql: str, *args: Any) -> tuple[Any, ...] | None:
        return self._db.execute(sql, args).fetchone()

    def _next_seq(self) -> int:
        row = self._one("SELECT value FROM counters WHERE name='seq'")
        value = (row[0] if row else 0) + 1
        self._db.execute("INSERT OR REPLACE INTO counters (name, value) VALUES ('seq', ?)", (value,))
        return value

    def _repo(self, repo: str) -> dict[str, Any]:
        row = self._one(
            "SELECT id, storage_namespace, default_branch, creation_date FROM repos WHERE id=?", repo
        )
        if row is None:
            raise ApiError(404, f"repository not found: {repo}")
        return {"id": row[0], "storage_namespace": row[1], "default_branch": row[2], "creation_date": row[3]}

    def _commit(self, repo: str, commit_id: str) -> dict[str, Any]:
        row = self._one(
            "SELECT id, parents, committer, message, creation_date, meta_range_id, metadata, generation "
            "FROM commits WHERE repo=? AND id=?",
            repo,
            commit_id,
        )
        if row is None:
            raise ApiError(404, f"commit not found: {commit_id}")
        return {
            "id": row[0],
            "parents": json.loads(row[1]),
            "committer": row[2],
            "message": row[3],
            "creation_date": row[4],
            "meta_range_id": row[5],
            "metadata": json.loads(row[6]),
            "generation": row[7],
            "version": 1,
        }

    def _branch_commit(self, repo: str, branch: str) -> str:
        row = self._one("SELECT commit_id FROM branches WHERE repo=? AND name=?", repo, branch)
        if row is None:
            raise ApiError(404, f"branch not found: {branch}")
        return row[0]

    def _tree(self, meta_range_id: str) -> Tree:
        if meta_range_id not in self._tree_cache:
            row = self._one("SELECT tree FROM metaranges WHERE id=?", meta_range_id)
            self._tree_cache[meta_range_id] = json.loads(row[0]) if row else {}
        return self._tree_cache[meta_range_id]

    def _commit_tree(self, repo: str, commit_id: str) -> Tree:
        return self._tree(self._commit(repo, commit_id)["meta_range_id"])

    def _save_tree(self, tree: Tree) -> str:
        text = _canonical(tree)
        meta_range_id = hashlib.sha256(text.encode()).hexdigest()
        self._db.execute("INSERT OR IGNORE INTO metaranges (id, tree) VALUES (?, ?)", (meta_range_id, text))
        return meta_range_id

    def _staging(self, repo: str, branch: str) -> dict[str, dict[str, Any] | None]:
        rows = self._db.execute("SELECT path, entry FROM staging WHERE repo=? AND branch=?", (repo, branch))
        return {path: (json.loads(entry) if entry is not None else None) for path, entry in rows}

    def _branch_tree(self, repo: str, branch: str) -> Tree:
        tree = dict(self._commit_tree(repo, self._branch_commit(repo, branch)))
        for path, entry in self._staging(repo, branch).items():
            if entry is None:
                tree.pop(path, None)
            else:
                tree[path] = entry
        return tree

    def _ref_tree(self, repo: str, resolved: ResolvedRef) -> Tree:
        if resolved.branch is not None:
            return self._branch_tree(repo, resolved.branch)
        return self._commit_tree(repo, resolved.commit_id)

    def _uncommitted(self, repo: str, branch: str) -> list[tuple[str, str, dict[str, Any]]]:
        head = self._commit_tree(repo, self._branch_commit(repo, branch))
        return diff_trees(head, self._branch_tree(repo, branch))

    def _new_commit(
        self,
        repo: str,
        parents: list[str],
        tree: Tree,
        committer: str,
        message: str,
        metadata: dict[str, str],
        date: int | None = None,
    ) -> dict[str, Any]:
        generation = 1 + max((self._commit(repo, p)["generation"] for p in parents), default=0)
        body = {
            "parents": parents,
            "committer": committer,
            "message": message,
            "creation_date": int(date if date is not None else time.time()),
            "meta_range_id": self._save_tree(tree),
            "metadata": metadata,
            "generation": generation,
        }
        commit_id = hashlib.sha256(_canonical({"repo": repo, **body}).encode()).hexdigest()
        self._db.execute(
            "INSERT OR IGNORE INTO commits (repo, id, parents, committer, message, creation_date, "
            "meta_range_id, metadata, generation, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                repo,
                commit_id,
                json.dumps(parents),
                committer,
                message,
                body["creation_date"],
                body["meta_range_id"],
                json.dumps(metadata),
                generation,
                self._next_seq(),
            ),
        )
        return self._commit(repo, commit_id)

    def _set_branch(self, repo: str, branch: str, commit_id: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO branches (repo, name, commit_id) VALUES (?, ?, ?)",
            (repo, branch, commit_id),
        )

    @contextlib.contextmanager
    def _branch_operation(self, repo: str, branch: str) -> Iterator[None]:
        """Serialise commits and merges into one branch while their hooks run outside the store lock."""
        with self._branch_locks_guard:
            lock = self._branch_locks.setdefault((repo, branch), threading.Lock())
        with lock:
            yield

    def _check_protection(self, repo: str, branch: str, action: str) -> None:
        row = self._one("SELECT rules FROM protection WHERE repo=?", repo)
        rules = json.loads(row[0]) if row else []
        if any(fnmatch.fnmatchcase(branch, rule["pattern"]) for rule in rules):
            raise ApiError(403, f"cannot {action} protected branch")

    # ----- ref resolution -----

    def _resolve_plain(self, repo: str, ref: str) -> ResolvedRef | None:
        row = self._one("SELECT commit_id FROM branches WHERE repo=? AND name=?", repo, ref)
        if row is not None:
            return ResolvedRef(row[0], ref)
        row = self._one("SELECT commit_id FROM tags WHERE repo=? AND id=?", repo, ref)
        if row is not None:
            return ResolvedRef(row[0])
        if HEX_RE.match(ref):
            rows = self._db.execute(
                "SELECT id FROM commits WHERE repo=? AND id >= ? AND id < ? LIMIT 2", (repo, ref, ref + "g")
            ).fetchall()
            if len(rows) == 1:
                return ResolvedRef(rows[0][0])
        return None

    def _apply_modifiers(self, repo: str, commit_id: str, modifiers: str) -> str:
        for op, num in re.findall(r"([~^])(\d*)", modifiers):
            count = int(num) if num else 1
            if op == "~":
                for _ in range(count):
                    commit_id = self._nth_parent(repo, commit_id, 1)
            elif count:
                commit_id = self._nth_parent(repo, commit_id, count)
        return commit_id

    def _nth_parent(self, repo: str, commit_id: str, n: int) -> str:
        parents = self._commit(repo, commit_id)["parents"]
        if len(parents) < n:
            raise ApiError(404, f"ref not found: {commit_id} has no parent {n}")
        return parents[n - 1]

    def resolve(self, repo: str, ref: str) -> ResolvedRef:
        """Resolve a lakeFS ref expression (branch, tag, commit id or prefix, ``@``, ``~N``, ``^N``)."""
        self._repo(repo)
        committed_only = ref.endswith("@")
        base = ref[:-1] if committed_only else ref
        resolved = self._resolve_plain(repo, base)
        if resolved is None:
            match = REF_MODIFIERS_RE.match(base)
            inner = self._resolve_plain(repo, match.group("base")) if match else None
            if match is None or inner is None:
                raise ApiError(404, f"ref not found: {ref}")
            return ResolvedRef(self._apply_modifiers(repo, inner.commit_id, match.group("mods")))
        if committed_only:
            return ResolvedRef(resolved.commit_id)
        return resolved

    def _ancestors(self, repo: str, commit_id: str) -> set[str]:
        seen, pending = set(), [commit_id]
        while pending:
            current = pending.pop()
            if current not in seen:
                seen.add(current)
                pending.extend(self._commit(repo, current)["parents"])
        return seen

    def _merge_base(self, repo: str, left: str, right: str) -> str | None:
        """Nearest common ancestor: the common ancestor with the highest generation."""
        common = self._ancestors(repo, left) & self._ancestors(repo, right)
        if not common:
            return None
        return max(common, key=lambda c: (self._commit(repo, c)["generation"], c))

    # ----- repositories -----

    def create_repository(
        self, name: str, namespace: str, default_branch: str, committer: str
    ) -> dict[str, Any]:
        with self.transaction():
            if not REPOSITORY_RE.match(name):
                raise ApiError(400, "repository: invalid value: validation error")
            if not NAMESPACE_RE.match(namespace):
                raise ApiError(400, "storage_namespace: invalid value: validation error")
            if not BRANCH_RE.match(default_branch):
                raise ApiError(400, "default_branch: invalid branch ID")
            if self._one("SELECT 1 FROM repos WHERE id=?", name):
                raise ApiError(409, "repository already exists: not unique")
            now = int(time.time())
            self._db.execute(
                "INSERT INTO repos (id, storage_namespace, default_branch, creation_date) "
                "VALUES (?, ?, ?, ?)",
                (name, namespace, default_branch, now),
            )
            commit = self._new_commit(name, [], EMPTY_TREE, committer, "Repository created", {}, now)
            self._set_branch(name, default_branch, commit["id"])
            return self._repo(name)

    def get_repository(self, repo: str) -> dict[str, Any]:
        with self.transaction():
            return self._repo(repo)

    def list_repositories(self) -> list[dict[str, Any]]:
        with self.transaction():
            rows = self._db.execute("SELECT id FROM repos ORDER BY id").fetchall()
            return [self._repo(row[0]) for row in rows]

    def delete_repository(self, repo: str) -> None:
        with self.transaction():
            self._repo(repo)
            for table, column in (
                ("repos", "id"),
                ("commits", "repo"),
                ("branches", "repo"),
                ("staging", "repo"),
                ("tags", "repo"),
                ("protection", "repo"),
                ("action_runs", "repo"),
                ("hook_runs", "repo"),
            ):
                self._db.execute(f"DELETE FROM {table} WHERE {column}=?", (repo,))

    # ----- branches -----

    def list_branches(self, repo: str) -> list[dict[str, str]]:
        with self.transaction():
            self._repo(repo)
            rows = self._db.execute(
                "SELECT name, commit_id FROM branches WHERE repo=? ORDER BY name", (repo,)
            )
            return [{"id": name, "commit_id": commit_id} for name, commit_id in rows]

    def create_branch(self, repo: str, name: str, source: str) -> str:
        with self.transaction():
            self._repo(repo)
            if not BRANCH_RE.match(name):
                raise ApiError(400, "branch id: invalid branch ID")
            if self._one("SELECT 1 FROM branches WHERE repo=? AND name=?", repo, name):
                raise ApiError(409, "branch already exists: not unique")
            if self._one("SELECT 1 FROM tags WHERE repo=? AND id=?", repo, name):
                raise ApiError(409, "tag already exists: not unique")
            commit_id = self.resolve(repo, source).commit_id
            self._set_branch(repo, name, commit_id)
            return commit_id

    def get_branch(self, repo: str, branch: str) -> dict[str, str]:
        with self.transaction():
            self._repo(repo)
            return {"id": branch, "commit_id": self._branch_commit(repo, branch)}

    def delete_branch(self, repo: str, branch: str) -> None:
        with self.transaction():
            repository = self._repo(repo)
            self._branch_commit(repo, branch)
            if branch == repository["default_branch"]:
                raise ApiError(403, "cannot delete repository default branch")
            self._check_protection(repo, branch, "delete")
            self._db.execute("DELETE FROM branches WHERE repo=? AND name=?", (repo, branch))
            self._db.execute("DELETE FROM staging WHERE repo=? AND branch=?", (repo, branch))

    def reset_branch(self, repo: str, branch: str, reset_type: str, path: str) -> None:
        """Drop uncommitted changes: all of them, one object, or everything under a prefix."""
        with self.transaction():
            self._repo(repo)
            self._branch_commit(repo, branch)
            self._check_protection(repo, branch, "reset")
            if reset_type == "reset":
                self._db.execute("DELETE FROM staging WHERE repo=? AND branch=?", (repo, branch))
            elif reset_type == "object":
                self._db.execute(
                    "DELETE FROM staging WHERE repo=? AND branch=? AND path=?", (repo, branch, path)
                )
            elif reset_type == "common_prefix":
                self._db.execute(
                    "DELETE FROM staging WHERE repo=? AND branch=? AND substr(path, 1, ?)=?",
                    (repo, branch, len(path), path),
                )
            else:
                raise ApiError(400, f"invalid reset type: {reset_type}")

    def hard_reset_branch(self, repo: str, branch: str, ref: str) -> None:
        with self.transaction():
            self._repo(repo)
            self._branch_commit(repo, branch)
            self._check_protection(repo, branch, "reset")
            if self._uncommitted(repo, branch):
                raise ApiError(400, "uncommitted changes (dirty branch)")
            self._set_branch(repo, branch, self.resolve(repo, ref).commit_id)

    # ----- tags -----

    def list_tags(self, repo: str) -> list[dict[str, str]]:
        with self.transaction():
            self._repo(repo)
            rows = self._db.execute("SELECT id, commit_id FROM tags WHERE repo=? ORDER BY id", (repo,))
            return [{"id": tag, "commit_id": commit_id} for tag, commit_id in rows]

    def create_tag(self, repo: str, tag: str, ref: str, force: bool) -> dict[str, str]:
        with self.transaction():
            self._repo(repo)
            _validate_tag(tag)
            exists = self._one("SELECT 1 FROM tags WHERE repo=? AND id=?", repo, tag)
            if exists and not force:
                raise ApiError(409, "tag already exists: not unique")
            commit_id = self.resolve(repo, ref).commit_id
            self._db.execute(
                "INSERT OR REPLACE INTO tags (repo, id, commit_id) VALUES (?, ?, ?)", (repo, tag, commit_id)
            )
            return {"id": tag, "commit_id": commit_id}

    def get_tag(self, repo: str, tag: str) -> dict[str, str]:
        with self.transaction():
            self._repo(repo)
            row = self._one("SELECT commit_id FROM tags WHERE repo=? AND id=?", repo, tag)
            if row is None:
                raise ApiError(404, f"tag not found: {tag}")
            return {"id": tag, "commit_id": row[0]}

    def delete_tag(self, repo: str, tag: str) -> None:
        with self.transaction():
            self.get_tag(repo, tag)
            self._db.execute("DELETE FROM tags WHERE repo=? AND id=?", (repo, tag))

    # ----- objects -----

    def blob_path(self, address: str) -> Path:
        return self.blob_dir / address[:2] / address

    def upload_object(
        self,
        repo: str,
        branch: str,
        path: str,
        data: bytes,
        content_type: str,
        metadata: dict[str, str],
        if_none_match: str | None,
        if_match: str | None,
    ) -> dict[str, Any]:
        """Store bytes content-addressed, then stage the entry on the branch."""
        address = hashlib.sha256(data).hexdigest()
        blob = self.blob_path(address)
        if not blob.exists():
            blob.parent.mkdir(parents=True, exist_ok=True)
            tmp = blob.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(blob)
        with self.transaction():
            repository = self._repo(repo)
            self._branch_commit(repo, branch)
            _validate_path(path)
            self._check_protection(repo, branch, "write to")
            current = self._branch_tree(repo, branch).get(path)
            if if_none_match is not None and if_none_match != "*":
                raise ApiError(501, "If-None-Match only supports '*'")
            if if_none_match == "*" and current is not None:
                raise ApiError(412, "path already exists: precondition failed")
            if if_match is not None and (current is None or current["checksum"] != if_match.strip('"')):
                raise ApiError(412, "ETag mismatch: precondition failed")
            entry = {
                "checksum": hashlib.md5(data).hexdigest(),
                "address": address,
                "physical_address": f"{repository['storage_namespace'].rstrip('/')}/data/{address}",
                "size_bytes": len(data),
                "mtime": int(time.time()),
                "content_type": content_type,
                "metadata": metadata,
            }
            self._db.execute(
                "INSERT OR REPLACE INTO staging (repo, branch, path, entry) VALUES (?, ?, ?, ?)",
                (repo, branch, path, json.dumps(entry)),
            )
            return object_stats(path, entry)

    def get_entry(self, repo: str, ref: str, path: str) -> dict[str, Any]:
        with self.transaction():
            entry = self._ref_tree(repo, self.resolve(repo, ref)).get(path)
            if entry is None:
                raise ApiError(404, f"path not found: {path}")
            return entry

    def list_tree(self, repo: str, ref: str) -> Tree:
        with self.transaction():
            return self._ref_tree(repo, self.resolve(repo, ref))

    def delete_objects(self, repo: str, branch: str, paths: list[str]) -> list[dict[str, Any]]:
        """Stage tombstones; missing paths are not an error (as in lakeFS)."""
        with self.transaction():
            self._repo(repo)
            self._branch_commit(repo, branch)
            self._check_protection(repo, branch, "write to")
            head = self._commit_tree(repo, self._branch_commit(repo, branch))
            errors = []
            for path in paths:
                if not path:
                    errors.append({"path": path, "status_code": 400, "message": "path: required value"})
                    continue
                if path in head:
                    self._db.execute(
                        "INSERT OR REPLACE INTO staging (repo, branch, path, entry) VALUES (?, ?, ?, NULL)",
                        (repo, branch, path),
                    )
                else:
                    self._db.execute(
                        "DELETE FROM staging WHERE repo=? AND branch=? AND path=?", (repo, branch, path)
                    )
            return errors

    # ----- commits -----

    def commit(
        self,
        repo: str,
        branch: str,
        committer: str,
        message: str,
        metadata: dict[str, str],
        allow_empty: bool,
        date: int | None,
    ) -> dict[str, Any]:
        """Commit the staged changes; pre-commit hooks run (outside the store lock) before anything changes.

        As in lakeFS the staged changes are "sealed" when the commit starts: writes that arrive while hooks
        run stay staged for the next commit instead of sneaking into this one.
        """
        with self._branch_operation(repo, branch):
            with self.transaction():
                self._repo(repo)
                head = self._branch_commit(repo, branch)
                self._check_protection(repo, branch, "commit to")
                if not message:
                    raise ApiError(400, "message: required value")
                if not self._uncommitted(repo, branch) and not allow_empty:
                    raise ApiError(400, "commit: no changes")
                sealed = self._staging(repo, branch)
                tree = self._branch_tree(repo, branch)
            # lakeFS reads pre-commit actions from the branch's staging view (committed + staged files).
            record = HookRecord("pre-commit", repo, branch, branch, "", message, committer, metadata)
            pre_run = self.actions.run(record, tree)
            with self.transaction():
                if self._branch_commit(repo, branch) != head:
                    raise ApiError(409, "branch changed while pre-commit hooks ran")
                commit = self._new_commit(repo, [head], tree, committer, message, metadata, date)
                self._set_branch(repo, branch, commit["id"])
                current = self._staging(repo, branch)
                for path, entry in sealed.items():
                    if path in current and current[path] == entry:
                        self._db.execute(
                            "DELETE FROM staging WHERE repo=? AND branch=? AND path=?", (repo, branch, path)
                        )
                if pre_run:
                    self._set_run_commit(repo, pre_run, commit["id"])
        post = HookRecord("post-commit", repo, branch, commit["id"], commit["id"], message, committer, metadata)
        self.actions.run(post, tree)
        return commit

    def get_commit(self, repo: str, commit_id: str) -> dict[str, Any]:
        with self.transaction():
            self._repo(repo)
            resolved = self._resolve_plain(repo, commit_id) if HEX_RE.match(commit_id) else None
            if resolved is None:
                resolved = self.resolve(repo, commit_id)
            return self._commit(repo, resolved.commit_id)

    def log(self, repo: str, ref: str, query: LogQuery) -> tuple[list[dict[str, Any]], bool]:
        """Walk ancestry newest first; returns (page of commits, has_more)."""
        with self.transaction():
            start = self.resolve(repo, ref).commit_id
            stop_at = self.resolve(repo, query.stop_at).commit_id if query.stop_at else None
            results: list[dict[str, Any]] = []
            passed_after = not query.after
            for commit in self._walk(repo, start, query.first_parent):
                if query.since is not None and commit["creation_date"] < query.since:
                    break
                if self._touches(repo, commit, query.objects, query.prefixes):
                    if passed_after:
                        if len(results) == query.amount:
                            return results, not query.limit
                        results.append(commit)
                    elif commit["id"] == query.after:
                        passed_after = True
                if commit["id"] == stop_at:
                    break
            return results, False

    def _walk(self, repo: str, start: str, first_parent: bool) -> Iterator[dict[str, Any]]:
        """Yield ancestors of ``start`` newest first (by creation date, then insertion order)."""

        def key(commit_id: str) -> tuple[int, int]:
            row = self._one("SELECT creation_date, seq FROM commits WHERE repo=? AND id=?", repo, commit_id)
            return (-row[0], -row[1]) if row else (0, 0)

        heap = [(key(start), start)]
        seen = {start}
        while heap:
            _, commit_id = heapq.heappop(heap)
            commit = self._commit(repo, commit_id)
            yield commit
            parents = commit["parents"][:1] if first_parent else commit["parents"]
            for parent in parents:
                if parent not in seen:
                    seen.add(parent)
                    heapq.heappush(heap, (key(parent), parent))

    def _touches(self, repo: str, commit: dict[str, Any], objects: list[str], prefixes: list[str]) -> bool:
        if not objects and not prefixes:
            return True
        parent_tree = self._commit_tree(repo, commit["parents"][0]) if commit["parents"] else EMPTY_TREE
        changed = [path for path, _, _ in diff_trees(parent_tree, self._tree(commit["meta_range_id"]))]
        return any(p in objects or any(p.startswith(prefix) for prefix in prefixes) for p in changed)

    # ----- diff & merge -----

    def diff_branch(self, repo: str, branch: str) -> list[tuple[str, str, dict[str, Any]]]:
        with self.transaction():
            self._repo(repo)
            return self._uncommitted(repo, branch)

    def diff_refs(
        self, repo: str, left: str, right: str, diff_type: str
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """two_dot compares the refs directly (right includes staging, like lakeFS);
        three_dot compares committed right with the merge base, i.e. what a merge would bring."""
        with self.transaction():
            left_ref, right_ref = self.resolve(repo, left), self.resolve(repo, right)
            if diff_type == "two_dot":
                return diff_trees(
                    self._commit_tree(repo, left_ref.commit_id), self._ref_tree(repo, right_ref)
                )
            if diff_type != "three_dot":
                raise ApiError(400, f"invalid diff type: {diff_type}")
            base = self._merge_base(repo, left_ref.commit_id, right_ref.commit_id)
            base_tree = self._commit_tree(repo, base) if base else EMPTY_TREE
            return diff_trees(base_tree, self._commit_tree(repo, right_ref.commit_id))

    def merge_base(self, repo: str, source: str, destination: str) -> dict[str, str]:
        with self.transaction():
            source_id = self.resolve(repo, source).commit_id
            destination_id = self.resolve(repo, destination).commit_id
            base = self._merge_base(repo, source_id, destination_id)
            if base is None:
                raise ApiError(404, "no merge base found")
            return {
                "source_commit_id": source_id,
                "destination_commit_id": destination_id,
                "base_commit_id": base,
            }

    def merge(self, repo: str, source: str, destination: str, committer: str, options: MergeOptions) -> str:
        """Three-way merge; pre-merge hooks run (outside the store lock) after conflicts are ruled out.

        As in lakeFS, pre-merge actions are read from the *source* commit and matched against the
        destination branch: a source that deletes ``_lakefs_actions/`` merges without running them.
        """
        with self._branch_operation(repo, destination):
            with self.transaction():
                self._repo(repo)
                dest_head = self._branch_commit(repo, destination)
                source_id = self.resolve(repo, source).commit_id
                if options.strategy not in ("", "dest-wins", "source-wins"):
                    raise ApiError(400, "strategy: invalid value")
                if self._uncommitted(repo, destination):
                    raise ApiError(400, "uncommitted changes (dirty branch)")
                base = self._merge_base(repo, source_id, dest_head)
                base_tree = self._commit_tree(repo, base) if base else EMPTY_TREE
                source_tree = self._commit_tree(repo, source_id)
                merged = merge_trees(base_tree, source_tree, self._commit_tree(repo, dest_head), options.strategy)
                if (
                    not options.allow_empty
                    and not options.force
                    and not diff_trees(self._commit_tree(repo, dest_head), merged)
                ):
                    raise ApiError(400, "no changes")
                parents = [dest_head] if options.squash_merge else [dest_head, source_id]
                message = options.message or f"Merge '{source}' into '{destination}'"
            record = HookRecord(
                "pre-merge", repo, destination, source_id, source_id, message, committer, options.metadata, source
            )
            pre_run = self.actions.run(record, source_tree)
            with self.transaction():
                if self._branch_commit(repo, destination) != dest_head:
                    raise ApiError(409, "branch changed while pre-merge hooks ran", {"reference": ""})
                if self._uncommitted(repo, destination):
                    raise ApiError(400, "uncommitted changes (dirty branch)")
                commit = self._new_commit(repo, parents, merged, committer, message, options.metadata)
                self._set_branch(repo, destination, commit["id"])
                if pre_run:
                    self._set_run_commit(repo, pre_run, commit["id"])
        post = HookRecord(
            "post-merge", repo, destination, commit["id"], commit["id"], message, committer, options.metadata, source
        )
        self.actions.run(post, merged)
        return commit["id"]

    # ----- action runs -----

    def new_run_id(self) -> str:
        """Run ids decrease with time (as lakeFS's), so ascending id order lists the newest run first."""
        with self._branch_locks_guard:
            key = RUN_ID_EPOCH_NS - time.time_ns()
            if self._last_run_key and key >= self._last_run_key:
                key = self._last_run_key - 1
            self._last_run_key = key
        return f"{key:020x}"

    def save_run(self, run: dict[str, Any], hooks: list[dict[str, Any]]) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO action_runs (repo, run_id, branch, source_ref, event_type, commit_id, "
                "start_time, end_time, passed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                tuple(run[k] for k in ACTION_RUN_COLUMNS),
            )
            for hook in hooks:
                self._db.execute(
                    "INSERT OR REPLACE INTO hook_runs (repo, run_id, hook_run_id, action_name, hook_id, "
                    "start_time, end_time, passed, output) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    tuple(hook[k] for k in HOOK_RUN_COLUMNS),
                )

    def _set_run_commit(self, repo: str, run_id: str, commit_id: str) -> None:
        """lakeFS records the created commit on the pre-commit/pre-merge run once the operation succeeds."""
        self._db.execute("UPDATE action_runs SET commit_id=? WHERE repo=? AND run_id=?", (commit_id, repo, run_id))

    def list_runs(self, repo: str, branch: str, commit: str) -> list[dict[str, Any]]:
        """Newest first; like lakeFS, a branch filter takes precedence over a commit filter."""
        with self.transaction():
            self._repo(repo)
            sql = f"SELECT {', '.join(ACTION_RUN_COLUMNS)} FROM action_runs WHERE repo=?"
            args: tuple[Any, ...] = (repo,)
            if branch:
                sql, args = sql + " AND branch=?", (*args, branch)
            elif commit:
                sql, args = sql + " AND commit_id=?", (*args, commit)
            rows = self._db.execute(sql + " ORDER BY run_id", args).fetchall()
            return [dict(zip(ACTION_RUN_COLUMNS, row, strict=True)) for row in rows]

    def get_run(self, repo: str, run_id: str) -> dict[str, Any]:
        with self.transaction():
            self._repo(repo)
            row = self._one(
                f"SELECT {', '.join(ACTION_RUN_COLUMNS)} FROM action_runs WHERE repo=? AND run_id=?", repo, run_id
            )
            if row is None:
                raise ApiError(404, f"run not found: {run_id}")
            return dict(zip(ACTION_RUN_COLUMNS, row, strict=True))

    def list_hook_runs(self, repo: str, run_id: str) -> list[dict[str, Any]]:
        with self.transaction():
            self.get_run(repo, run_id)
            rows = self._db.execute(
                f"SELECT {', '.join(HOOK_RUN_COLUMNS)} FROM hook_runs WHERE repo=? AND run_id=? ORDER BY hook_run_id",
                (repo, run_id),
            ).fetchall()
            return [dict(zip(HOOK_RUN_COLUMNS, row, strict=True)) for row in rows]

    def hook_output(self, repo: str, run_id: str, hook_run_id: str) -> str:
        with self.transaction():
            self.get_run(repo, run_id)
            row = self._one(
                "SELECT output FROM hook_runs WHERE repo=? AND run_id=? AND hook_run_id=?", repo, run_id, hook_run_id
            )
            if row is None:
                raise ApiError(404, f"hook run not found: {hook_run_id}")
            return row[0]

    # ----- branch protection -----

    def get_protection(self, repo: str) -> list[dict[str, str]]:
        with self.transaction():
            self._repo(repo)
            row = self._one("SELECT rules FROM protection WHERE repo=?", repo)
            return json.loads(row[0]) if row else []

    def set_protection(self, repo: str, rules: list[dict[str, str]], if_match: str | None) -> None:
        with self.transaction():
            current = self.get_protection(repo)
            if if_match and if_match != protection_etag(current):
                raise ApiError(412, "precondition failed")
            self._db.execute(
                "INSERT OR REPLACE INTO protection (repo, rules) VALUES (?, ?)", (repo, json.dumps(rules))
            )


@dataclass
class LogQuery:
    """Filters of ``GET /repositories/{repository}/refs/{ref}/commits``."""

    after: str = ""
    amount: int = DEFAULT_AMOUNT
    objects: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    limit: bool = False
    first_parent: bool = False
    since: int | None = None
    stop_at: str = ""


@dataclass
class MergeOptions:
    """The optional ``Merge`` request body."""

    message: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    strategy: str = ""
    force: bool = False
    allow_empty: bool = False
    squash_merge: bool = False


def merge_trees(base: Tree, source: Tree, dest: Tree, strategy: str) -> Tree:
    """Three-way merge: take each side's change; a path changed differently on both sides conflicts."""
    merged: Tree = {}
    for path in set(base) | set(source) | set(dest):
        b, s, d = base.get(path), source.get(path), dest.get(path)
        if _same_object(s, d) or _same_object(s, b):
            result = d
        elif _same_object(d, b) or strategy == "source-wins":
            result = s
        elif strategy == "dest-wins":
            result = d
        else:
            # lakeFS answers {"message"}; the spec still documents MergeResult for 409, so an empty
            # "reference" keeps the document valid against both.
            raise ApiError(409, "conflict found", {"reference": ""})
        if result is not None:
            merged[path] = result
    return merged


def protection_etag(rules: list[dict[str, str]]) -> str:
    return hashlib.md5(_canonical(rules).encode()).hexdigest()


def object_stats(path: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The spec's ``ObjectStats`` for a stored entry."""
    return {
        "path": path,
        "path_type": "object",
        "physical_address": entry["physical_address"],
        "checksum": entry["checksum"],
        "size_bytes": entry["size_bytes"],
        "mtime": entry["mtime"],
        "content_type": entry["content_type"],
        "metadata": entry["metadata"],
    }


def _validate_path(path: str) -> None:
    if not path:
        raise ApiError(400, "path: required value")
    if len(path) > 1024:
        raise ApiError(400, "path: invalid value")


def _validate_tag(tag: str) -> None:
    """Tag ids follow git's check-ref-format rules as lakeFS applies them (``/`` is allowed)."""
    bad = (
        not tag
        or tag == "@"
        or tag.endswith((".", ".lock", "/"))
        or any(s in tag for s in ("..", "//", "@{"))
        or any(c in tag for c in "^:?*[\\")
        or any(ord(c) <= 0x20 for c in tag)
    )
    if bad:
        raise ApiError(400, "tag id: invalid tag ID")


# --------------------------------------------------------------------------------------------------
# Actions (hooks)
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------------------


@dataclass
class Request:
    """One parsed API request; ``params`` holds URL-decoded path parameters."""

    method: str
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    user: str = ""

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    def flag(self, name: str) -> bool:
        value = self.arg(name).lower()
        if value in ("", "false", "0"):
            return False
        if value in ("true", "1"):
            return True
        raise ApiError(400, f"{name}: invalid boolean value")

    def amount(self) -> int:
        raw = self.arg("amount")
        try:
            value = int(raw) if raw else DEFAULT_AMOUNT
        except ValueError as err:
            raise ApiError(400, "amount: invalid integer") from err
        if value < -1 or value > MAX_AMOUNT:
            raise ApiError(400, f"amount: must be between -1 and {MAX_AMOUNT}")
        return DEFAULT_AMOUNT if value == -1 else value

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError as err:
            raise ApiError(400, "request body is not valid JSON") from err

    def json_object(self, required: tuple[str, ...] = ()) -> dict[str, Any]:
        body = self.json()
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        for name in required:
            if body.get(name) in (None, ""):
                raise ApiError(400, f"{name}: required value")
        return body


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, document: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(document).encode(), "application/json", headers or {})


def error_response(status: int, message: str, extra: dict[str, Any] | None = None) -> Response:
    return json_response(status, {"message": message, **(extra or {})})


def paginate(items: list[tuple[str, Any]], after: str, amount: int) -> tuple[list[Any], dict[str, Any]]:
    """Keyset pagination over ``(key, value)`` pairs sorted by key, as lakeFS paginates listings."""
    remaining = [(key, value) for key, value in items if key > after] if after else items
    page = remaining[:amount]
    has_more = len(remaining) > amount
    pagination = {
        "has_more": has_more,
        "next_offset": page[-1][0] if has_more and page else "",
        "results": len(page),
        "max_per_page": amount,
    }
    return [value for _, value in page], pagination


def group_by_delimiter(
    items: list[tuple[str, Any]], prefix: str, delimiter: str, make_prefix: Callable[[str], Any]
) -> list[tuple[str, Any]]:
    """Collapse paths below ``prefix`` that contain ``delimiter`` into one common-prefix item."""
    grouped: dict[str, Any] = {}
    for key, value in items:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        index = rest.find(delimiter) if delimiter else -1
        if index >= 0:
            common = prefix + rest[: index + len(delimiter)]
            grouped.setdefault(common, make_prefix(common))
        else:
            grouped[key] = value
    return sorted(grouped.items())


Handler = Callable[["LakeFSEmulator", Request], Response]
ROUTES: list[tuple[str, str, Handler]] = []


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    """Register a handler for an OpenAPI path template (relative to ``/api/v1``)."""

    def register(handler: Handler) -> Handler:
        ROUTES.append((method, template, handler))
        return handler

    return register


def served_routes() -> list[tuple[str, str]]:
    """(HTTP method, OpenAPI path template) for every route the emulator serves."""
    return [(method, template) for method, template, _ in ROUTES]


def match_route(method: str, raw_path: str) -> tuple[Handler, dict[str, str]] | None:
    """Match on raw (still percent-encoded) segments so encoded ``/`` in refs stays inside one parameter."""
    segments = raw_path.strip("/").split("/") if raw_path.strip("/") else []
    path_matched = False
    for route_method, template, handler in ROUTES:
        parts = template.strip("/").split("/")
        if len(parts) != len(segments):
            continue
        params: dict[str, str] = {}
        for part, segment in zip(parts, segments, strict=True):
            if part.startswith("{"):
                params[part[1:-1]] = unquote(segment)
            elif part != segment:
                break
        else:
            path_matched = True
            if route_method == method:
                return handler, params
    if path_matched:
        raise ApiError(405, "method not allowed")
    return None


# ----- handlers: health & config -----


@route("GET", "/healthcheck")
def _healthcheck(app: LakeFSEmulator, req: Request) -> Response:
    return Response(204, content_type="")


def _version_config() -> dict[str, Any]:
    return {"version": LAKEFS_VERSION, "version_context": "lakefs-emulator", "upgrade_recommended": False}


def _storage_config() -> dict[str, Any]:
    return {
        "blockstore_type": "local",
        "blockstore_namespace_example": "local://example-bucket/",
        "blockstore_namespace_ValidityRegex": "^local://",
        "default_namespace_prefix": "local://",
        "pre_sign_support": False,
        "pre_sign_support_ui": False,
        "import_support": False,
        "import_validity_regex": "^local://",
        "pre_sign_multipart_upload": False,
    }


@route("GET", "/config")
def _config(app: LakeFSEmulator, req: Request) -> Response:
    return json_response(200, {"version_config": _version_config(), "storage_config": _storage_config()})


@route("GET", "/config/version")
def _config_version(app: LakeFSEmulator, req: Request) -> Response:
    return json_response(200, _version_config())


@route("GET", "/config/storage")
def _config_storage(app: LakeFSEmulator, req: Request) -> Response:
    return json_response(200, _storage_config())


# ----- handlers: repositories -----


@route("GET", "/repositories")
def _list_repositories(app: LakeFSEmulator, req: Request) -> Response:
    prefix, search = req.arg("prefix"), req.arg("search")
    items = [
        (repo["id"], repo)
        for repo in app.store.list_repositories()
        if repo["id"].startswith(prefix) and search in repo["id"]
    ]
    results, pagination = paginate(items, req.arg("after"), req.amount())
    return json_response(200, {"pagination": pagination, "results": results})


@route("POST", "/repositories")
def _create_repository(app: LakeFSEmulator, req: Request) -> Response:
    if req.flag("bare"):
        raise ApiError(501, "bare repositories are not supported by the emulator")
    body = req.json_object(("name", "storage_namespace"))
    if body.get("sample_data"):
        raise ApiError(501, "sample data is not supported by the emulator")
    if body.get("read_only"):
        raise ApiError(501, "read-only repositories are not supported by the emulator")
    repo = app.store.create_repository(
        body["name"], body["storage_namespace"], body.get("default_branch") or "main", req.user
    )
    return json_response(201, repo)


@route("GET", "/repositories/{repository}")
def _get_repository(app: LakeFSEmulator, req: Request) -> Response:
    return json_response(200, app.store.get_repository(req.params["repository"]))


@route("DELETE", "/repositories/{repository}")
def _delete_repository(app: LakeFSEmulator, req: Request) -> Response:
    app.store.delete_repository(req.params["repository"])
    return Response(204, content_type="")


@route("GET", "/repositories/{repository}/settings/branch_protection")
def _get_branch_protection(app: LakeFSEmulator, req: Request) -> Response:
    rules = app.store.get_protection(req.params["repository"])
    return json_response(200, rules, {"ETag": protection_etag(rules)})


@route("PUT", "/repositories/{repository}/settings/branch_protection")
def _set_branch_protection(app: LakeFSEmulator, req: Request) -> Response:
    rules = req.json()
    valid = isinstance(rules, list) and all(
        isinstance(rule, dict) and isinstance(rule.get("pattern"), str) and rule["pattern"] for rule in rules
    )
    if not valid:
        raise ApiError(400, "body must be a list of {pattern} rules")
    app.store.set_protection(
        req.params["repository"], [{"pattern": r["pattern"]} for r in rules], req.headers.get("If-Match")
    )
    return Response(204, content_type="")


# ----- handlers: branches & tags -----


def _ref_listing(req: Request, refs: list[dict[str, str]]) -> Response:
    prefix = req.arg("prefix")
    items = [(ref["id"], ref) for ref in refs if ref["id"].startswith(prefix)]
    results, pagination = paginate(items, req.arg("after"), req.amount())
    return json_response(200, {"pagination": pagination, "results": results})


@route("GET", "/repositories/{repository}/branches")
def _list_branches(app: LakeFSEmulator, req: Request) -> Response:
    return _ref_listing(req, app.store.list_branches(req.params["repository"]))


@route("POST", "/repositories/{repository}/branches")
def _create_branch(app: LakeFSEmulator, req: Request) -> Response:
    body = req.json_object(("name", "source"))
    commit_id = app.store.create_branch(req.params["repository"], body["name"], body["source"])
    return Response(201, commit_id.encode(), "text/html")


@route("GET", "/repositories/{repository}/branches/{branch}")
def _get_branch(app: LakeFSEmulator, req: Request) -> Response:
    return json_response(200, app.store.get_branch(req.params["repository"], req.params["branch"]))


@route("DELETE", "/repositories/{repository}/branches/{branch}")
def _delete_branch(app: LakeFSEmulator, req: Request) -> Response:
    app.store.delete_branch(req.params["repository"], req.params["branch"])
    return Response(204, content_type="")


@route("PUT", "/repositories/{repository}/branches/{branch}")
def _reset_branch(app: LakeFSEmulator, req: Request) -> Response:
    body = req.json_object(("type",))
    if body["type"] in ("object", "common_prefix") and not body.get("path"):
        raise ApiError(400, "path: required value")
    app.store.reset_branch(req.params["repository"], req.params["branch"], body["type"], body.get("path", ""))
    return Response(204, content_type="")


@route("PUT", "/repositories/{repository}/branches/{branch}/hard_reset")
def _hard_reset_branch(app: LakeFSEmulator, req: Request) -> Response:
    if not req.arg("ref"):
        raise ApiError(400, "ref: required value")
    app.store.hard_reset_branch(req.params["repository"], req.params["branch"], req.arg("ref"))
    return Response(204, content_type="")


@route("GET", "/repositories/{repository}/tags")
def _list_tags(app: LakeFSEmulator, req: Request) -> Response:
    return _ref_listing(req, app.store.list_tags(req.params["repository"]))


@route("POST", "/repositories/{repository}/tags")
def _create_tag(app: LakeFSEmulator, req: Request) -> Response:
    body = req.json_object(("id", "ref"))
    tag = app.store.create_tag(req.params["repository"], body["id"], body["ref"], bool(body.get("force")))
    return json_response(201, tag)


@route("GET", "/repositories/{repository}/tags/{tag}")
def _get_tag(app: LakeFSEmulator, req: Request) -> Response:
    return json_response(200, app.store.get_tag(req.params["repository"], req.params["tag"]))


@route("DELETE", "/repositories/{repository}/tags/{tag}")
def _delete_tag(app: LakeFSEmulator, req: Request) -> Response:
    app.store.delete_tag(req.params["repository"], req.params["tag"])
    return Response(204, content_type="")


# ----- handlers: objects -----


def _multipart_content(content_type: str, body: bytes) -> tuple[bytes, str]:
    """Extract the ``content`` part of a multipart/form-data body (the only part lakeFS reads)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise ApiError(400, "multipart body without boundary")
    delimiter = b"--" + match.group(1).encode()
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = head.decode("latin-1").lower()
        if re.search(r'name="?content"?', headers):
            part_type = re.search(r"content-type:\s*([^\r\n;]+)", headers)
            return data.removesuffix(b"\r\n"), part_type.group(
                1
            ).strip() if part_type else "application/octet-stream"
    raise ApiError(400, "multipart body has no 'content' part")


def _user_metadata(headers: Any) -> dict[str, str]:
    prefix = "x-lakefs-meta-"
    return {key[len(prefix) :]: value for key, value in headers.items() if key.lower().startswith(prefix)}


@route("POST", "/repositories/{repository}/branches/{branch}/objects")
def _upload_object(app: LakeFSEmulator, req: Request) -> Response:
    content_type = req.headers.get("Content-Type") or "application/octet-stream"
    if content_type.lower().startswith("multipart/form-data"):
        data, object_type = _multipart_content(content_type, req.body)
    else:
        data, object_type = req.body, content_type.split(";")[0].strip()
    stats = app.store.upload_object(
        req.params["repository"],
        req.params["branch"],
        req.arg("path"),
        data,
        object_type,
        _user_metadata(req.headers),
        req.headers.get("If-None-Match"),
        req.headers.get("If-Match"),
    )
    return json_response(201, stats)


@route("DELETE", "/repositories/{repository}/branches/{branch}/objects")
def _delete_object(app: LakeFSEmulator, req: Request) -> Response:
    _validate_path(req.arg("path"))
    app.store.delete_objects(req.params["repository"], req.params["branch"], [req.arg("path")])
    return Response(204, content_type="")


@route("POST", "/repositories/{repository}/branches/{branch}/objects/delete")
def _delete_objects(app: LakeFSEmulator, req: Request) -> Response:
    body = req.json_object()
    paths = body.get("paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ApiError(400, "paths: required value")
    if len(paths) > MAX_AMOUNT:
        raise ApiError(400, f"paths: at most {MAX_AMOUNT} paths per request")
    errors = app.store.delete_objects(req.params["repository"], req.params["branch"], paths)
    return json_response(200, {"errors": errors})


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse a single ``bytes=a-b`` range; None means the whole object."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise ApiError(400, "invalid Range header")
    first, last = match.group(1), match.group(2)
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise ApiError(416, "Requested Range Not Satisfiable")
    return start, end


def _object_response(app: LakeFSEmulator, req: Request, with_body: bool) -> Response:
    path = req.arg("path")
    _validate_path(path)
    entry = app.store.get_entry(req.params["repository"], req.params["ref"], path)
    etag = f'"{entry["checksum"]}"'
    headers = {
        "ETag": etag,
        "Last-Modified": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(entry["mtime"])),
        "Accept-Ranges": "bytes",
    }
    if with_body and req.headers.get("If-None-Match") in (etag, entry["checksum"]):
        return Response(304, content_type="", headers=headers)
    data = app.store.blob_path(entry["address"]).read_bytes()
    status = 200
    if req.headers.get("Range"):
        start, end = _byte_range(req.headers["Range"], len(data))
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        data, status = data[start : end + 1], 206
    return Response(status, data, "application/octet-stream", headers)


@route("GET", "/repositories/{repository}/refs/{ref}/objects")
def _get_object(app: LakeFSEmulator, req: Request) -> Response:
    if req.flag("presign"):
        raise ApiError(400, "presign is not supported by this blockstore")
    return _object_response(app, req, with_body=True)


@route("HEAD", "/repositories/{repository}/refs/{ref}/objects")
def _head_object(app: LakeFSEmulator, req: Request) -> Response:
    return _object_response(app, req, with_body=False)


@route("GET", "/repositories/{repository}/refs/{ref}/objects/stat")
def _stat_object(app: LakeFSEmulator, req: Request) -> Response:
    path = req.arg("path")
    _validate_path(path)
    entry = app.store.get_entry(req.params["repository"], req.params["ref"], path)
    stats = object_stats(path, entry)
    if req.arg("user_metadata").lower() == "false":
        stats.pop("metadata")
    return json_response(200, stats)


def _common_prefix_stats(path: str) -> dict[str, Any]:
    return {"path": path, "path_type": "common_prefix", "physical_address": "", "checksum": "", "mtime": 0}


@route("GET", "/repositories/{repository}/refs/{ref}/objects/ls")
def _list_objects(app: LakeFSEmulator, req: Request) -> Response:
    tree = app.store.list_tree(req.params["repository"], req.params["ref"])
    items = [(path, object_stats(path, entry)) for path, entry in sorted(tree.items())]
    grouped = group_by_delimiter(items, req.arg("prefix"), req.arg("delimiter"), _common_prefix_stats)
    results, pagination = paginate(grouped, req.arg("after"), req.amount())
    return json_response(200, {"pagination": pagination, "results": results})


# ----- handlers: commits -----


def _string_map(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ApiError(400, f"{name}: must be a map of strings")
    return value


@route("POST", "/repositories/{repository}/branches/{branch}/commits")
def _commit(app: LakeFSEmulator, req: Request) -> Response:
    if req.arg("source_metarange"):
        raise ApiError(501, "source_metarange is not supported by the emulator")
    body = req.json_object(("message",))
    date = body.get("date")
    if date is not None and not isinstance(date, int):
        raise ApiError(400, "date: must be an integer")
    commit = app.store.commit(
        req.params["repository"],
        req.params["branch"],
        req.user,
        body["message"],
        _string_map(body.get("metadata"), "metadata"),
        bool(body.get("allow_empty")),
        date,
    )
    return json_response(201, commit)


@route("GET", "/repositories/{repository}/commits/{commitId}")
def _get_commit(app: LakeFSEmulator, req: Request) -> Response:
    return json_response(200, app.store.get_commit(req.params["repository"], req.params["commitId"]))


def _parse_since(value: str) -> int | None:
    if not value:
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError as err:
        raise ApiError(400, "since: invalid date-time") from err


@route("GET", "/repositories/{repository}/refs/{ref}/commits")
def _log_commits(app: LakeFSEmulator, req: Request) -> Response:
    query = LogQuery(
        after=req.arg("after"),
        amount=req.amount(),
        objects=req.query.get("objects", []),
        prefixes=req.query.get("prefixes", []),
        limit=req.flag("limit"),
        first_parent=req.flag("first_parent"),
        since=_parse_since(req.arg("since")),
        stop_at=req.arg("stop_at"),
    )
    commits, has_more = app.store.log(req.params["repository"], req.params["ref"], query)
    pagination = {
        "has_more": has_more,
        "next_offset": commits[-1]["id"] if has_more and commits else "",
        "results": len(commits),
        "max_per_page": query.amount,
    }
    return json_response(200, {"pagination": pagination, "results": commits})


# ----- handlers: diff & merge -----


def _diff_response(req: Request, changes: list[tuple[str, str, dict[str, Any]]]) -> Response:
    items = [
        (path, {"type": kind, "path": path, "path_type": "object", "size_bytes": entry["size_bytes"]})
        for path, kind, entry in changes
    ]

    def prefix_entry(path: str) -> dict[str, Any]:
        return {"type": "prefix_changed", "path": path, "path_type": "common_prefix"}

    grouped = group_by_delimiter(items, req.arg("prefix"), req.arg("delimiter"), prefix_entry)
    results, pagination = paginate(grouped, req.arg("after"), req.amount())
    return json_response(200, {"pagination": pagination, "results": results})


@route("GET", "/repositories/{repository}/branches/{branch}/diff")
def _diff_branch(app: LakeFSEmulator, req: Request) -> Response:
    return _diff_response(req, app.store.diff_branch(req.params["repository"], req.params["branch"]))


@route("GET", "/repositories/{repository}/refs/{leftRef}/diff/{rightRef}")
def _diff_refs(app: LakeFSEmulator, req: Request) -> Response:
    changes = app.store.diff_refs(
        req.params["repository"], req.params["leftRef"], req.params["rightRef"], req.arg("type", "three_dot")
    )
    return _diff_response(req, changes)


@route("POST", "/repositories/{repository}/refs/{sourceRef}/merge/{destinationBranch}")
def _merge(app: LakeFSEmulator, req: Request) -> Response:
    body = req.json_object() if req.body.strip() else {}
    options = MergeOptions(
        message=body.get("message") or "",
        metadata=_string_map(body.get("metadata"), "metadata"),
        strategy=body.get("strategy") or "",
        force=bool(body.get("force")),
        allow_empty=bool(body.get("allow_empty")),
        squash_merge=bool(body.get("squash_merge")),
    )
    reference = app.store.merge(
        req.params["repository"], req.params["sourceRef"], req.params["destinationBranch"], req.user, options
    )
    return json_response(200, {"reference": reference})


@route("GET", "/repositories/{repository}/refs/{sourceRef}/merge/{destinationBranch}")
def _find_merge_base(app: LakeFSEmulator, req: Request) -> Response:
    result = app.store.merge_base(
        req.params["repository"], req.params["sourceRef"], req.params["destinationBranch"]
    )
    return json_response(200, result)


# ----- handlers: actions -----


@route("GET", "/repositories/{repository}/actions/runs")
def _list_action_runs(app: LakeFSEmulator, req: Request) -> Response:
    runs = app.store.list_runs(req.params["repository"], req.arg("branch"), req.arg("commit"))
    items = [(run["run_id"], action_run_document(run)) for run in runs]
    results, pagination = paginate(items, req.arg("after"), req.amount())
    return json_response(200, {"pagination": pagination, "results": results})


@route("GET", "/repositories/{repository}/actions/runs/{run_id}")
def _get_action_run(app: LakeFSEmulator, req: Request) -> Response:
    return json_response(200, action_run_document(app.store.get_run(req.params["repository"], req.params["run_id"])))


@route("GET", "/repositories/{repository}/actions/runs/{run_id}/hooks")
def _list_run_hooks(app: LakeFSEmulator, req: Request) -> Response:
    hooks = app.store.list_hook_runs(req.params["repository"], req.params["run_id"])
    items = [(hook["hook_run_id"], hook_run_document(hook)) for hook in hooks]
    results, pagination = paginate(items, req.arg("after"), req.amount())
    return json_response(200, {"pagination": pagination, "results": results})


@route("GET", "/repositories/{repository}/actions/runs/{run_id}/hooks/{hook_run_id}/output")
def _get_hook_output(app: LakeFSEmulator, req: Request) -> Response:
    output = app.store.hook_output(req.params["repository"], req.params["run_id"], req.params["hook_run_id"])
    return Response(200, output.encode(), "application/octet-stream")


# --------------------------------------------------------------------------------------------------
# Application and server
# --------------------------------------------------------------------------------------------------


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
