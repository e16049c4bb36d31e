"""An in-memory lakeFS repository: the port's fake, for unit tests that need no server.

Why a fake: gates, publishing, approvals and versions are unit-tested against it, in process. It keeps lakeFS's
semantics where Trainyard's logic depends on them -- a staging area per branch over the committed tree, commits
that are no-ops when nothing is staged, three-way merges from the merge base that refuse conflicts, a dirty
destination or a merge that brings nothing, three-dot diffs, immutable tags, branch protection that blocks writes
and commits but not merges, lakeFS's name rules -- and answers with the same errors and statuses as the lakefs-sdk
adapter. Both are held to one contract suite (``tests/lakefs_port_contract.py``), the adapter against the
emulator; where they disagree, the emulator is right.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from fnmatch import fnmatchcase

from dagster_project.lakefs.port import (
    Commit,
    LakeFSError,
    MergeConflict,
    ObjectFormats,
    RefNotFound,
    Tag,
    require_string_metadata,
)
from dagster_project.layout import MAIN_BRANCH

Tree = dict[str, bytes]

# lakeFS's rules (pkg/validator, graveler/validate.go), as the emulator applies them.
REPOSITORY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")
BRANCH_RE = re.compile(r"^\w[-\w]*$", re.ASCII)
BAD_TAG_RE = re.compile(r"\.\.|//|@\{|[\^:?*\[\\\x00-\x20]|^@$|(\.|\.lock|/)$")


def _merge_trees(base: Tree, source: Tree, destination: Tree) -> Tree | str:
    """Three-way merge: each side's change is taken; the first path changed differently on both sides is returned
    instead of a tree."""
    merged: Tree = {}
    for path in sorted(set(base) | set(source) | set(destination)):
        b, s, d = base.get(path), source.get(path), destination.get(path)
        if s in (d, b):
            result = d
        elif d == b:
            result = s
        else:
            return path
        if result is not None:
            merged[path] = result
    return merged


class InMemoryRepository(ObjectFormats):
    """One repository, in this process's memory; like lakeFS, it exists once :meth:`ensure_exists` created it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._exists = False
        self._commits: dict[str, Commit] = {}
        self._trees: dict[str, Tree] = {}
        self._heads: dict[str, str] = {}
        self._work: dict[str, Tree] = {}
        """Each branch's tree as reads on the branch see it: the head commit's tree plus staged changes."""
        self._tags: dict[str, str] = {}
        self._protected: list[str] = []
        self._last_date = 0

    # -- internals ---------------------------------------------------------------------------------------
    def _refuse(self, status: int, message: str) -> LakeFSError:
        return LakeFSError(f"lakefs://{self.name}: {message}", status)

    def _require_repository(self) -> None:
        if not self._exists:
            raise RefNotFound(f"lakefs://{self.name}: repository not found")

    def _branch(self, branch: str) -> str:
        """The head commit of an existing branch."""
        self._require_repository()
        if branch not in self._heads:
            raise RefNotFound(f"lakefs://{self.name}: branch {branch!r} not found")
        return self._heads[branch]

    def _resolve(self, ref: str) -> str:
        """A branch, tag or commit id (or an unambiguous prefix of one) -> the commit id, in lakeFS's order."""
        self._require_repository()
        if ref in self._heads:
            return self._heads[ref]
        if ref in self._tags:
            return self._tags[ref]
        matches = [c for c in self._commits if c.startswith(ref)] if re.fullmatch(r"[0-9a-f]+", ref) else []
        if len(matches) == 1:
            return matches[0]
        raise RefNotFound(f"lakefs://{self.name}: ref {ref!r} not found")

    def _tree(self, ref: str) -> Tree:
        """What a read at ``ref`` sees: a branch's uncommitted changes, a tag's or commit's committed tree."""
        self._require_repository()
        return self._work[ref] if ref in self._work else self._trees[self._resolve(ref)]

    def _writable(self, branch: str) -> Tree:
        self._branch(branch)
        if any(fnmatchcase(branch, pattern) for pattern in self._protected):
            raise self._refuse(403, f"cannot write to protected branch {branch}")
        return self._work[branch]

    def _new_commit(self, parents: tuple[str, ...], tree: Tree, message: str, metadata: dict[str, str]) -> str:
        """A content-addressed commit; creation dates increase, so newest-first is by date."""
        require_string_metadata(self.name, metadata)
        self._last_date = max(int(time.time()), self._last_date + 1)
        content = [parents, sorted((p, hashlib.sha256(b).hexdigest()) for p, b in tree.items()), message,
                   sorted(metadata.items()), self._last_date]
        commit = Commit(hashlib.sha256(json.dumps(content).encode()).hexdigest(), parents, message, dict(metadata),
                        self._last_date)
        self._commits[commit.id], self._trees[commit.id] = commit, dict(tree)
        return commit.id

    def _ancestors(self, commit_id: str) -> set[str]:
        seen, pending = set(), [commit_id]
        while pending:
            current = pending.pop()
            if current not in seen:
                seen.add(current)
                pending.extend(self._commits[current].parents)
        return seen

    def _merge_base_tree(self, a: str, b: str) -> Tree:
        """The tree of the nearest common ancestor (the newest one: no other common ancestor descends from it)."""
        common = self._ancestors(a) & self._ancestors(b)
        base = max(common, key=lambda c: self._commits[c].creation_date, default=None)
        return self._trees[base] if base else {}

    # -- repository and branches -------------------------------------------------------------------------
    def ensure_exists(self, storage_namespace: str) -> None:
        if self._exists:
            return
        if not REPOSITORY_RE.match(self.name):
            raise self._refuse(400, "repository: invalid value: validation error")
        self._exists = True
        self._heads[MAIN_BRANCH] = self._new_commit((), {}, "Repository created", {})
        self._work[MAIN_BRANCH] = {}

    def ensure_branch(self, branch: str, source: str = MAIN_BRANCH) -> str:
        self._require_repository()
        if branch not in self._heads:
            if not BRANCH_RE.match(branch):
                raise self._refuse(400, f"branch id: invalid branch ID: {branch!r}")
            head = self._resolve(source)
            self._heads[branch], self._work[branch] = head, dict(self._trees[head])
        return self._heads[branch]

    def delete_branch(self, branch: str) -> bool:
        if not self.branch_exists(branch):
            return False
        if branch == MAIN_BRANCH:
            raise self._refuse(403, "cannot delete repository default branch")
        if any(fnmatchcase(branch, pattern) for pattern in self._protected):
            raise self._refuse(403, f"cannot delete protected branch {branch}")
        del self._heads[branch], self._work[branch]
        return True

    def branch_exists(self, branch: str) -> bool:
        return self._exists and branch in self._heads

    def branch_head(self, branch: str) -> str:
        return self._branch(branch)

    # -- objects -----------------------------------------------------------------------------------------
    def put_bytes(self, branch: str, path: str, data: bytes) -> None:
        tree = self._writable(branch)
        if not path:
            raise self._refuse(400, "path: required value")
        tree[path] = bytes(data)

    def get_bytes(self, ref: str, path: str) -> bytes | None:
        try:
            return self._tree(ref).get(path)
        except RefNotFound:
            return None

    def delete_paths(self, branch: str, paths: list[str]) -> None:
        tree = self._writable(branch)
        for path in paths:
            tree.pop(path, None)

    def list_paths(self, ref: str, prefix: str) -> list[str]:
        return sorted(p for p in self._tree(ref) if p.startswith(prefix))

    def diff_paths(self, left: str, right: str) -> list[str]:
        left_id, right_id = self._resolve(left), self._resolve(right)
        before, after = self._merge_base_tree(left_id, right_id), self._trees[right_id]
        return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))

    # -- protection of main ------------------------------------------------------------------------------
    def protected_patterns(self) -> list[str]:
        self._require_repository()
        return list(self._protected)

    def protect(self, pattern: str) -> None:
        if pattern not in self.protected_patterns():
            self._protected.append(pattern)

    def unprotect(self, pattern: str) -> None:
        self._protected = [p for p in self.protected_patterns() if p != pattern]

    # -- commits, merges, tags ---------------------------------------------------------------------------
    def has_uncommitted_changes(self, branch: str) -> bool:
        head = self._branch(branch)
        return self._work[branch] != self._trees[head]

    def commit(self, branch: str, message: str, metadata: dict[str, str]) -> str:
        if not self.has_uncommitted_changes(branch):
            return self._heads[branch]
        tree = self._writable(branch)
        if not message:
            raise self._refuse(400, "message: required value")
        self._heads[branch] = self._new_commit((self._heads[branch],), tree, message, metadata)
        return self._heads[branch]

    def get_commit(self, ref: str) -> Commit:
        return self._commits[self._resolve(ref)]

    def log(self, ref: str, amount: int = 100) -> list[Commit]:
        reachable = (self._commits[c] for c in self._ancestors(self._resolve(ref)))
        return sorted(reachable, key=lambda c: c.creation_date, reverse=True)[:amount]

    def merge(self, source: str, destination: str, message: str, metadata: dict[str, str]) -> str:
        head, source_id = self._branch(destination), self._resolve(source)
        if self.has_uncommitted_changes(destination):
            raise self._refuse(400, f"merging {source} into {destination}: uncommitted changes (dirty branch)")
        merged = _merge_trees(self._merge_base_tree(source_id, head), self._trees[source_id], self._trees[head])
        if isinstance(merged, str):
            raise MergeConflict(f"merging {source} into {destination} in {self.name} conflicts: {merged}")
        if merged == self._trees[head]:
            raise self._refuse(400, f"merging {source} into {destination}: no changes")
        message = message or f"Merge '{source}' into '{destination}'"
        self._heads[destination] = self._new_commit((head, source_id), merged, message, metadata)
        self._work[destination] = dict(merged)
        return self._heads[destination]

    def iter_tags(self, prefix: str = "") -> Iterator[Tag]:
        self._require_repository()
        return iter([Tag(tag, self._tags[tag]) for tag in sorted(self._tags) if tag.startswith(prefix)])

    def create_tag(self, tag: str, ref: str) -> bool:
        self._require_repository()
        if not tag or BAD_TAG_RE.search(tag):
            raise self._refuse(400, f"tag id: invalid tag ID: {tag!r}")
        if tag in self._tags:
            return False
        self._tags[tag] = self._resolve(ref)
        return True
