"""Labeling workforces behind one interface (:class:`~dagster_project.vendors.base.VendorClient`)."""

from __future__ import annotations

from pathlib import Path

from dagster_project.tenants import VendorConfig
from dagster_project.vendors.base import VendorClient
from dagster_project.vendors.simulated import SimulatedWorkforce


def build_vendor(config: VendorConfig, state_dir: Path) -> VendorClient:
    """The client for a configured vendor; new integrations register their ``kind`` here."""
    if config.kind == "simulated":
        return SimulatedWorkforce(config, state_dir)
    raise ValueError(f"vendor '{config.name}': unknown kind '{config.kind}'")
