"""Data-owner approvals as a Dagster resource: the audit table in the platform database and the retention of
rejected branches."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from dagster_project.publishing.approvals import ApprovalStore
from resources.platform_db import PlatformDatabaseResource


class ApprovalsResource(dg.ConfigurableResource):
    """Where approvals and rejections of batches are recorded and read."""

    database: PlatformDatabaseResource
    rejected_branch_retention_days: float = 30.0
    """Branches of rejected batches are kept this long for forensics, then deleted by the daily cleanup."""

    def store(self) -> ApprovalStore:
        return self.database.approvals()

    @property
    def rejected_branch_retention(self) -> timedelta:
        return timedelta(days=self.rejected_branch_retention_days)
