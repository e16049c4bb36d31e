"""A tenant's lakeFS repository as the platform uses it, through ``lakefs-sdk`` only.

Why a wrapper: stages think in "put this frame on the batch branch" and "merge this batch into main", not in
paginated SDK calls. Keeping every lakeFS call here means a real lakeFS and the emulator are interchangeable
(a URL change), and the idempotency rules (reuse an existing branch, skip empty commits, find a batch that is
already published) live in one place.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterator
from typing import Any

import lakefs_sdk
import pandas as pd
from lakefs_sdk.exceptions import ApiException, NotFoundException

from dagster_project.layout import MAIN_BRANCH
from dagster_project.settings import Settings

PAGE_SIZE = 1000


def api_client(api_url: str, access_key_id: str, secret_access_key: str) -> lakefs_sdk.ApiClient:
    configuration = lakefs_sdk.Configuration(host=api_url, username=access_key_id, password=secret_access_key)
    return lakefs_sdk.ApiClient(configuration)


def settings_client(settings: Settings) -> lakefs_sdk.ApiClient:
    """The lakeFS client the ``TRAINYARD_LAKEFS_*`` settings describe (CLI, demo and local services)."""
    return api_client(settings.lakefs_api_url, settings.lakefs_access_key_id,
                      settings.lakefs_secret_access_key.get_secret_value())


class MergeConflict(RuntimeError):
    """lakeFS refused a merge because the same paths changed on both sides; nothing was merged."""


class LakeFSRepository:
    """One lakeFS repository (one per tenant)."""

    def __init__(self, client: lakefs_sdk.ApiClient, name: str) -> None:
        self.name = name
        self._repositories = lakefs_sdk.RepositoriesApi(client)
        self._branches = lakefs_sdk.BranchesApi(client)
        self._objects = lakefs_sdk.ObjectsApi(client)
        self._commits = lakefs_sdk.CommitsApi(client)
        self._refs = lakefs_sdk.RefsApi(client)
        self._tags = lakefs_sdk.TagsApi(client)

    # -- repository and branches -------------------------------------------------------------------------
    def ensure_exists(self, storage_namespace: str) -> None:
        try:
            self._repositories.get_repository(self.name)
        except NotFoundException:
            creation = lakefs_sdk.RepositoryCreation(
                name=self.name, storage_namespace=storage_namespace, default_branch=MAIN_BRANCH
            )
            try:
                self._repositories.create_repository(creation)
            except ApiException as exc:
                if exc.status != 409:  # created concurrently by another run: fine
                    raise

    def ensure_branch(self, branch: str, source: str = MAIN_BRANCH) -> str:
        """Create ``branch`` from ``source`` unless it exists; return its head commit id."""
        try:
            return self._branches.get_branch(self.name, branch).commit_id
        except NotFoundException:
            try:
                self._branches.create_branch(self.name, lakefs_sdk.BranchCreation(name=branch, source=source))
            except ApiException as exc:
                if exc.status != 409:
                    raise
            return self._branches.get_branch(self.name, branch).commit_id

    def delete_branch(self, branch: str) -> bool:
        """Delete a branch; False if it was already gone."""
        try:
            self._branches.delete_branch(self.name, branch)
            return True
        except NotFoundException:
            return False

    def branch_exists(self, branch: str) -> bool:
        try:
            self._branches.get_branch(self.name, branch)
            return True
        except NotFoundException:
            return False

    def branch_head(self, branch: str) -> str:
        return self._branches.get_branch(self.name, branch).commit_id

    # -- objects -----------------------------------------------------------------------------------------
    def put_bytes(self, branch: str, path: str, data: bytes) -> None:
        # The generated SDK's multipart upload takes a file *path* (it opens and reads it), so spool to disk.
        with tempfile.NamedTemporaryFile(prefix="trainyard-upload-") as spool:
            spool.write(data)
            spool.flush()
            self._objects.upload_object(self.name, branch, path, content=spool.name)

    def get_bytes(self, ref: str, path: str) -> bytes | None:
        try:
            return bytes(self._objects.get_object(self.name, ref, path))
        except NotFoundException:
            return None

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

    def list_paths(self, ref: str, prefix: str) -> list[str]:
        paths: list[str] = []
        after = ""
        while True:
            page = self._objects.list_objects(self.name, ref, prefix=prefix, after=after, amount=PAGE_SIZE)
            paths.extend(obj.path for obj in page.results)
            if not page.pagination.has_more:
                return paths
            after = page.pagination.next_offset

    def diff_paths(self, left: str, right: str) -> list[str]:
        """Paths that differ between ``left`` and ``right`` (three-dot: what merging right into left brings)."""
        paths: list[str] = []
        after = ""
        while True:
            page = self._refs.diff_refs(self.name, left, right, after=after, amount=PAGE_SIZE, type="three_dot")
            paths.extend(entry.path for entry in page.results)
            if not page.pagination.has_more:
                return paths
            after = page.pagination.next_offset

    # -- protection of main ------------------------------------------------------------------------------
    def protected_patterns(self) -> list[str]:
        return [rule.pattern for rule in self._repositories.get_branch_protection_rules(self.name)]

    def protect(self, pattern: str) -> None:
        """Forbid direct writes and commits on matching branches (merges stay possible, as in lakeFS)."""
        rules = self._repositories.get_branch_protection_rules(self.name)
        if pattern not in [rule.pattern for rule in rules]:
            rules.append(lakefs_sdk.BranchProtectionRule(pattern=pattern))
            self._repositories.set_branch_protection_rules(self.name, rules)

    def unprotect(self, pattern: str) -> None:
        rules = [r for r in self._repositories.get_branch_protection_rules(self.name) if r.pattern != pattern]
        self._repositories.set_branch_protection_rules(self.name, rules)

    # -- commits, merges, tags ---------------------------------------------------------------------------
    def has_uncommitted_changes(self, branch: str) -> bool:
        return bool(self._branches.diff_branch(self.name, branch, amount=1).results)

    def commit(self, branch: str, message: str, metadata: dict[str, str]) -> str:
        """Commit staged changes; with nothing staged, return the current head (re-runs are idempotent)."""
        if not self.has_uncommitted_changes(branch):
            return self.branch_head(branch)
        creation = lakefs_sdk.CommitCreation(message=message, metadata=metadata)
        return self._commits.commit(self.name, branch, creation).id

    def get_commit(self, ref: str) -> lakefs_sdk.Commit:
        return self._commits.get_commit(self.name, ref)

    def log(self, ref: str, amount: int = 100) -> list[lakefs_sdk.Commit]:
        return list(self._refs.log_commits(self.name, ref, amount=amount).results)

    def merge(self, source: str, destination: str, message: str, metadata: dict[str, str]) -> str:
        merge = lakefs_sdk.Merge(message=message, metadata=metadata)
        try:
            return self._refs.merge_into_branch(self.name, source, destination, merge=merge).reference
        except ApiException as exc:
            if exc.status == 409:
                raise MergeConflict(f"merging {source} into {destination} in {self.name} conflicts: "
                                    f"{exc.body or exc.reason}") from exc
            raise

    def iter_tags(self, prefix: str = "") -> Iterator[lakefs_sdk.Ref]:
        after = ""
        while True:
            page = self._tags.list_tags(self.name, prefix=prefix, after=after, amount=PAGE_SIZE)
            yield from page.results
            if not page.pagination.has_more:
                return
            after = page.pagination.next_offset

    def create_tag(self, tag: str, ref: str) -> bool:
        """Create a tag; False if the id is taken (the caller picks the next version)."""
        try:
            self._tags.create_tag(self.name, lakefs_sdk.TagCreation(id=tag, ref=ref))
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
