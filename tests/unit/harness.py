"""A whole batch pipeline with no services: the in-memory lakeFS fake, S3 faked in process by moto, the simulated
workforce and an SQLite approvals database in a temporary folder.

Unit tests of gates, publishing, approvals and versions run real stage and gate functions through it, so they
exercise the same code Dagster calls without a network, a server or a subprocess.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from dagster_project.batch_runner import BatchRun, run_batch
from dagster_project.devservices.sample_data import DropPlan, ensure_bucket, upload_drop, upload_gold_set
from dagster_project.lakefs import InMemoryRepository
from dagster_project.publishing.approvals import ApprovalStore
from dagster_project.stages.batch import Batch
from dagster_project.stages.runners import StageInputs
from dagster_project.tenants import DatasetConfig, TenantConfig
from dagster_project.vendors import build_vendor

BUCKET = "unit-landing"


@dataclass
class Harness:
    s3: Any
    home: Path
    repos: dict[str, InMemoryRepository] = field(default_factory=dict)
    _store: ApprovalStore | None = None

    def repo(self, name: str) -> InMemoryRepository:
        if name not in self.repos:
            self.repos[name] = InMemoryRepository(name)
        return self.repos[name]

    @property
    def store(self) -> ApprovalStore:
        if self._store is None:
            self._store = ApprovalStore(f"sqlite:///{self.home / 'platform.db'}")
        return self._store

    def batch(self, tenant: TenantConfig, dataset: DatasetConfig, batch_id: str, run_id: str = "unit-run") -> Batch:
        return Batch(tenant, dataset, batch_id, self.repo(tenant.lakefs_repository), run_id)

    def inputs(self, tenant: TenantConfig, dataset: DatasetConfig) -> StageInputs:
        vendors = {v.name: build_vendor(v, self.home / "vendors") for v in dataset.vendors}
        return StageInputs(s3=self.s3, landing_bucket=BUCKET, storage_namespace=f"local://unit/{tenant.name}",
                           vendors=vendors)

    def process(self, tenant: TenantConfig, dataset: DatasetConfig, plan: DropPlan, publish: bool = True,
                with_store: bool = True, gold_set: bool = True) -> BatchRun:
        """Upload the drop (and the dataset's gold set) and run every stage and gate, then publish."""
        upload_drop(self.s3, BUCKET, plan)
        if gold_set:
            upload_gold_set(self.s3, BUCKET, tenant, dataset)
        batch = self.batch(tenant, dataset, plan.drop_prefix.rstrip("/").rsplit("/", 1)[1])
        return run_batch(batch, self.inputs(tenant, dataset), publish, self.store if with_store else None)


@contextmanager
def harness(home: Path) -> Iterator[Harness]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        ensure_bucket(s3, BUCKET)
        h = Harness(s3, home)
        try:
            yield h
        finally:
            if h._store is not None:
                h._store.dispose()
