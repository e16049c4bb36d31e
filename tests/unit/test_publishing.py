"""Publishing without a server: reconcile, commit the candidate, merge and tag; refusals; the crash between merge
and tag; owner approvals bound to a commit; rejections and their cleanup; versions and diffs.

Batches run through the real stage, gate and publish functions on the in-memory lakeFS fake
(:mod:`tests.unit.harness`), so each path is checked on what lands on ``main``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dagster_project import layout
from dagster_project.devservices.sample_data import build_drop, upload_drop
from dagster_project.gates import blocking_gate_names, evaluate_and_record
from dagster_project.lakefs import MergeConflict
from dagster_project.lakefs.metadata import MERGED_STAGE, PUBLISHED_STAGE, CommitMetadata
from dagster_project.plan import STAGE_PLAN
from dagster_project.publishing.approvals import NotADataOwner, Verdict
from dagster_project.publishing.decisions import (
    NotAwaitingApproval,
    approval_request,
    cleanup_rejected_branches,
    decide,
    merge_if_approved,
)
from dagster_project.publishing.publish import PublishRefused, merge_batch, run_publish
from dagster_project.publishing.versions import (
    diff_published,
    tagged_versions,
    training_manifest,
    trusted_versions,
    untrusted_version_alert,
)
from dagster_project.quality.result import GateResult
from dagster_project.tenants import TenantsConfig
from tests.unit.harness import BUCKET, Harness

N = 160


def batch_commits_on_main(pipeline: Harness, repo_name: str, dataset: str, batch_id: str) -> list[str]:
    return [c.id for c in pipeline.repo(repo_name).log(layout.MAIN_BRANCH, amount=1000)
            if len(c.parents) == 2 and (m := CommitMetadata.from_lakefs(c.metadata)) and m.belongs_to(dataset,
                                                                                                        batch_id)]


@pytest.fixture
def auto(example_config: TenantsConfig):
    tenant = example_config.tenant("northbank")
    return tenant, tenant.dataset("support_intents")


@pytest.fixture
def owner(example_config: TenantsConfig):
    tenant = example_config.tenant("northbank")
    return tenant, tenant.dataset("complaints")


def test_auto_batch_is_reconciled_committed_merged_and_tagged(pipeline: Harness, auto) -> None:
    tenant, dataset = auto
    run = pipeline.process(tenant, dataset, build_drop(tenant, dataset, "b1", N, seed=3))
    outcome = run.published
    assert outcome is not None and outcome.status == "published" and outcome.version_tag == "support_intents/v1"
    repo = pipeline.repo(tenant.lakefs_repository)

    merge = repo.get_commit(outcome.main_commit)
    meta = CommitMetadata.from_lakefs(merge.metadata)
    assert len(merge.parents) == 2 and merge.parents[1] == outcome.batch_commit
    assert meta.stage == MERGED_STAGE and meta.belongs_to("support_intents", "b1")
    assert meta.counts["balanced"] == "True" and meta.count("records_in") == outcome.conservation.records_in
    assert set(meta.gates) >= set(blocking_gate_names()) and all(v.passed for v in meta.gates.values())

    candidate = CommitMetadata.from_lakefs(repo.get_commit(outcome.batch_commit).metadata)
    assert candidate.stage == PUBLISHED_STAGE and candidate.gates == meta.gates
    recorded = pipeline.store.candidate(outcome.batch_commit)
    assert recorded is not None and recorded.failed_or_missing(blocking_gate_names()) == []

    published = repo.require_frame(layout.MAIN_BRANCH, layout.stage_data_path("support_intents", "published", "b1"))
    assert len(published) == outcome.conservation.published > 0
    summary = repo.get_json(layout.MAIN_BRANCH, layout.batch_summary_path("support_intents", "b1"))
    assert summary["conservation"]["balanced"] is True
    assert {GateResult.model_validate(g).name for g in summary["gates"]} == {o for o in run.outcomes}


def test_publishing_again_changes_nothing_and_the_next_batch_is_the_next_version(pipeline: Harness, auto) -> None:
    tenant, dataset = auto
    first = pipeline.process(tenant, dataset, build_drop(tenant, dataset, "b1", N, seed=3)).published
    repo = pipeline.repo(tenant.lakefs_repository)
    head = repo.branch_head(layout.MAIN_BRANCH)

    again = run_publish(pipeline.batch(tenant, dataset, "b1"), pipeline.store)
    assert (again.status, again.version_tag, again.main_commit) == ("already_published", first.version_tag,
                                                                    first.main_commit)
    assert repo.branch_head(layout.MAIN_BRANCH) == head

    second = pipeline.process(tenant, dataset, build_drop(tenant, dataset, "b2", N, seed=4)).published
    assert second.version_tag == "support_intents/v2"
    assert [v.tag for v in tagged_versions(repo, "support_intents")] == ["support_intents/v1", "support_intents/v2"]
    diff = diff_published(repo, "support_intents", "v1", "v2")
    assert diff.added == second.conservation.published and diff.removed == 0 and diff.relabelled == 0


def test_a_failed_or_missing_gate_refuses_publishing(pipeline: Harness, auto) -> None:
    tenant, dataset = auto
    pipeline.process(tenant, dataset, build_drop(tenant, dataset, "b1", N, seed=3), publish=False)
    batch = pipeline.batch(tenant, dataset, "b1")
    repo = batch.repo
    path = layout.gate_result_path(dataset.name, "b1", "agreement")
    recorded = GateResult.from_json(repo.get_bytes(batch.branch, path))
    repo.put_bytes(batch.branch, path, recorded.model_copy(update={"passed": False}).to_json())
    with pytest.raises(PublishRefused, match="gates failed: agreement"):
        run_publish(batch, pipeline.store)

    # A batch whose drift gate never ran (a run stopped between two checks) is refused as well.
    partial = pipeline.batch(tenant, dataset, "b2")
    upload_drop(pipeline.s3, BUCKET, build_drop(tenant, dataset, "b2", N, seed=4))
    for step in STAGE_PLAN:
        step.run(partial, pipeline.inputs(tenant, dataset))
        for gate in step.gates:
            if gate.name != "drift":
                evaluate_and_record(partial, gate.name)
    with pytest.raises(PublishRefused, match="gates not evaluated: drift"):
        run_publish(partial, pipeline.store)
    assert tagged_versions(repo, dataset.name) == []


def test_a_run_that_died_between_merge_and_tag_is_tagged_not_merged_twice(pipeline: Harness, auto,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    tenant, dataset = auto
    repo = pipeline.repo(tenant.lakefs_repository)

    def crash(tag: str, ref: str) -> bool:
        raise ConnectionError("lakeFS went away after the merge")

    with monkeypatch.context() as patch:
        patch.setattr(repo, "create_tag", crash)
        with pytest.raises(ConnectionError):
            pipeline.process(tenant, dataset, build_drop(tenant, dataset, "b1", N, seed=3))
    [merged] = batch_commits_on_main(pipeline, tenant.lakefs_repository, dataset.name, "b1")
    assert tagged_versions(repo, dataset.name) == []

    retry = run_publish(pipeline.batch(tenant, dataset, "b1"), pipeline.store)
    assert retry.status == "published" and retry.main_commit == merged and retry.version_tag == "support_intents/v1"
    assert batch_commits_on_main(pipeline, tenant.lakefs_repository, dataset.name, "b1") == [merged]


def test_a_tag_whose_answer_was_lost_is_recognised_not_made_again_under_the_next_number(
        pipeline: Harness, auto, monkeypatch: pytest.MonkeyPatch) -> None:
    tenant, dataset = auto
    repo = pipeline.repo(tenant.lakefs_repository)
    real_create_tag = repo.create_tag

    def lost_answer(tag: str, ref: str) -> bool:
        real_create_tag(tag, ref)  # lakeFS made the tag; the answer never came back
        raise TimeoutError("read timed out")

    with monkeypatch.context() as patch:
        patch.setattr(repo, "create_tag", lost_answer)
        with pytest.raises(TimeoutError):
            pipeline.process(tenant, dataset, build_drop(tenant, dataset, "b1", N, seed=3))
    retry = run_publish(pipeline.batch(tenant, dataset, "b1"), pipeline.store)
    assert retry.status == "already_published" and retry.version_tag == "support_intents/v1"
    assert [t.id for t in repo.iter_tags(prefix="support_intents/v")] == ["support_intents/v1"]
    [version] = tagged_versions(repo, dataset.name)  # recorded, so trusted: no untrusted_version for v1
    assert version.tag == "support_intents/v1" and version.batch_id == "b1"


def test_a_batch_that_changes_action_files_is_never_merged(pipeline: Harness, auto) -> None:
    tenant, dataset = auto
    pipeline.process(tenant, dataset, build_drop(tenant, dataset, "b1", N, seed=3), publish=False)
    batch = pipeline.batch(tenant, dataset, "b1")
    batch.repo.put_bytes(batch.branch, "_lakefs_actions/off.yaml", b"name: switch the gate off\n")
    batch.commit("tamper", "an action file slipped in")
    head = batch.repo.branch_head(layout.MAIN_BRANCH)
    with pytest.raises(PublishRefused, match="_lakefs_actions/off.yaml"):
        merge_batch(batch, None)
    assert batch.repo.branch_head(layout.MAIN_BRANCH) == head


def test_a_merge_conflict_merges_nothing(pipeline: Harness, auto) -> None:
    tenant, dataset = auto
    pipeline.process(tenant, dataset, build_drop(tenant, dataset, "b1", N, seed=3), publish=False)
    batch = pipeline.batch(tenant, dataset, "b1")
    repo = batch.repo
    for branch, body in ((layout.MAIN_BRANCH, b"main's"), (batch.branch, b"the batch's")):
        repo.put_bytes(branch, "datasets/support_intents/README.md", body)
        repo.commit(branch, "both sides change one file", {})
    main_head, batch_head = repo.branch_head(layout.MAIN_BRANCH), repo.branch_head(batch.branch)
    with pytest.raises(MergeConflict):
        run_publish(batch, pipeline.store)
    assert repo.branch_head(layout.MAIN_BRANCH) == main_head
    assert repo.get_commit(repo.branch_head(batch.branch)).parents == (batch_head,)  # only the candidate commit
    assert tagged_versions(repo, dataset.name) == []


def test_training_manifest_pins_the_version_commit(pipeline: Harness, auto) -> None:
    tenant, dataset = auto
    pipeline.process(tenant, dataset, build_drop(tenant, dataset, "b1", N, seed=3))
    repo = pipeline.repo(tenant.lakefs_repository)
    [version] = tagged_versions(repo, dataset.name)
    manifest = training_manifest(repo, dataset.name, version)
    assert manifest["commit_id"] == version.commit_id and manifest["batch_id"] == "b1"
    assert manifest["files"] == [layout.stage_data_path(dataset.name, "published", "b1")]
    assert manifest["lineage"]["stage"] == MERGED_STAGE and manifest["lineage"]["counts"]["balanced"] == "True"


def test_only_tags_trainyard_recorded_are_versions(pipeline: Harness, auto) -> None:
    tenant, dataset = auto
    pipeline.process(tenant, dataset, build_drop(tenant, dataset, "b1", N, seed=3))
    repo = pipeline.repo(tenant.lakefs_repository)
    # Someone with write access tags a commit that never passed a gate as the next version.
    repo.ensure_branch("scratch")
    repo.put_bytes("scratch", "datasets/support_intents/published/batch=evil/data.parquet", b"unchecked")
    forged = repo.commit("scratch", "unchecked data", {})
    assert repo.create_tag("support_intents/v2", forged)

    assert [v.tag for v in tagged_versions(repo, dataset.name)] == ["support_intents/v1", "support_intents/v2"]
    check = trusted_versions(repo, tenant.name, dataset.name, pipeline.store)
    assert [v.tag for v in check.trusted] == ["support_intents/v1"]
    assert [(v.tag, v.commit_id) for v in check.foreign] == [("support_intents/v2", forged)]
    alert = untrusted_version_alert(tenant, dataset.name, check.foreign[0], None, "https://playbooks.example")
    assert alert.kind == "untrusted_version" and "never recorded" in alert.title
    # The forged tag still takes its number: the next real version is v3, never a second v2.
    second = pipeline.process(tenant, dataset, build_drop(tenant, dataset, "b2", N, seed=4)).published
    assert second.version_tag == "support_intents/v3"
    assert [v.tag for v in trusted_versions(repo, tenant.name, dataset.name, pipeline.store).trusted] == [
        "support_intents/v1", "support_intents/v3"]


def test_a_run_that_died_between_tag_and_record_records_its_own_tag_on_retry(pipeline: Harness, auto,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    tenant, dataset = auto
    store = pipeline.store

    def crash(*args, **kwargs) -> None:
        raise ConnectionError("the platform database went away after the tag")

    with monkeypatch.context() as patch:
        patch.setattr(store, "record_version", crash)
        with pytest.raises(ConnectionError):
            pipeline.process(tenant, dataset, build_drop(tenant, dataset, "b1", N, seed=3))
    repo = pipeline.repo(tenant.lakefs_repository)
    assert trusted_versions(repo, tenant.name, dataset.name, store).trusted == []  # tagged, not yet trusted

    retry = run_publish(pipeline.batch(tenant, dataset, "b1"), store)
    assert retry.status == "already_published"
    assert [v.tag for v in trusted_versions(repo, tenant.name, dataset.name, store).trusted] == ["support_intents/v1"]


# -- owner approvals ----------------------------------------------------------------------------------------------
def test_owner_batch_waits_then_merges_once_a_data_owner_approves_its_commit(pipeline: Harness, owner) -> None:
    tenant, dataset = owner
    run = pipeline.process(tenant, dataset, build_drop(tenant, dataset, "c1", N, seed=5))
    assert run.published.status == "awaiting_approval"
    assert [(p.dataset, p.batch_id, p.commit_id) for p in pipeline.store.pending_batches()] == [
        ("complaints", "c1", run.published.batch_commit)]
    batch = pipeline.batch(tenant, dataset, "c1")
    assert merge_if_approved(batch, pipeline.store).status == "awaiting_approval"

    request = approval_request(batch, run.published, "https://playbooks.example", None)
    assert request.channel == tenant.approvals_channel and request.value == run.published.conservation.published
    commit = run.published.batch_commit
    assert request.details["approve"] == (
        f"trainyard approve northbank complaints c1 --commit {commit} --as <your email>")
    assert request.dedupe_key.endswith(f":c1:{commit[:12]}")  # one request per candidate commit
    assert len(request.details["gates"]) == len(run.outcomes)

    with pytest.raises(NotADataOwner, match="priya.shah@northbank.example"):
        decide(batch, pipeline.store, "mallory@example.com", Verdict.APPROVE)
    state = decide(batch, pipeline.store, tenant.data_owners[0].upper(), Verdict.APPROVE)
    assert state.approved and state.commit_id == run.published.batch_commit

    merged = merge_if_approved(batch, pipeline.store)
    assert merged.status == "published" and merged.version_tag == "complaints/v1"
    meta = CommitMetadata.from_lakefs(batch.repo.get_commit(merged.main_commit).metadata)
    assert meta.approved_by == (tenant.data_owners[0],) and meta.approved_commit == run.published.batch_commit
    assert meta.count("published") == run.published.conservation.published
    assert pipeline.store.pending_batches() == []
    assert merge_if_approved(batch, pipeline.store).status == "already_published"
    with pytest.raises(NotAwaitingApproval, match="already on main"):
        decide(batch, pipeline.store, tenant.data_owners[0], Verdict.APPROVE)


def test_an_approval_goes_stale_when_the_branch_moves(pipeline: Harness, owner) -> None:
    tenant, dataset = owner
    first = pipeline.process(tenant, dataset, build_drop(tenant, dataset, "c1", N, seed=5)).published
    batch = pipeline.batch(tenant, dataset, "c1")
    decide(batch, pipeline.store, tenant.data_owners[0], Verdict.APPROVE)
    # Someone commits to the batch branch after the approval: the approved commit is no longer the head.
    batch.repo.put_bytes(batch.branch, "datasets/complaints/notes.txt", b"late change")
    batch.commit(PUBLISHED_STAGE, "a late change on top of the candidate")
    assert batch.repo.branch_head(batch.branch) != first.batch_commit

    assert merge_if_approved(batch, pipeline.store).status == "awaiting_approval"
    state = pipeline.store.state(tenant, dataset, "c1", batch.repo.branch_head(batch.branch))
    assert not state.approved and state.stale == (tenant.data_owners[0],)
    assert tagged_versions(batch.repo, dataset.name) == []


def test_two_required_approvals_need_two_distinct_owners(pipeline: Harness, owner) -> None:
    tenant, dataset = owner
    dataset = dataset.model_copy(update={"publish": dataset.publish.model_copy(update={"required_approvals": 2})})
    pipeline.process(tenant, dataset, build_drop(tenant, dataset, "c2", N, seed=6))
    batch = pipeline.batch(tenant, dataset, "c2")
    first, second = tenant.data_owners[:2]
    assert decide(batch, pipeline.store, first, Verdict.APPROVE).missing == 1
    assert decide(batch, pipeline.store, first, Verdict.APPROVE).missing == 1  # the same owner twice counts once
    assert merge_if_approved(batch, pipeline.store).status == "awaiting_approval"
    assert decide(batch, pipeline.store, second, Verdict.APPROVE).approved
    assert merge_if_approved(batch, pipeline.store).status == "published"


def test_a_rejected_batch_is_never_merged_and_its_branch_goes_after_retention(
        pipeline: Harness, owner, example_config: TenantsConfig) -> None:
    tenant, dataset = owner
    pipeline.process(tenant, dataset, build_drop(tenant, dataset, "c3", N, seed=7))
    batch = pipeline.batch(tenant, dataset, "c3")
    with pytest.raises(ValueError, match="needs a reason"):
        decide(batch, pipeline.store, tenant.data_owners[0], Verdict.REJECT)
    assert decide(batch, pipeline.store, tenant.data_owners[0], Verdict.REJECT, "labels look off").rejected
    assert merge_if_approved(batch, pipeline.store).status == "rejected"
    assert pipeline.store.pending_batches() == []

    retention = timedelta(days=30)
    assert cleanup_rejected_branches(pipeline.store, example_config, pipeline.repo, retention) == []
    later = datetime.now(UTC) + retention + timedelta(minutes=1)
    deleted = cleanup_rejected_branches(pipeline.store, example_config, pipeline.repo, retention, now=later)
    assert deleted == [f"northbank/{batch.branch}"] and not batch.repo.branch_exists(batch.branch)
    assert [r.verdict for r in pipeline.store.history("northbank", "complaints", "c3")] == [Verdict.REJECT]


def test_an_owner_who_rejected_and_then_approves_gets_the_batch_merged(pipeline: Harness, owner) -> None:
    tenant, dataset = owner
    pipeline.process(tenant, dataset, build_drop(tenant, dataset, "c5", N, seed=9))
    batch = pipeline.batch(tenant, dataset, "c5")
    decide(batch, pipeline.store, tenant.data_owners[0], Verdict.REJECT, "labels look off")
    assert merge_if_approved(batch, pipeline.store).status == "rejected"
    assert pipeline.store.pending_batches() == []  # the merge sensor no longer looks at it ...

    assert decide(batch, pipeline.store, tenant.data_owners[0], Verdict.APPROVE, "second look: fine").approved
    assert [p.batch_id for p in pipeline.store.pending_batches()] == ["c5"]  # ... until an owner approves it
    assert merge_if_approved(batch, pipeline.store).status == "published"
    assert pipeline.store.pending_batches() == []


def test_an_approval_names_the_commit_that_was_reviewed(pipeline: Harness, owner) -> None:
    tenant, dataset = owner
    first = pipeline.process(tenant, dataset, build_drop(tenant, dataset, "c6", N, seed=10)).published
    batch = pipeline.batch(tenant, dataset, "c6")
    owner_email = tenant.data_owners[0]
    with pytest.raises(ValueError, match="at least 12 characters"):
        decide(batch, pipeline.store, owner_email, Verdict.APPROVE, commit=first.batch_commit[:6])
    # The branch moves after the request went out: approving what was reviewed is refused, nothing is recorded.
    batch.repo.put_bytes(batch.branch, "datasets/complaints/notes.txt", b"late change")
    moved = batch.commit(PUBLISHED_STAGE, "a late change on top of the candidate")
    with pytest.raises(NotAwaitingApproval, match=f"you reviewed commit {first.batch_commit[:12]}"):
        decide(batch, pipeline.store, owner_email, Verdict.APPROVE, commit=first.batch_commit[:12])
    assert pipeline.store.history("northbank", "complaints", "c6") == []
    assert decide(batch, pipeline.store, owner_email, Verdict.APPROVE, commit=moved.upper()).commit_id == moved


def test_the_merge_takes_the_approved_commit_not_what_the_branch_holds_later(pipeline: Harness, owner,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    tenant, dataset = owner
    first = pipeline.process(tenant, dataset, build_drop(tenant, dataset, "c7", N, seed=11)).published
    batch = pipeline.batch(tenant, dataset, "c7")
    decide(batch, pipeline.store, tenant.data_owners[0], Verdict.APPROVE, commit=first.batch_commit)
    repo = batch.repo
    real_merge = repo.merge

    def merge_after_a_late_write(source: str, destination: str, message: str, metadata: dict[str, str]) -> str:
        # Something writes to the branch between the approval check and the merge call.
        repo.put_bytes(batch.branch, "datasets/complaints/published/batch=c7/sneaked.parquet", b"unchecked")
        repo.commit(batch.branch, "sneaked in", {})
        return real_merge(source, destination, message, metadata)

    monkeypatch.setattr(repo, "merge", merge_after_a_late_write)
    merged = merge_if_approved(batch, pipeline.store)
    assert merged.status == "published"
    assert repo.get_commit(merged.main_commit).parents[1] == first.batch_commit
    assert "datasets/complaints/published/batch=c7/sneaked.parquet" not in repo.list_paths("main", "datasets/")


def test_only_a_publish_candidate_can_be_decided(pipeline: Harness, owner) -> None:
    tenant, dataset = owner
    batch = pipeline.batch(tenant, dataset, "never-ran")
    pipeline.repo(tenant.lakefs_repository).ensure_exists("local://unit")
    with pytest.raises(NotAwaitingApproval, match="does not exist"):
        decide(batch, pipeline.store, tenant.data_owners[0], Verdict.APPROVE)
    pipeline.process(tenant, dataset, build_drop(tenant, dataset, "c4", N, seed=8), publish=False)
    with pytest.raises(NotAwaitingApproval, match="not a publish candidate"):
        decide(pipeline.batch(tenant, dataset, "c4"), pipeline.store, tenant.data_owners[0], Verdict.APPROVE)
