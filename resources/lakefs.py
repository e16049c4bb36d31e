"""lakeFS as a Dagster resource: an interface with a real and an in-memory implementation.

Why an interface (the pattern of Dagster's ``project_fully_featured`` HN resource): assets only ever ask for a
tenant's repository through the :class:`~dagster_project.lakefs.LakeFSPort` protocol, so the same code location
runs on a lakeFS server (:class:`LakeFSServerResource`, lakefs-sdk over HTTP: the emulator or a real lakeFS are a
URL apart) or, in unit tests of the assets themselves, on the in-process fake (:class:`InMemoryLakeFSResource`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import lru_cache
from typing import TYPE_CHECKING

import dagster as dg

from dagster_project.lakefs import InMemoryRepository, LakeFSPort
from dagster_project.publishing.gatekeeper import install_gate

if TYPE_CHECKING:  # lakefs-sdk is imported when a repository is first asked for, not when the code location loads
    import lakefs_sdk

    from dagster_project.lakefs import LakeFSRepository


class LakeFSResource(dg.ConfigurableResource, ABC):
    """Hands out one repository handle per tenant; what assets annotate their ``lakefs`` parameter with."""

    storage_namespace_root: str = "local://trainyard"
    gatekeeper_url: str | None = None
    """Pre-merge webhook lakeFS calls before any merge into main; None leaves repositories without the gate.
    The shared secret is configured on the lakeFS server as ``LAKEFSACTION_TRAINYARD_GATEKEEPER_SECRET``."""

    @abstractmethod
    def repository(self, name: str) -> LakeFSPort:
        """The tenant repository ``name`` (it may not exist yet: see :meth:`prepare_repository`)."""

    @property
    def web_url(self) -> str | None:
        """The lakeFS web UI, for links in asset metadata (None: no UI to link to)."""
        return None

    def storage_namespace(self, repository: str) -> str:
        return f"{self.storage_namespace_root.rstrip('/')}/{repository}"

    def prepare_repository(self, name: str) -> LakeFSPort:
        """The tenant repository, created if missing, with the gatekeeper installed on a protected main."""
        repo = self.repository(name)
        repo.ensure_exists(self.storage_namespace(name))
        if self.gatekeeper_url:
            install_gate(repo, self.gatekeeper_url)
        return repo


@lru_cache(maxsize=8)
def _client(api_url: str, access_key_id: str, secret_access_key: str) -> lakefs_sdk.ApiClient:
    """One SDK client (and its connection pool) per process and server, not one per repository handle."""
    from dagster_project.lakefs import api_client

    return api_client(api_url, access_key_id, secret_access_key)


class LakeFSServerResource(LakeFSResource):
    """A lakeFS server (or the emulator), through lakefs-sdk only."""

    url: str
    """lakeFS base URL, without ``/api/v1``."""
    access_key_id: str
    secret_access_key: str
    """Pass it as ``dg.EnvVar("TRAINYARD_LAKEFS_SECRET_ACCESS_KEY")``."""

    ui_url: str | None = None
    """lakeFS web UI base URL (normally ``url``); empty for a server without a UI, such as the emulator."""

    @property
    def web_url(self) -> str | None:
        return self.ui_url or None

    @property
    def api_url(self) -> str:
        return self.url.rstrip("/") + "/api/v1"

    def repository(self, name: str) -> LakeFSRepository:
        from dagster_project.lakefs import LakeFSRepository

        return LakeFSRepository(_client(self.api_url, self.access_key_id, self.secret_access_key), name)


_MEMORY: dict[tuple[str, str], InMemoryRepository] = {}


class InMemoryLakeFSResource(LakeFSResource):
    """Repositories in this process's memory, for unit tests of assets, sensors and jobs (no server).

    Resources are re-created for every run and sensor tick, so the repositories live in a process-wide registry
    keyed by ``namespace``: give each test its own namespace and every resource instance of that test shares them.
    """

    namespace: str

    def repository(self, name: str) -> InMemoryRepository:
        return _MEMORY.setdefault((self.namespace, name), InMemoryRepository(name))
