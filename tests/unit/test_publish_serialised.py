"""Publishing one dataset is serialised: a lock in the platform database around merge-and-tag, and a re-check of
duplicates against ``main`` under it, so two batches processed at the same time never both land shared texts."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dagster_project.db import LockBusy, named_lock
from dagster_project.devservices.sample_data import build_drop
from dagster_project.publishing.publish import PublishRefused, run_publish
from dagster_project.publishing.versions import tagged_versions
from dagster_project.tenants import TenantsConfig
from tests.unit.harness import Harness


def test_a_named_lock_excludes_a_second_holder_until_released(tmp_path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'platform.db'}")
    with named_lock(engine, "trainyard-publish:northbank/support_intents"):
        with pytest.raises(LockBusy), named_lock(engine, "trainyard-publish:northbank/support_intents",
                                                 blocking=False):
            pass
        with named_lock(engine, "trainyard-publish:northbank/complaints", blocking=False):
            pass  # another dataset publishes meanwhile
    with named_lock(engine, "trainyard-publish:northbank/support_intents", blocking=False):
        pass  # released


def test_a_merge_holds_the_datasets_publish_lock(pipeline: Harness, example_config: TenantsConfig,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    tenant = example_config.tenant("northbank")
    dataset = tenant.dataset("support_intents")
    pipeline.process(tenant, dataset, build_drop(tenant, dataset, "b1", 120, seed=3), publish=False)
    batch = pipeline.batch(tenant, dataset, "b1")
    repo, seen = batch.repo, []
    real_merge = repo.merge

    def merge_while_checking_the_lock(*args, **kwargs):
        with pytest.raises(LockBusy), pipeline.store.publish_lock(tenant.name, dataset.name, blocking=False):
            pass
        seen.append("locked")
        return real_merge(*args, **kwargs)

    monkeypatch.setattr(repo, "merge", merge_while_checking_the_lock)
    assert run_publish(batch, pipeline.store).status == "published" and seen == ["locked"]


def test_two_batches_processed_together_never_both_publish_their_shared_texts(
        pipeline: Harness, example_config: TenantsConfig) -> None:
    tenant = example_config.tenant("northbank")
    dataset = tenant.dataset("support_intents")
    # Both drops are deduplicated against the same (empty) main before either is published.
    pipeline.process(tenant, dataset, build_drop(tenant, dataset, "first", 120, seed=5), publish=False)
    pipeline.process(tenant, dataset, build_drop(tenant, dataset, "resent", 120, seed=5), publish=False)
    assert run_publish(pipeline.batch(tenant, dataset, "first"), pipeline.store).status == "published"

    second = pipeline.batch(tenant, dataset, "resent")
    with pytest.raises(PublishRefused, match=r"records are now duplicates .* re-run the batch from its dedup step"):
        run_publish(second, pipeline.store)
    assert [v.batch_id for v in tagged_versions(second.repo, dataset.name)] == ["first"]
