"""lakeFS as a Dagster resource. Only lakefs-sdk is used, so the emulator and a real lakeFS are a URL apart."""

from __future__ import annotations

import dagster as dg

from dagster_project.gatekeeper import install_gate
from dagster_project.lakefs_repo import LakeFSRepository, api_client


class LakeFSResource(dg.ConfigurableResource):
    """Connection to lakeFS; hands out one :class:`LakeFSRepository` per tenant repository."""

    url: str
    """lakeFS base URL, without ``/api/v1``."""
    access_key_id: str
    secret_access_key: str
    storage_namespace_root: str = "local://trainyard"
    gatekeeper_url: str | None = None
    """Pre-merge webhook lakeFS calls before any merge into main; None leaves repositories without the gate.
    The shared secret is configured on the lakeFS server as ``LAKEFSACTION_TRAINYARD_GATEKEEPER_SECRET``."""

    @property
    def api_url(self) -> str:
        return self.url.rstrip("/") + "/api/v1"

    def repository(self, name: str) -> LakeFSRepository:
        return LakeFSRepository(api_client(self.api_url, self.access_key_id, self.secret_access_key), name)

    def storage_namespace(self, repository: str) -> str:
        return f"{self.storage_namespace_root.rstrip('/')}/{repository}"

    def prepare_repository(self, name: str) -> LakeFSRepository:
        """The tenant repository, created if missing, with the gatekeeper installed on a protected main."""
        repo = self.repository(name)
        repo.ensure_exists(self.storage_namespace(name))
        if self.gatekeeper_url:
            install_gate(repo, self.gatekeeper_url)
        return repo
