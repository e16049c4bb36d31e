"""A tenant's lakeFS repository as the platform uses it, through ``lakefs-sdk`` only: the port's adapter.

Why a wrapper: stages think in "put this frame on the batch branch" and "merge this batch into main", not in
paginated SDK calls. Keeping every lakeFS call here means a real lakeFS and the emulator are interchangeable
(a URL change), and the idempotency rules (reuse an existing branch, skip empty commits) live in one place.
lakefs-sdk's models and exceptions are turned into the port's (:mod:`dagster_project.lakefs.port`) here, so
nothing above depends on the generated client.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import lakefs_sdk
import urllib3
from lakefs_sdk.exceptions import ApiException, NotFoundException

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
from dagster_project.settings import Settings

PAGE_SIZE = 1000
DELETE_BATCH = 1000
REQUEST_TIMEOUT = (10.0, 120.0)
"""Seconds to connect and to wait for response bytes. lakefs-sdk waits forever by default, so one stalled lakeFS
response would hang a batch step (and its run) with no error; now it fails the step, which is then loud."""
RETRIES = urllib3.Retry(total=8, connect=5, read=2, status=3, other=0, backoff_factor=0.5,
                        status_forcelist=(502, 503, 504), allowed_methods=urllib3.Retry.DEFAULT_ALLOWED_METHODS,
                        raise_on_status=False)
"""A refused connection never reached lakeFS and is retried for every method; a lost or failed response only for
idempotent methods (GET, PUT, DELETE), so a commit or merge whose outcome is unknown is never sent twice here --
the step fails, and its re-execution finds what the first attempt did (stages are idempotent). Any other error
(TLS, a broken proxy) is never retried: it may have reached lakeFS, and it would not heal by itself."""


def api_client(api_url: str, access_key_id: str, secret_access_key: str) -> lakefs_sdk.ApiClient:
    """The one place a lakefs-sdk client is built (``api_url`` ends in ``/api/v1``)."""
    configuration = lakefs_sdk.Configuration(host=api_url, username=access_key_id, password=secret_access_key)
    configuration.retries = RETRIES
    return lakefs_sdk.ApiClient(configuration)


def settings_client(settings: Settings) -> lakefs_sdk.ApiClient:
    """The lakeFS client the ``TRAINYARD_LAKEFS_*`` settings describe (CLI, demo and local services)."""
    return api_client(settings.lakefs_api_url, settings.lakefs_access_key_id,
                      settings.lakefs_secret_access_key.get_secret_value())


class _PortErrors:
    """A lakefs-sdk API object whose calls raise the port's errors: the one place SDK exceptions are translated."""

    def __init__(self, api: Any, repository: str) -> None:
        self._api = api
        self._repository = repository

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        method = getattr(self._api, operation)

        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
            try:
                return method(*args, **kwargs)
            except NotFoundException as exc:
                raise RefNotFound(f"lakefs://{self._repository}: {operation}: {exc.body or exc.reason}") from exc
            except ApiException as exc:
                raise LakeFSError(f"lakefs://{self._repository}: {operation}: {exc.status} {exc.body or exc.reason}",
                                  exc.status or 0) from exc

        return call


class _OctetUpload:
    """uploadObject with an ``application/octet-stream`` body, which the lakeFS API accepts beside multipart.

    Why: the generated ``ObjectsApi.upload_object`` only sends multipart, read from a file *path* -- every part
    of a batch would be spooled to local disk, read back and copied into a multipart body. This sends the bytes
    as they are, through the same client (auth, retries, timeouts) and the same error translation."""

    def __init__(self, client: lakefs_sdk.ApiClient) -> None:
        self.api_client = client

    def upload_object(self, repository: str, branch: str, path: str, data: bytes,
                      _request_timeout: Any = None) -> lakefs_sdk.ObjectStats:
        return self.api_client.call_api(
            "/repositories/{repository}/branches/{branch}/objects", "POST",
            {"repository": repository, "branch": branch}, [("path", path)],
            {"Content-Type": "application/octet-stream", "Accept": "application/json"}, body=data,
            response_types_map={"201": "ObjectStats"},
            auth_settings=["basic_auth", "cookie_auth", "oidc_auth", "saml_auth", "jwt_token"],
            _return_http_data_only=True, _request_timeout=_request_timeout)


def _paged(fetch: Callable[[str], Any]) -> Iterator[Any]:
    """Every result of a paginated lakeFS listing; ``fetch(after)`` returns one page."""
    after = ""
    while True:
        page = fetch(after)
        yield from page.results
        if not page.pagination.has_more:
            return
        after = page.pagination.next_offset


def _found(call: Callable[[], object]) -> bool:
    """Whether ``call`` succeeded; False when what it names does not exist."""
    try:
        call()
        return True
    except RefNotFound:
        return False


def _commit(model: lakefs_sdk.Commit) -> Commit:
    return Commit(id=model.id, parents=tuple(model.parents or ()), message=model.message or "",
                  metadata=dict(model.metadata or {}), creation_date=int(model.creation_date or 0))


class LakeFSRepository(ObjectFormats):
    """One lakeFS repository (one per tenant).

    ``page_size`` is how many entries one listing request asks for (lakeFS allows up to 1000); the contract tests
    make it small so paging is exercised.
    """

    def __init__(self, client: lakefs_sdk.ApiClient, name: str, page_size: int = PAGE_SIZE) -> None:
        self.name = name
        self.page_size = page_size
        self._repositories = _PortErrors(lakefs_sdk.RepositoriesApi(client), name)
        self._branches = _PortErrors(lakefs_sdk.BranchesApi(client), name)
        self._objects = _PortErrors(lakefs_sdk.ObjectsApi(client), name)
        self._uploads = _PortErrors(_OctetUpload(client), name)
        self._commits = _PortErrors(lakefs_sdk.CommitsApi(client), name)
        self._refs = _PortErrors(lakefs_sdk.RefsApi(client), name)
        self._tags = _PortErrors(lakefs_sdk.TagsApi(client), name)

    # -- repository and branches -------------------------------------------------------------------------
    def ensure_exists(self, storage_namespace: str) -> None:
        try:
            self._repositories.get_repository(self.name)
        except RefNotFound:
            creation = lakefs_sdk.RepositoryCreation(
                name=self.name, storage_namespace=storage_namespace, default_branch=MAIN_BRANCH
            )
            try:
                self._repositories.create_repository(creation)
            except LakeFSError as exc:
                if exc.status != 409:  # created concurrently by another run: fine
                    raise

    def ensure_branch(self, branch: str, source: str = MAIN_BRANCH) -> str:
        """Create ``branch`` from ``source`` unless it exists; return its head commit id."""
        try:
            return self._branches.get_branch(self.name, branch).commit_id
        except RefNotFound:
            try:
                self._branches.create_branch(self.name, lakefs_sdk.BranchCreation(name=branch, source=source))
            except LakeFSError as exc:
                if exc.status != 409:
                    raise
            return self._branches.get_branch(self.name, branch).commit_id

    def delete_branch(self, branch: str) -> bool:
        """Delete a branch; False if it was already gone."""
        return _found(lambda: self._branches.delete_branch(self.name, branch))

    def branch_exists(self, branch: str) -> bool:
        return _found(lambda: self._branches.get_branch(self.name, branch))

    def branch_head(self, branch: str) -> str:
        return self._branches.get_branch(self.name, branch).commit_id

    # -- objects -----------------------------------------------------------------------------------------
    def put_bytes(self, branch: str, path: str, data: bytes) -> None:
        self._uploads.upload_object(self.name, branch, path, data)

    def get_bytes(self, ref: str, path: str) -> bytes | None:
        try:
            return bytes(self._objects.get_object(self.name, ref, path))
        except RefNotFound:
            return None

    def delete_paths(self, branch: str, paths: list[str]) -> None:
        for start in range(0, len(paths), DELETE_BATCH):  # lakeFS takes at most 1000 paths per request
            errors = self._objects.delete_objects(self.name, branch,
                                                  lakefs_sdk.PathList(paths=paths[start:start + DELETE_BATCH]))
            if errors.errors:
                first = errors.errors[0]
                raise LakeFSError(f"deleting {first.path} from {self.name}/{branch} failed: {first.message}")

    def list_paths(self, ref: str, prefix: str) -> list[str]:
        return [obj.path for obj in _paged(lambda after: self._objects.list_objects(
            self.name, ref, prefix=prefix, after=after, amount=self.page_size))]

    def diff_paths(self, left: str, right: str) -> list[str]:
        """Paths that differ between ``left`` and ``right`` (three-dot: what merging right into left brings)."""
        return [entry.path for entry in _paged(lambda after: self._refs.diff_refs(
            self.name, left, right, after=after, amount=self.page_size, type="three_dot"))]

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
        require_string_metadata(self.name, metadata)
        creation = lakefs_sdk.CommitCreation(message=message, metadata=metadata)
        return self._commits.commit(self.name, branch, creation).id

    def get_commit(self, ref: str) -> Commit:
        return _commit(self._commits.get_commit(self.name, ref))

    def log(self, ref: str, amount: int = 100) -> list[Commit]:
        commits: list[Commit] = []  # lakeFS pages the log too (at most 1000 per request)
        for commit in _paged(lambda after: self._refs.log_commits(self.name, ref, after=after,
                                                                  amount=min(amount, self.page_size))):
            commits.append(_commit(commit))
            if len(commits) == amount:
                break
        return commits

    def merge(self, source: str, destination: str, message: str, metadata: dict[str, str]) -> str:
        require_string_metadata(self.name, metadata)
        merge = lakefs_sdk.Merge(message=message, metadata=metadata)
        try:
            return self._refs.merge_into_branch(self.name, source, destination, merge=merge).reference
        except LakeFSError as exc:
            if exc.status == 409:
                raise MergeConflict(f"merging {source} into {destination} in {self.name} conflicts: {exc}") from exc
            raise

    def iter_tags(self, prefix: str = "") -> Iterator[Tag]:
        return iter([Tag(tag.id, tag.commit_id) for tag in _paged(lambda after: self._tags.list_tags(
            self.name, prefix=prefix, after=after, amount=self.page_size))])

    def create_tag(self, tag: str, ref: str) -> bool:
        """Create a tag; False if the id is taken (the caller picks the next version)."""
        try:
            self._tags.create_tag(self.name, lakefs_sdk.TagCreation(id=tag, ref=ref))
            return True
        except LakeFSError as exc:
            if exc.status == 409:
                return False
            raise
