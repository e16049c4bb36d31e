"""The lakeFS operations Trainyard uses, as a typed port, with its own value types and errors.

Why a port: gates, publishing, approvals and versions only need a handful of lakeFS operations (branch heads,
objects and frames, commits with metadata, three-dot diffs, merges, tags, protection). Written against this
``Protocol`` they run unchanged on a real lakeFS or the emulator through the lakefs-sdk adapter
(:class:`~dagster_project.lakefs.sdk.LakeFSRepository`) and, in unit tests, on the in-memory fake
(:class:`~dagster_project.lakefs.memory.InMemoryRepository`), as in Dagster's interface-resource pattern (a real
and a fake implementation behind one interface). Callers never see lakefs-sdk models or exceptions.

The frame and JSON helpers are written once here (:class:`ObjectFormats`), on top of the two byte operations
each implementation provides.
"""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from dagster_project.layout import MAIN_BRANCH


@dataclass(frozen=True)
class Commit:
    """A lakeFS commit, as the platform reads it (the attribute names of lakefs-sdk's ``Commit``)."""

    id: str
    parents: tuple[str, ...]
    message: str
    metadata: dict[str, str] = field(default_factory=dict, hash=False)
    creation_date: int = 0
    """Seconds since the epoch, as lakeFS reports it."""


@dataclass(frozen=True)
class Tag:
    """A tag: an immutable name for a commit (Trainyard's dataset versions)."""

    id: str
    commit_id: str


class LakeFSError(RuntimeError):
    """lakeFS refused an operation; ``status`` is the HTTP status lakeFS answers with (400, 403, 409, ...)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class RefNotFound(LakeFSError, LookupError):
    """The repository, branch, tag or commit does not exist."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 404)


class MergeConflict(LakeFSError):
    """lakeFS refused a merge because the same paths changed on both sides; nothing was merged."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 409)


def require_string_metadata(repository: str, metadata: dict[str, str]) -> None:
    """lakeFS commit metadata maps strings to strings; anything else is refused before it reaches the server."""
    wrong = {k: v for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)}
    if wrong:
        raise LakeFSError(f"lakefs://{repository}: metadata maps strings to strings; not strings: {wrong!r}", 400)


@runtime_checkable
class LakeFSPort(Protocol):
    """One lakeFS repository (one per tenant), as the platform uses it.

    Errors: :class:`RefNotFound` when the repository, branch, tag or commit named does not exist (except
    ``get_bytes``, which answers None, and ``branch_exists``/``delete_branch``, which answer False);
    :class:`LakeFSError` with lakeFS's status when it refuses: 400 for an invalid name, a merge into a branch with
    uncommitted changes or a merge that brings no changes, 403 for a write or commit on a protected branch or
    deleting the default or a protected branch; :class:`MergeConflict` (409) when both sides changed a path.
    """

    name: str

    # -- repository and branches
    def ensure_exists(self, storage_namespace: str) -> None:
        """Create the repository (its ``main`` holds one empty commit) unless it exists."""
    def ensure_branch(self, branch: str, source: str = MAIN_BRANCH) -> str:
        """Create ``branch`` at ``source``'s head commit unless it exists; return the branch's head commit id."""
    def delete_branch(self, branch: str) -> bool:
        """Delete a branch and its uncommitted changes; False if it was already gone."""
    def branch_exists(self, branch: str) -> bool: ...
    def branch_head(self, branch: str) -> str:
        """The branch's head commit id."""

    # -- objects (``ref``: a branch reads its uncommitted changes; a tag or commit id reads the committed tree)
    def put_bytes(self, branch: str, path: str, data: bytes) -> None:
        """Stage an object on ``branch`` (committed by :meth:`commit`)."""
    def get_bytes(self, ref: str, path: str) -> bytes | None:
        """The object at ``ref``, or None if there is none (or no such ref)."""
    def delete_paths(self, branch: str, paths: list[str]) -> None:
        """Stage the removal of ``paths`` on ``branch`` (a path that is not there is no error)."""
    def put_frame(self, branch: str, path: str, frame: pd.DataFrame) -> None: ...
    def get_frame(self, ref: str, path: str) -> pd.DataFrame | None: ...
    def require_frame(self, ref: str, path: str) -> pd.DataFrame:
        """The frame at ``ref``; FileNotFoundError if there is none."""
    def put_json(self, branch: str, path: str, value: Any) -> None: ...
    def get_json(self, ref: str, path: str) -> Any | None: ...
    def list_paths(self, ref: str, prefix: str) -> list[str]:
        """Every object path starting with ``prefix`` at ``ref``, sorted."""
    def diff_paths(self, left: str, right: str) -> list[str]:
        """Paths that differ between ``left`` and ``right``, sorted (three-dot, committed state: what merging
        right into left brings)."""

    # -- protection of main
    def protected_patterns(self) -> list[str]: ...
    def protect(self, pattern: str) -> None:
        """Forbid direct writes and commits on matching branches (merges stay possible, as in lakeFS)."""
    def unprotect(self, pattern: str) -> None: ...

    # -- commits, merges, tags
    def has_uncommitted_changes(self, branch: str) -> bool:
        """Whether the branch differs from its head commit (rewriting identical bytes is no change)."""
    def commit(self, branch: str, message: str, metadata: dict[str, str]) -> str:
        """Commit staged changes; with nothing staged, return the current head (re-runs are idempotent)."""
    def get_commit(self, ref: str) -> Commit:
        """The commit a branch, tag or commit id points at."""
    def log(self, ref: str, amount: int = 100) -> list[Commit]:
        """At most ``amount`` commits reachable from ``ref`` (both parents of merges), newest first."""
    def merge(self, source: str, destination: str, message: str, metadata: dict[str, str]) -> str:
        """Three-way merge of ``source``'s head commit into the branch ``destination``; return the merge commit
        id, whose parents are (destination head, source head) and which carries ``metadata``."""
    def iter_tags(self, prefix: str = "") -> Iterator[Tag]:
        """Tags whose id starts with ``prefix``, sorted by id."""
    def create_tag(self, tag: str, ref: str) -> bool:
        """Tag the commit ``ref`` points at; False if the id is taken (tags never move; the caller picks the next
        version)."""


class ObjectFormats(ABC):
    """Frames (Parquet) and JSON on top of :meth:`put_bytes` and :meth:`get_bytes`, written once for every
    implementation of the port."""

    name: str

    @abstractmethod
    def put_bytes(self, branch: str, path: str, data: bytes) -> None: ...

    @abstractmethod
    def get_bytes(self, ref: str, path: str) -> bytes | None: ...

    def put_frame(self, branch: str, path: str, frame: pd.DataFrame) -> None:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        self.put_bytes(branch, path, buffer.getvalue())

    def get_frame(self, ref: str, path: str) -> pd.DataFrame | None:
        data = self.get_bytes(ref, path)
        return None if data is None else pd.read_parquet(io.BytesIO(data))

    def require_frame(self, ref: str, path: str) -> pd.DataFrame:
        frame = self.get_frame(ref, path)
        if frame is None:
            raise FileNotFoundError(f"lakefs://{self.name}/{ref}/{path} does not exist; run the upstream stage first")
        return frame

    def put_json(self, branch: str, path: str, value: Any) -> None:
        self.put_bytes(branch, path, json.dumps(value, indent=2, sort_keys=True, default=str).encode("utf-8"))

    def get_json(self, ref: str, path: str) -> Any | None:
        data = self.get_bytes(ref, path)
        return None if data is None else json.loads(data)
