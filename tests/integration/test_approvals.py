"""Publish policy ``owner``: batches wait for listed data owners, approvals are audited in PostgreSQL and bound to
the branch head commit, and only approved batches reach main (moto S3, lakeFS emulator, real PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from dagster_project import layout
from dagster_project.batch_runner import run_batch
from dagster_project.definitions import build_definitions
from dagster_project.devservices.sample_data import build_drop, upload_drop, upload_gold_set
from dagster_project.lakefs import LakeFSRepository, MergeConflict, api_client
from dagster_project.layout import Stage
from dagster_project.publishing.approvals import ApprovalStore, NotADataOwner, Verdict
from dagster_project.publishing.decisions import (
    NotAwaitingApproval,
    approval_request,
    cleanup_rejected_branches,
    decide,
    merge_if_approved,
)
from dagster_project.publishing.publish import merge_batch, run_publish
from dagster_project.publishing.versions import diff_published, tagged_versions
from dagster_project.settings import Settings
from dagster_project.stages.batch import Batch
from dagster_project.stages.gold_set import read_gold_set
from dagster_project.stages.runners import StageInputs
from dagster_project.tenants import TenantConfig, TenantsConfig
from dagster_project.vendors import build_vendor
from tests.conftest import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER, REPO_ROOT, write_tenants

OWNER_A, OWNER_B = "priya.shah@northbank.example", "tom.okafor@northbank.example"


@pytest.fixture
def store(postgres_database: str) -> ApprovalStore:
    approvals = ApprovalStore(f"postgresql+psycopg2://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{postgres_database}")
    yield approvals
    approvals.dispose()


def owner_tenant(tenants: TenantsConfig, required: int = 1) -> TenantConfig:
    tenant = tenants.tenant("northbank")
    dataset = tenant.datasets[0]
    policy = dataset.publish.model_copy(update={"policy": "owner", "required_approvals": required})
    return tenant.model_copy(update={"datasets": [dataset.model_copy(update={"publish": policy})]})


def processed_batch(settings: Settings, s3, tenant: TenantConfig, batch_id: str, seed: int) -> Batch:
    dataset = tenant.datasets[0]
    upload_drop(s3, settings.landing_bucket, build_drop(tenant, dataset, batch_id, 200, seed=seed))
    upload_gold_set(s3, settings.landing_bucket, tenant, dataset)
    gold = read_gold_set(s3, settings.landing_bucket, tenant.landing_prefix, dataset.name,
                         dataset.record_schema.text_field, dataset.labels)
    client = api_client(settings.lakefs_api_url, settings.lakefs_access_key_id,
                        settings.lakefs_secret_access_key.get_secret_value())
    batch = Batch(tenant, dataset, batch_id, LakeFSRepository(client, tenant.lakefs_repository), "approvals")
    vendors = {v.name: build_vendor(v, settings.home / "vendors") for v in dataset.vendors}
    run = run_batch(batch, StageInputs(s3=s3, landing_bucket=settings.landing_bucket,
                                       storage_namespace=f"local://approvals/{batch.repo.name}",
                                       vendors=vendors, gold=gold))
    assert run.published is not None and run.published.status == "awaiting_approval"
    return batch


def test_owner_batch_waits_and_lands_after_approval(settings: Settings, s3, tenants: TenantsConfig,
                                                    store: ApprovalStore) -> None:
    tenant = owner_tenant(tenants)
    batch = processed_batch(settings, s3, tenant, "wk47", seed=3)
    main_before = batch.repo.branch_head("main")

    assert merge_if_approved(batch, store).status == "awaiting_approval"
    assert batch.repo.branch_head("main") == main_before and tagged_versions(batch.repo, batch.dataset.name) == []

    state = decide(batch, store, OWNER_A.upper(), Verdict.APPROVE, "looks right")  # emails are case-insensitive
    assert state.approved and state.approvers == (OWNER_A,)
    outcome = merge_if_approved(batch, store)
    assert outcome.status == "published" and outcome.version_tag == "support_intents/v1"
    merge = batch.repo.get_commit(outcome.main_commit)
    assert merge.metadata["trainyard.approved_by"] == OWNER_A
    assert merge.metadata["trainyard.approved_commit"] == state.commit_id
    [record] = store.history("northbank", "support_intents", "wk47")
    assert (record.actor, record.verdict, record.commit_id, record.reason) == (OWNER_A, Verdict.APPROVE,
                                                                               state.commit_id, "looks right")
    assert merge_if_approved(batch, store).status == "already_published"
    with pytest.raises(NotAwaitingApproval, match="already on main"):
        decide(batch, store, OWNER_B, Verdict.APPROVE)


def test_non_owner_is_refused(settings: Settings, s3, tenants: TenantsConfig, store: ApprovalStore) -> None:
    batch = processed_batch(settings, s3, owner_tenant(tenants), "wk48", seed=4)
    with pytest.raises(NotADataOwner, match="mallory@evil.example is not a data owner of northbank/support_intents"):
        decide(batch, store, "mallory@evil.example", Verdict.APPROVE)
    assert store.history("northbank", "support_intents", "wk48") == []
    assert merge_if_approved(batch, store).status == "awaiting_approval"


def test_approval_is_bound_to_the_commit(settings: Settings, s3, tenants: TenantsConfig,
                                         store: ApprovalStore) -> None:
    batch = processed_batch(settings, s3, owner_tenant(tenants), "wk49", seed=5)
    decide(batch, store, OWNER_A, Verdict.APPROVE)
    # Someone commits to the batch branch after the approval (the exact data approved is no longer the head).
    batch.repo.put_bytes(batch.branch, "datasets/support_intents/published/batch=wk49/extra.txt", b"late change")
    batch.repo.commit(batch.branch, "late change", {"trainyard.stage": "published", "trainyard.batch_id": "wk49"})

    state = store.state(batch.tenant, batch.dataset, "wk49", batch.repo.branch_head(batch.branch))
    assert not state.approved and state.stale == (OWNER_A,)
    assert merge_if_approved(batch, store).status == "awaiting_approval"
    assert tagged_versions(batch.repo, "support_intents") == []


def test_two_distinct_owners_and_rejection(settings: Settings, s3, tenants: TenantsConfig,
                                           store: ApprovalStore) -> None:
    tenant = owner_tenant(tenants, required=2)
    batch = processed_batch(settings, s3, tenant, "wk50", seed=6)
    decide(batch, store, OWNER_A, Verdict.APPROVE)
    decide(batch, store, OWNER_A, Verdict.APPROVE)  # the same owner twice is still one approval
    assert merge_if_approved(batch, store).status == "awaiting_approval"
    with pytest.raises(ValueError, match="rejection needs a reason"):
        decide(batch, store, OWNER_B, Verdict.REJECT)
    state = decide(batch, store, OWNER_B, Verdict.REJECT, "client has not signed the licence addendum")
    assert state.rejected and not state.approved
    assert merge_if_approved(batch, store).status == "rejected"

    other = processed_batch(settings, s3, tenant, "wk51", seed=7)
    decide(other, store, OWNER_A, Verdict.APPROVE)
    assert decide(other, store, OWNER_B, Verdict.APPROVE).approved
    assert merge_if_approved(other, store).version_tag == "support_intents/v1"


def test_approval_request_shows_diff_gates_and_commands(settings: Settings, s3, tenants: TenantsConfig) -> None:
    batch = processed_batch(settings, s3, owner_tenant(tenants), "wk52", seed=8)
    outcome = run_publish(batch)
    alert = approval_request(batch, outcome, "https://git.example/playbooks", None)
    diff = diff_published(batch.repo, "support_intents", "main", batch.branch)
    assert alert.channel == "#northbank-data-owners" and alert.value == diff.added > 0  # not the on-call channel
    assert alert.details["approve"] == (f"trainyard approve northbank support_intents wk52 --commit "
                                        f"{outcome.batch_commit} --as <your email>")
    assert "--reason" in alert.details["reject"]
    assert len(alert.details["gates"]) == 12 and all(g.endswith("-- passed") for g in alert.details["gates"])
    assert alert.playbook_url == "https://git.example/playbooks/approval_requested.md"


def test_cli_approve_refuses_strangers_and_records_owners(settings: Settings, s3, tenants: TenantsConfig,
                                                          tmp_path: Path, postgres_database: str) -> None:
    def owner_policy(raw: dict) -> None:
        raw["tenants"][0]["datasets"][0]["publish"] = {"policy": "owner"}

    tenants_file = write_tenants(tmp_path / "tenants.yaml", owner_policy)
    env = {**os.environ, "TRAINYARD_TENANTS_FILE": str(tenants_file),
           "TRAINYARD_DATABASE_URL": f"postgresql+psycopg2://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/"
                                     f"{postgres_database}"}
    batch = processed_batch(settings, s3, owner_tenant(tenants), "wk53", seed=9)
    candidate = batch.repo.branch_head(batch.branch)  # the candidate the approval request named
    trainyard = str(Path(sys.executable).parent / "trainyard")

    def approve(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([trainyard, "approve", "northbank", "support_intents", "wk53", *args], env=env,
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)

    refused = approve("--commit", candidate, "--as", "x@y.example")
    assert refused.returncode == 2 and "x@y.example is not a data owner" in refused.stderr
    unbound = approve("--as", OWNER_B)  # an approval must name the commit that was reviewed
    assert unbound.returncode == 2 and "--commit" in unbound.stderr
    stale = approve("--commit", "0" * 12, "--as", OWNER_B)
    assert stale.returncode == 2 and f"the publish candidate is now {candidate[:12]}" in stale.stderr

    approved = approve("--commit", candidate[:12], "--as", OWNER_B, "--reason", "checked the diff")
    assert approved.returncode == 0, approved.stderr
    assert "approved by tom.okafor@northbank.example (1/1)" in approved.stdout
    versions = subprocess.run([trainyard, "versions", "northbank", "support_intents"], env=env,
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert versions.returncode == 0 and "no published versions yet" in versions.stdout


def test_rejected_branches_are_kept_for_the_retention_period_then_deleted(settings: Settings, s3,
                                                                          tenants: TenantsConfig,
                                                                          store: ApprovalStore) -> None:
    tenant = owner_tenant(tenants)
    batch = processed_batch(settings, s3, tenant, "wk54", seed=10)
    decide(batch, store, OWNER_A, Verdict.REJECT, "wrong export")
    config = tenants.model_copy(update={"tenants": [tenant]})
    now = datetime.now(UTC)

    assert cleanup_rejected_branches(store, config, lambda _: batch.repo, timedelta(days=30), now) == []
    assert batch.repo.branch_exists(batch.branch)
    deleted = cleanup_rejected_branches(store, config, lambda _: batch.repo, timedelta(days=30),
                                        now + timedelta(days=31))
    assert deleted == ["northbank/batch-support_intents-wk54"]
    assert not batch.repo.branch_exists(batch.branch)
    assert [r.verdict for r in store.history("northbank", "support_intents", "wk54")] == [Verdict.REJECT]


def test_a_merge_conflict_loses_nothing(settings: Settings, s3, tenants: TenantsConfig) -> None:
    batch = processed_batch(settings, s3, owner_tenant(tenants), "wk55", seed=11)
    repo = batch.repo
    # Another branch changes a path this batch also changed, and reaches main first.
    shared_path = layout.stage_data_path("support_intents", "published", "wk55")
    repo.ensure_branch("hotfix")
    repo.put_bytes("hotfix", shared_path, b"conflicting content")
    repo.commit("hotfix", "hotfix", {})
    repo.merge("hotfix", "main", "hotfix", {})
    head_before = repo.branch_head(batch.branch)

    with pytest.raises(MergeConflict, match="conflict"):
        merge_batch(batch, None)
    assert repo.branch_head(batch.branch) == head_before  # the batch is intact for the data owner to resolve
    assert tagged_versions(repo, "support_intents") == []


def test_launchpad_decision_job_and_version_commands(settings: Settings, s3, tenants: TenantsConfig,
                                                     tmp_path: Path, postgres_database: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The Dagster launchpad job records the same decision as the CLI; `versions` and `diff` describe the result."""
    def owner_policy(raw: dict) -> None:
        raw["tenants"][0]["datasets"][0]["publish"] = {"policy": "owner"}

    database_url = f"postgresql+psycopg2://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{postgres_database}"
    monkeypatch.setenv("TRAINYARD_TENANTS_FILE", str(write_tenants(tmp_path / "tenants.yaml", owner_policy)))
    monkeypatch.setenv("TRAINYARD_DATABASE_URL", database_url)
    batch = processed_batch(settings, s3, owner_tenant(tenants), "wk56", seed=12)
    defs = build_definitions(Settings())
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("data_owner_decision").execute_in_process(instance=instance, run_config={
            "ops": {"record_decision": {"config": {"tenant": "northbank", "dataset": "support_intents",
                                                   "batch_id": "wk56", "actor": OWNER_A, "verdict": "approve",
                                                   "commit": batch.repo.branch_head(batch.branch),
                                                   "reason": "from the launchpad"}}}})
    assert result.success
    store = ApprovalStore(database_url)
    try:
        [record] = store.history("northbank", "support_intents", "wk56")
        assert (record.actor, record.reason) == (OWNER_A, "from the launchpad")
        assert merge_if_approved(batch, store).version_tag == "support_intents/v1"
    finally:
        store.dispose()

    env = {**os.environ}
    trainyard = str(Path(sys.executable).parent / "trainyard")
    versions = subprocess.run([trainyard, "versions", "northbank", "support_intents"], env=env,
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    [line] = versions.stdout.splitlines()
    assert line.startswith("support_intents/v1") and "batch wk56" in line
    assert batch.repo.get_commit("support_intents/v1").id in line
    diff = subprocess.run([trainyard, "diff", "northbank", "support_intents", batch.repo.log("main")[-1].id, "v1"],
                          env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    published = len(batch.read(Stage.PUBLISHED))
    assert diff.returncode == 0 and f"+{published} records, -0 records, 0 relabelled" in diff.stdout
