"""Labeling workforces as a Dagster resource: builds the configured vendor clients for a dataset."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from dagster_project.tenants import DatasetConfig
from dagster_project.vendors import build_vendor
from dagster_project.vendors.base import VendorClient


class WorkforceResource(dg.ConfigurableResource):
    """Where vendor integrations keep local state (the simulated workforce's submissions)."""

    state_dir: str

    def clients(self, dataset: DatasetConfig) -> dict[str, VendorClient]:
        return {vendor.name: build_vendor(vendor, Path(self.state_dir)) for vendor in dataset.vendors}
