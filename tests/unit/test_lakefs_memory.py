"""The lakeFS port's contract (:mod:`tests.lakefs_port_contract`) on the in-memory fake: no server, no network."""

from __future__ import annotations

import pytest

from dagster_project.lakefs import InMemoryRepository
from tests.lakefs_port_contract import LakeFSPortContract, MakeRepo


class TestInMemoryRepository(LakeFSPortContract):
    @pytest.fixture
    def make_repo(self) -> MakeRepo:
        return InMemoryRepository
