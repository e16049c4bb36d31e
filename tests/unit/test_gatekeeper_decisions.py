"""The gatekeeper's decision on a lakeFS ``pre-merge`` event, without a server: each reason it refuses a merge into
``main``, and the two ways it allows one (every gate passed on an ``auto`` dataset; enough data-owner approvals of
the exact candidate commit on an ``owner`` dataset).

Events are built as lakeFS sends them; the repository is the in-memory fake and candidates are recorded by the real
publishing code (:mod:`tests.unit.harness`). The HTTP service and the webhook round trip are integration tests.
"""

from __future__ import annotations

import json

import pytest

from dagster_project import layout
from dagster_project.devservices.sample_data import build_drop
from dagster_project.publishing import publish
from dagster_project.publishing.approvals import Verdict
from dagster_project.publishing.decisions import decide
from dagster_project.publishing.gatekeeper import MergeDecision, evaluate_merge
from dagster_project.publishing.publish import run_publish
from dagster_project.tenants import TenantsConfig
from tests.unit.harness import Harness

N = 160
EXTRA = "datasets/support_intents/extra.txt"


def pre_merge(repository: str, source_ref: str, branch: str = layout.MAIN_BRANCH) -> dict[str, str]:
    return {"event_type": "pre-merge", "repository_id": repository, "branch_id": branch, "source_ref": source_ref}


def commit_on_top(batch, path: str, body: bytes, message: str, metadata: dict[str, str] | None = None) -> str:
    """Someone writes ``path`` on the batch branch and commits it (with ``metadata``, e.g. copied or forged)."""
    batch.repo.put_bytes(batch.branch, path, body)
    return batch.repo.commit(batch.branch, message, metadata or {})


def decision(pipeline: Harness, config: TenantsConfig, repository: str, source_ref: str, **event) -> MergeDecision:
    return evaluate_merge({**pre_merge(repository, source_ref), **event}, pipeline.repo, config, pipeline.store)


class StoppedBeforeMerge(Exception):
    pass


@pytest.fixture
def candidate(pipeline: Harness, example_config: TenantsConfig, monkeypatch: pytest.MonkeyPatch):
    """An ``auto`` batch of northbank/support_intents whose gates passed, committed and recorded as the publish
    candidate, and stopped where lakeFS would ask the gatekeeper: just before the merge into ``main``."""
    tenant = example_config.tenant("northbank")
    dataset = tenant.dataset("support_intents")
    pipeline.process(tenant, dataset, build_drop(tenant, dataset, "b1", N, seed=3), publish=False)
    batch = pipeline.batch(tenant, dataset, "b1")

    def stop(*args, **kwargs):
        raise StoppedBeforeMerge

    with monkeypatch.context() as patch:
        patch.setattr(publish, "merge_batch", stop)
        with pytest.raises(StoppedBeforeMerge):
            run_publish(batch, pipeline.store)
    return batch, batch.repo.get_commit(batch.repo.branch_head(batch.branch))


def test_a_merge_into_another_branch_is_not_the_gatekeepers_business(pipeline: Harness,
                                                                     example_config: TenantsConfig) -> None:
    allowed = decision(pipeline, example_config, "northbank", "anything", branch_id="staging")
    assert allowed.allowed and allowed.reason == "not a merge into main"
    refused = decision(pipeline, example_config, "northbank", "anything", event_type="pre-commit")
    assert not refused.allowed and "unexpected event 'pre-commit'" in refused.reason


def test_a_repository_of_no_tenant_is_refused(pipeline: Harness, example_config: TenantsConfig) -> None:
    refused = decision(pipeline, example_config, "somebody-elses", "evil")
    assert not refused.allowed and "belongs to no configured tenant" in refused.reason


def test_a_gated_candidate_of_an_auto_dataset_may_be_merged(pipeline: Harness, example_config: TenantsConfig,
                                                            candidate) -> None:
    batch, commit = candidate
    allowed = decision(pipeline, example_config, "northbank", batch.branch)
    assert allowed == MergeDecision(True, "batch b1: every gate passed; publish policy auto")
    # The event may name the commit instead of the branch; the decision is about that commit.
    assert decision(pipeline, example_config, "northbank", "", commit_id=commit.id).allowed


def test_a_commit_that_is_not_a_candidate_is_refused(pipeline: Harness, example_config: TenantsConfig,
                                                     candidate) -> None:
    batch, _ = candidate
    commit_on_top(batch, EXTRA, b"after the gates", "a hand-made commit on top of the candidate")
    refused = decision(pipeline, example_config, "northbank", batch.branch)
    assert not refused.allowed and "is not a Trainyard publish candidate" in refused.reason


def test_candidate_metadata_trainyard_did_not_record_is_refused(pipeline: Harness, example_config: TenantsConfig,
                                                                candidate) -> None:
    batch, commit = candidate
    copied = dict(batch.repo.get_commit(commit.id).metadata)
    commit_on_top(batch, EXTRA, b"unchecked", "copies the candidate's metadata", copied)
    refused = decision(pipeline, example_config, "northbank", batch.branch)
    assert not refused.allowed and "was not committed by Trainyard as the publish candidate" in refused.reason

    damaged = {**copied, "trainyard.gates": json.dumps({"agreement": 1})}
    commit_on_top(batch, EXTRA, b"unchecked again", "and damages it", damaged)
    refused = decision(pipeline, example_config, "northbank", batch.branch)
    assert not refused.allowed and "not a Trainyard publish candidate: trainyard.gates.agreement" in refused.reason


def test_a_merge_that_touches_the_action_files_is_refused(pipeline: Harness, example_config: TenantsConfig,
                                                          candidate) -> None:
    batch, _ = candidate
    commit_on_top(batch, "_lakefs_actions/off.yaml", b"name: off\n", "switch the gate off")
    refused = decision(pipeline, example_config, "northbank", batch.branch)
    assert not refused.allowed and "_lakefs_actions/off.yaml" in refused.reason


def test_a_candidate_whose_recorded_gate_failed_is_refused(pipeline: Harness, example_config: TenantsConfig,
                                                           candidate) -> None:
    batch, commit = candidate
    recorded = pipeline.store.candidate(commit.id)
    failing = recorded.gates | {"agreement": recorded.gates["agreement"].model_copy(update={"passed": False})}
    # A later candidate of the same batch, recorded with a failed gate (publishing itself never records one).
    metadata = dict(batch.repo.get_commit(commit.id).metadata)
    later = commit_on_top(batch, EXTRA, b"a second candidate", "second candidate", metadata)
    pipeline.store.record_candidate("northbank", "support_intents", "b1", later, failing)
    refused = decision(pipeline, example_config, "northbank", batch.branch)
    assert not refused.allowed and refused.reason.endswith(f"on commit {later[:12]}: agreement")

    recorded_without = {k: v for k, v in recorded.gates.items() if k != "drift"}
    third = commit_on_top(batch, EXTRA, b"a third candidate", "third candidate", metadata)
    pipeline.store.record_candidate("northbank", "support_intents", "b1", third, recorded_without)
    refused = decision(pipeline, example_config, "northbank", batch.branch)
    assert not refused.allowed and refused.reason.endswith(f"on commit {third[:12]}: drift")


def test_a_dataset_the_tenant_does_not_configure_is_refused(pipeline: Harness, example_config: TenantsConfig,
                                                            candidate) -> None:
    batch, _ = candidate
    tenant = example_config.tenant("northbank")
    without = example_config.model_copy(update={"tenants": [
        tenant.model_copy(update={"datasets": [d for d in tenant.datasets if d.name != "support_intents"]}),
        *[t for t in example_config.tenants if t.name != "northbank"]]})
    refused = decision(pipeline, without, "northbank", batch.branch)
    assert refused == MergeDecision(False, "dataset 'support_intents' is not configured for tenant northbank")


def test_an_owner_candidate_needs_its_owners_approval_of_that_commit(pipeline: Harness,
                                                                     example_config: TenantsConfig) -> None:
    tenant = example_config.tenant("northbank")
    dataset = tenant.dataset("complaints")
    run = pipeline.process(tenant, dataset, build_drop(tenant, dataset, "c1", N, seed=5))
    batch = pipeline.batch(tenant, dataset, "c1")
    waiting = decision(pipeline, example_config, "northbank", batch.branch)
    assert waiting == MergeDecision(False, f"batch c1: 0/1 data-owner approvals on commit "
                                           f"{run.published.batch_commit[:12]}")
    decide(batch, pipeline.store, tenant.data_owners[0], Verdict.APPROVE)
    allowed = decision(pipeline, example_config, "northbank", batch.branch)
    assert allowed.allowed and allowed.reason == (f"batch c1: approved by {tenant.data_owners[0]} on "
                                                  f"{run.published.batch_commit[:12]}")


def test_an_owner_candidate_that_was_rejected_or_moved_on_is_refused(pipeline: Harness,
                                                                     example_config: TenantsConfig) -> None:
    tenant = example_config.tenant("northbank")
    dataset = tenant.dataset("complaints")
    first = pipeline.process(tenant, dataset, build_drop(tenant, dataset, "c2", N, seed=6)).published
    batch = pipeline.batch(tenant, dataset, "c2")
    owner = tenant.data_owners[0]
    decide(batch, pipeline.store, owner, Verdict.REJECT, "labels look off")
    refused = decision(pipeline, example_config, "northbank", batch.branch)
    assert refused == MergeDecision(False, f"batch c2: rejected by {owner}")

    decide(batch, pipeline.store, owner, Verdict.APPROVE)
    # The publish step commits a new candidate on top (a re-run): the approval was of the earlier commit.
    metadata = dict(batch.repo.get_commit(first.batch_commit).metadata)
    later = commit_on_top(batch, "datasets/complaints/extra.txt", b"re-run", "a newer candidate", metadata)
    candidate = pipeline.store.candidate(first.batch_commit)
    pipeline.store.record_candidate("northbank", "complaints", "c2", later, candidate.gates)
    refused = decision(pipeline, example_config, "northbank", batch.branch)
    assert refused == MergeDecision(False, f"batch c2: 0/1 data-owner approvals on commit {later[:12]} "
                                           f"(stale approvals on earlier commits: {owner})")
