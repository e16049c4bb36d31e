"""lakeFS as a Dagster resource. Only lakefs-sdk is used, so the emulator and a real lakeFS are a URL apart."""

from __future__ import annotations

from functools import lru_cache

import dagster as dg
import lakefs_sdk

from dagster_project.lakefs import LakeFSRepository, api_client
from dagster_project.publishing.gatekeeper import install_gate


@lru_cache(maxsize=8)
def _client(api_url: str, access_key_id: str, secret_access_key: str) -> lakefs_sdk.ApiClient:
    """One SDK client (and its connection pool) per process and server, not one per repository handle."""
    return api_client(api_url, access_key_id, secret_access_key)


class LakeFSResource(dg.ConfigurableResource):
    """Connection to lakeFS; hands out one :class:`~dagster_project.lakefs.LakeFSRepository` per tenant."""

    url: str
    """lakeFS base URL, without ``/api/v1``."""
    access_key_id: str
    secret_access_key: str
    """Pass it as ``dg.EnvVar("TRAINYARD_LAKEFS_SECRET_ACCESS_KEY")``."""
    storage_namespace_root: str = "local://trainyard"
    gatekeeper_url: str | None = None
    """Pre-merge webhook lakeFS calls before any merge into main; None leaves repositories without the gate.
    The shared secret is configured on the lakeFS server as ``LAKEFSACTION_TRAINYARD_GATEKEEPER_SECRET``."""

    @property
    def api_url(self) -> str:
        return self.url.rstrip("/") + "/api/v1"

    def repository(self, name: str) -> LakeFSRepository:
        return LakeFSRepository(_client(self.api_url, self.access_key_id, self.secret_access_key), name)

    def storage_namespace(self, repository: str) -> str:
        return f"{self.storage_namespace_root.rstrip('/')}/{repository}"

    def prepare_repository(self, name: str) -> LakeFSRepository:
        """The tenant repository, created if missing, with the gatekeeper installed on a protected main."""
        repo = self.repository(name)
        repo.ensure_exists(self.storage_namespace(name))
        if self.gatekeeper_url:
            install_gate(repo, self.gatekeeper_url)
        return repo
