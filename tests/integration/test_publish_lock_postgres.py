"""The publish lock on PostgreSQL: a session advisory lock, exclusive across connections, released on exit."""

from __future__ import annotations

import pytest

from dagster_project.db import LockBusy, make_engine, named_lock
from tests.conftest import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER


def test_the_advisory_lock_excludes_other_connections_until_released(postgres_database: str) -> None:
    engine = make_engine(f"postgresql+psycopg2://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{postgres_database}")
    other = make_engine(f"postgresql+psycopg2://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{postgres_database}")
    try:
        with named_lock(engine, "trainyard-publish:northbank/support_intents"):
            with pytest.raises(LockBusy), named_lock(other, "trainyard-publish:northbank/support_intents",
                                                     blocking=False):
                pass
            with named_lock(other, "trainyard-publish:northbank/complaints", blocking=False):
                pass
        with named_lock(other, "trainyard-publish:northbank/support_intents", blocking=False):
            pass
    finally:
        engine.dispose()
        other.dispose()
