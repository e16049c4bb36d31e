"""The lakeFS port's contract (:mod:`tests.lakefs_port_contract`) on the lakefs-sdk adapter against the emulator.

Listings ask for two entries a page, so every ``list_paths``, ``diff_paths`` and ``iter_tags`` in the suite pages.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dagster_project.devservices.lakefs_emulator import RunningEmulator
from dagster_project.lakefs import LakeFSRepository, api_client
from tests.conftest import LAKEFS_KEY, LAKEFS_SECRET
from tests.lakefs_port_contract import LakeFSPortContract, MakeRepo

PAGE_SIZE = 2


class TestLakeFSRepositoryOnTheEmulator(LakeFSPortContract):
    @pytest.fixture
    def make_repo(self, lakefs_server: RunningEmulator) -> Iterator[MakeRepo]:
        with api_client(lakefs_server.api_url, LAKEFS_KEY, LAKEFS_SECRET) as client:
            yield lambda name: LakeFSRepository(client, name, page_size=PAGE_SIZE)
