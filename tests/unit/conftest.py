"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from dagster_project.settings import EXAMPLE_TENANTS_FILE
from dagster_project.tenants import TenantsConfig, load_tenants


@pytest.fixture(scope="session")
def example_config() -> TenantsConfig:
    """The example tenants file shipped with the package, loaded once."""
    return load_tenants(EXAMPLE_TENANTS_FILE)


@pytest.fixture
def pipeline(tmp_path):
    """A batch pipeline with no services (see :mod:`tests.unit.harness`)."""
    from tests.unit.harness import harness

    with harness(tmp_path) as h:
        yield h
