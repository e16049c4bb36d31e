"""The gatekeeper at the merge itself: with the Trainyard action installed on main, lakeFS asks the gatekeeper
before any merge into main -- so a failing, unapproved or stale-approved batch merged directly through lakefs-sdk
(as a person in the lakeFS UI would) is refused with 412 and main is unchanged, while gated, approved batches
merge. Real HTTP everywhere: lakeFS emulator, gatekeeper, moto S3, PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import lakefs_sdk
import pytest
from lakefs_sdk.exceptions import ApiException

from dagster_project.alerts import playbook_path
from dagster_project.batch_runner import run_batch
from dagster_project.devservices.sample_data import build_drop, upload_drop, upload_gold_set
from dagster_project.gates import GATES
from dagster_project.lakefs import LakeFSError, LakeFSRepository, api_client
from dagster_project.lakefs.metadata import PUBLISHED_STAGE, CommitMetadata
from dagster_project.publishing.approvals import ApprovalStore, Verdict
from dagster_project.publishing.decisions import decide
from dagster_project.publishing.gatekeeper import ACTION_PATH, SECRET_ENV, gatekeeper_decider, install_gate
from dagster_project.publishing.publish import PublishRefused, merge_batch
from dagster_project.quality.result import Comparison, GateVerdict
from dagster_project.services.gatekeeper import RunningGatekeeper, start_gatekeeper
from dagster_project.settings import Settings
from dagster_project.stages.batch import Batch
from dagster_project.stages.gold_set import read_gold_set
from dagster_project.stages.runners import StageInputs
from dagster_project.tenants import DatasetConfig, TenantConfig, TenantsConfig
from dagster_project.vendors import build_vendor
from tests.conftest import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER

SECRET = "gatekeeper-test-secret"
OWNER = "priya.shah@northbank.example"
ALLOW_ALL = (b"name: allow all\non:\n  post-commit:\n    branches: [nothing-*]\nhooks:\n  - id: noop\n"
             b"    type: webhook\n    properties:\n      url: http://127.0.0.1:9/never\n")


@pytest.fixture
def store(postgres_database: str) -> Iterator[ApprovalStore]:
    approvals = ApprovalStore(f"postgresql+psycopg2://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{postgres_database}")
    yield approvals
    approvals.dispose()


def client(settings: Settings) -> lakefs_sdk.ApiClient:
    return api_client(settings.lakefs_api_url, settings.lakefs_access_key_id,
                      settings.lakefs_secret_access_key.get_secret_value())


def owner_policy(tenants: TenantsConfig) -> TenantsConfig:
    tenant = tenants.tenant("northbank")
    dataset = tenant.datasets[0]
    owner = dataset.model_copy(update={"publish": dataset.publish.model_copy(update={"policy": "owner"})})
    return tenants.model_copy(update={"tenants": [tenant.model_copy(update={"datasets": [owner]}),
                                                  tenants.tenant("stahlwerk")]})


@pytest.fixture
def gated(settings: Settings, tenants: TenantsConfig, store: ApprovalStore,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RunningGatekeeper, TenantsConfig]]:
    monkeypatch.setenv(SECRET_ENV, SECRET)  # on the lakeFS server's side, as in a real deployment
    config = owner_policy(tenants)
    decide_merge = gatekeeper_decider(config, lambda name: LakeFSRepository(client(settings), name), store)
    with start_gatekeeper("127.0.0.1", 0, SECRET, decide_merge) as gatekeeper:
        for tenant in config.tenants:
            repo = LakeFSRepository(client(settings), tenant.lakefs_repository)
            repo.ensure_exists(f"local://gate/{tenant.lakefs_repository}")
            assert install_gate(repo, gatekeeper.url)
            assert not install_gate(repo, gatekeeper.url)  # idempotent
            assert SECRET.encode() not in repo.get_bytes("main", ACTION_PATH)  # the secret stays out of the repo
        yield gatekeeper, config


def processed(settings: Settings, s3, tenant: TenantConfig, dataset: DatasetConfig, batch_id: str,
              store: ApprovalStore, publish: bool = True, **drop: object) -> Batch:
    upload_drop(s3, settings.landing_bucket, build_drop(tenant, dataset, batch_id, 200, seed=hash(batch_id) % 97,
                                                        **drop))
    upload_gold_set(s3, settings.landing_bucket, tenant, dataset)
    gold = read_gold_set(s3, settings.landing_bucket, tenant.landing_prefix, dataset.name,
                         dataset.record_schema.text_field, dataset.labels)
    batch = Batch(tenant, dataset, batch_id, LakeFSRepository(client(settings), tenant.lakefs_repository), "gate")
    vendors = {v.name: build_vendor(v, settings.home / "vendors") for v in dataset.vendors}
    run_batch(batch, StageInputs(s3=s3, landing_bucket=settings.landing_bucket,
                                 storage_namespace=f"local://gate/{batch.repo.name}",
                                 vendors=vendors, gold=gold), publish, store)
    return batch


def merge_by_hand(settings: Settings, batch: Batch) -> None:
    """What a person with write access does in the lakeFS UI."""
    lakefs_sdk.RefsApi(client(settings)).merge_into_branch(batch.repo.name, batch.branch, "main")


def test_gated_auto_batch_merges_through_the_gatekeeper(settings: Settings, s3, gated, store: ApprovalStore) -> None:
    gatekeeper, config = gated
    tenant = config.tenant("stahlwerk")
    batch = processed(settings, s3, tenant, tenant.datasets[0], "auto-1", store)
    assert batch.repo.get_bytes("main", ACTION_PATH) is not None
    [(payload, decision)] = gatekeeper.decisions
    assert decision.allowed and payload["branch_id"] == "main" and payload["repository_id"] == "stahlwerk"
    assert "every gate passed" in decision.reason


def test_failing_batch_merged_by_hand_is_refused(settings: Settings, s3, gated, store: ApprovalStore) -> None:
    gatekeeper, config = gated
    tenant = config.tenant("stahlwerk")
    sloppy = tenant.datasets[0].model_copy(update={"vendors": [tenant.datasets[0].vendors[0].model_copy(
        update={"accuracy": 0.4})]})
    batch = processed(settings, s3, tenant, sloppy, "sloppy-1", store, plant_defects=False)
    main_before = batch.repo.branch_head("main")

    with pytest.raises(ApiException) as refused:
        merge_by_hand(settings, batch)
    assert refused.value.status == 412
    assert batch.repo.branch_head("main") == main_before
    assert not gatekeeper.decisions[-1][1].allowed
    assert "not a Trainyard publish candidate" in gatekeeper.decisions[-1][1].reason


def test_unapproved_then_approved_owner_batch(settings: Settings, s3, gated, store: ApprovalStore) -> None:
    gatekeeper, config = gated
    tenant = config.tenant("northbank")
    batch = processed(settings, s3, tenant, tenant.datasets[0], "owner-1", store)
    main_before = batch.repo.branch_head("main")

    with pytest.raises(ApiException) as refused:
        merge_by_hand(settings, batch)
    assert refused.value.status == 412 and batch.repo.branch_head("main") == main_before
    assert "0/1 data-owner approvals" in gatekeeper.decisions[-1][1].reason

    decide(batch, store, OWNER, Verdict.APPROVE)
    merge_by_hand(settings, batch)
    assert batch.repo.branch_head("main") != main_before
    assert gatekeeper.decisions[-1][1].allowed


def test_stale_approval_and_action_changes_are_refused(settings: Settings, s3, gated, store: ApprovalStore) -> None:
    gatekeeper, config = gated
    tenant = config.tenant("northbank")
    batch = processed(settings, s3, tenant, tenant.datasets[0], "owner-2", store)
    decide(batch, store, OWNER, Verdict.APPROVE)
    # The branch moves after the approval, and the new commit also tries to add an action of its own.
    batch.repo.put_bytes(batch.branch, "_lakefs_actions/allow-all.yaml", ALLOW_ALL)
    batch.repo.commit(batch.branch, "sneak", {"trainyard.stage": "published", "trainyard.batch_id": "owner-2",
                                              "trainyard.dataset": "support_intents"})
    main_before = batch.repo.branch_head("main")

    with pytest.raises(ApiException) as refused:
        merge_by_hand(settings, batch)
    assert refused.value.status == 412 and batch.repo.branch_head("main") == main_before
    assert "_lakefs_actions/allow-all.yaml" in gatekeeper.decisions[-1][1].reason
    with pytest.raises(PublishRefused, match="_lakefs_actions/allow-all.yaml"):
        merge_batch(batch, None)


def test_main_is_protected_and_the_secret_is_required(settings: Settings, s3, gated) -> None:
    gatekeeper, config = gated
    repo = LakeFSRepository(client(settings), "stahlwerk")
    with pytest.raises(LakeFSError) as forbidden:
        repo.put_bytes("main", "datasets/defect_reports/published/batch=x/data.parquet", b"not allowed")
    assert forbidden.value.status == 403
    # A hook with the wrong secret is refused by the gatekeeper itself.
    answer = httpx.post(gatekeeper.url, json={"event_type": "pre-merge", "branch_id": "main"},
                        headers={"X-Trainyard-Gatekeeper-Secret": "wrong"})
    assert answer.status_code == 401 and answer.json()["allowed"] is False


def test_forged_commit_metadata_is_not_trusted(settings: Settings, s3, gated) -> None:
    """Anyone with write access can put 'gates passed' into commit metadata; only Trainyard's record counts."""
    gatekeeper, config = gated
    repo = LakeFSRepository(client(settings), "stahlwerk")
    repo.ensure_branch("evil")
    repo.put_bytes("evil", "datasets/defect_reports/published/batch=evil/data.parquet", b"unchecked data")
    # A well-formed forgery: every blocking gate "passed", in exactly the shape Trainyard writes.
    passed = GateVerdict(passed=True, value=1.0, threshold=0.0, comparison=Comparison.AT_LEAST)
    forged = CommitMetadata(stage=PUBLISHED_STAGE, tenant="stahlwerk", dataset="defect_reports", batch_id="evil",
                            gates={g.name: passed for g in GATES if g.blocking}).to_lakefs()
    repo.commit("evil", "looks legit", forged)
    main_before = repo.branch_head("main")

    with pytest.raises(ApiException) as refused:
        lakefs_sdk.RefsApi(client(settings)).merge_into_branch("stahlwerk", "evil", "main")
    assert refused.value.status == 412 and repo.branch_head("main") == main_before
    assert "not committed by Trainyard" in gatekeeper.decisions[-1][1].reason

    # A clumsy forgery (gates in a shape Trainyard never writes) is refused as such, not as a gatekeeper crash.
    repo.put_bytes("evil", "datasets/defect_reports/published/batch=evil/more.parquet", b"more unchecked data")
    clumsy = {**forged, "trainyard.gates": json.dumps({"completeness": {"passed": True}})}
    repo.commit("evil", "looks legit too", clumsy)
    with pytest.raises(ApiException) as refused:
        lakefs_sdk.RefsApi(client(settings)).merge_into_branch("stahlwerk", "evil", "main")
    assert refused.value.status == 412 and repo.branch_head("main") == main_before
    reason = gatekeeper.decisions[-1][1].reason
    assert "not a Trainyard publish candidate" in reason and "trainyard.gates" in reason, reason


def test_the_service_serves_the_playbooks_alerts_link_to(gated) -> None:
    gatekeeper, _ = gated
    origin = gatekeeper.url.removesuffix("/lakefs/pre-merge")
    answer = httpx.get(f"{origin}/playbooks/gate_failed.md")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    assert answer.text == playbook_path("gate_failed").read_text("utf-8")
    assert httpx.get(f"{origin}/playbooks/..%2Fsettings.md").status_code == 404
    assert httpx.get(f"{origin}/playbooks/nosuch.md").status_code == 404


def test_the_acknowledge_button_is_verified_and_recorded(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json as jsonlib
    import time
    from urllib.parse import urlencode

    from dagster_project.alerts import AlertOutbox, AlertRouter
    from dagster_project.alerts.interactions import slack_signature
    from dagster_project.services.gatekeeper import start_gatekeeper_from_settings
    from tests.conftest import free_port
    from tests.unit.test_alerts import gate_alert

    database = f"sqlite:///{tmp_path / 'platform.db'}"
    monkeypatch.setenv("TRAINYARD_DATABASE_URL", database)
    settings = Settings(gatekeeper_url=f"http://127.0.0.1:{free_port()}/lakefs/pre-merge",
                        slack_signing_secret="slack-signing-secret")
    router = AlertRouter(AlertOutbox(database))
    alert = gate_alert()
    router.raise_alert(alert)
    incident = router.outbox.incident(alert.dedupe_key)
    body = urlencode({"payload": jsonlib.dumps({
        "type": "block_actions", "user": {"id": "U0PRIYA01", "username": "priya"},
        "actions": [{"action_id": "acknowledge", "value": str(incident.id)}]})}).encode()

    def post(secret: str, stamp: int) -> httpx.Response:
        return httpx.post(f"{origin}/slack/interactivity", content=body, headers={
            "X-Slack-Request-Timestamp": str(stamp), "X-Slack-Signature": slack_signature(secret, str(stamp), body),
            "Content-Type": "application/x-www-form-urlencoded"})

    with start_gatekeeper_from_settings(settings) as service:
        origin = service.url.removesuffix("/lakefs/pre-merge")
        assert post("forged", int(time.time())).status_code == 401
        assert post("slack-signing-secret", int(time.time()) - 3600).status_code == 401  # a replayed request
        assert router.outbox.incident(alert.dedupe_key).acknowledged_by is None
        answer = post("slack-signing-secret", int(time.time()))
    assert answer.status_code == 200 and "acknowledged by priya.shah@northbank.example" in answer.json()["text"]
    assert router.outbox.incident(alert.dedupe_key).acknowledged_by == "priya.shah@northbank.example"
