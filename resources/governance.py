"""Data-owner approvals as a Dagster resource (the audit table lives in the platform database)."""

from __future__ import annotations

from functools import lru_cache

import dagster as dg

from dagster_project.governance import ApprovalStore


@lru_cache(maxsize=8)
def _store(database_url: str, db_schema: str | None) -> ApprovalStore:
    """One engine (and one idempotent table creation) per process and database."""
    return ApprovalStore(database_url, schema=db_schema)


class GovernanceResource(dg.ConfigurableResource):
    """Where approvals and rejections of batches are recorded and read."""

    database_url: str
    db_schema: str | None = None

    def store(self) -> ApprovalStore:
        return _store(self.database_url, self.db_schema)
