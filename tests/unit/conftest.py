"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from dagster_project.settings import EXAMPLE_TENANTS_FILE
from dagster_project.tenants import TenantsConfig, load_tenants


@pytest.fixture(scope="session")
def example_config() -> TenantsConfig:
    """The example tenants file shipped with the package, loaded once."""
    return load_tenants(EXAMPLE_TENANTS_FILE)
