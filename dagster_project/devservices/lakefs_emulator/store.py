"""Persistent lakeFS state: repositories, branches, tags, commits, staged objects and action runs.

Why this exists: it emulates lakeFS's graveler (refs, commits as content-addressed "meta ranges", branch
staging areas, three-way merges, branch protection) behind the API handlers.  Metadata lives in sqlite
and object bytes in content-addressed blob files under ``data_dir``, so a restart keeps everything.
Also holds the tree diff/merge helpers and lakeFS's path and tag validation rules.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import heapq
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .actions import ACTION_RUN_COLUMNS, HOOK_RUN_COLUMNS, RUN_ID_EPOCH_NS, ActionRunner, HookRecord
from .common import (
    BRANCH_RE,
    DEFAULT_AMOUNT,
    EMPTY_TREE,
    HEX_RE,
    NAMESPACE_RE,
    REF_MODIFIERS_RE,
    REPOSITORY_RE,
    ApiError,
    ResolvedRef,
    Tree,
)

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
