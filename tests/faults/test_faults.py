"""Faults injected into real services while a batch runs through Dagster: the lakeFS emulator and moto killed in
the middle of a step, an S3 read stalled mid-body, PostgreSQL stopped under the platform's tables, Slack
rate-limiting, failing and losing responses.

Each test asserts the promise rather than a code path: no record lost (the batch, once its dependency is back,
publishes exactly what the drop planted), no partial publish (while it failed, main holds nothing of the batch and
no version names it), no lost alert (the failure is in the outbox and reaches Slack exactly once) and no stuck
batch (the run ends, FAILURE or SUCCESS, and a new run of the same partition completes it). Where a fault lands
inside a step depends on timing; the assertions hold wherever it lands, so the tests do not depend on it.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import boto3
import dagster as dg
import pytest

import assets.factory as factory
from assets.alert_sensors import ALERT_DELIVERY_SENSOR, RUN_FAILURE_ALERT_SENSOR
from dagster_project import layout
from dagster_project.alerts import AlertKind, AlertOutbox, AlertRouter, OutboxStatus, SlackSender
from dagster_project.clock import utcnow
from dagster_project.definitions import build_definitions
from dagster_project.devservices.sample_data import DropPlan, build_drop, ensure_bucket, upload_drop, upload_gold_set
from dagster_project.lakefs import LakeFSRepository, settings_client
from dagster_project.layout import Stage
from dagster_project.publishing.versions import tagged_versions
from dagster_project.settings import Settings
from dagster_project.tenants import load_tenants
from resources.object_storage import ObjectStorageResource
from tests.waiting import wait_until

from .conftest import WAIT_SECONDS, PrivatePostgres, Service, StallingProxy

TENANT, DATASET, BATCH = "northbank", "support_intents", "faulty-week"


def _s3(url: str):
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                        aws_secret_access_key="test-secret")


def land(settings: Settings, s3_url: str, records: int = 150, seed: int = 11) -> DropPlan:
    """The client's drop and the dataset's gold set in the landing bucket."""
    tenant = load_tenants(settings.tenants_file).tenant(TENANT)
    dataset = tenant.dataset(DATASET)
    s3 = _s3(s3_url)
    ensure_bucket(s3, settings.landing_bucket)
    plan = build_drop(tenant, dataset, BATCH, records, seed=seed)
    upload_drop(s3, settings.landing_bucket, plan)
    upload_gold_set(s3, settings.landing_bucket, tenant, dataset)
    return plan


def expected_published(plan: DropPlan) -> int:
    return plan.records - plan.unparsable - plan.invalid - plan.duplicates


def step_key(stage: Stage | str) -> str:
    return f"{TENANT}__{DATASET}__{stage}"


def started_steps(instance: dg.DagsterInstance, excluding: set[str] = frozenset()) -> set[str]:
    """The steps that have started in any run not in ``excluding``."""
    return {e.step_key for r in instance.get_runs() if r.run_id not in excluding
            for e in instance.all_logs(r.run_id, of_type=dg.DagsterEventType.STEP_START)}


def run_batch(defs: dg.Definitions, instance: dg.DagsterInstance,
              on_step_start: dict[str, Callable[[], None]] | None = None) -> dg.DagsterRun:
    """Run the batch job for BATCH in a thread; ``on_step_start[step]()`` is called (here, in the test's thread)
    as soon as that step has started. Returns the finished run -- never waits for ever."""
    if BATCH not in instance.get_dynamic_partitions(layout.partitions_name(TENANT, DATASET)):
        instance.add_dynamic_partitions(layout.partitions_name(TENANT, DATASET), [BATCH])
    job = defs.resolve_job_def(layout.job_name(TENANT, DATASET))
    known = {r.run_id for r in instance.get_runs()}
    errors: list[BaseException] = []

    def execute() -> None:
        try:
            job.execute_in_process(instance=instance, partition_key=BATCH, raise_on_error=False)
        except BaseException as exc:  # noqa: BLE001 -- reported to the test below
            errors.append(exc)

    worker = threading.Thread(target=execute, name="batch-run")
    worker.start()
    pending = dict(on_step_start or {})
    deadline = time.monotonic() + 10 * WAIT_SECONDS
    while worker.is_alive() and time.monotonic() < deadline:
        if pending:
            started = started_steps(instance, known)
            for step in [s for s in pending if s in started]:
                pending.pop(step)()
        worker.join(0.1)  # polling the event log more often only takes CPU from the run being watched
    assert not worker.is_alive(), "the run did not end: a stuck batch"
    assert not errors, errors
    [run] = [r for r in instance.get_runs() if r.run_id not in known]
    assert run.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE), run.status
    return run


def repository(settings: Settings) -> LakeFSRepository:
    return LakeFSRepository(settings_client(settings), load_tenants(settings.tenants_file).tenant(TENANT)
                            .lakefs_repository)


def assert_nothing_published(settings: Settings) -> None:
    """No partial publish: main holds no file of the batch and no version names it."""
    repo = repository(settings)
    if not repo.branch_exists("main"):  # the repository was never created: nothing can be on it
        return
    assert [p for p in repo.list_paths("main", f"{DATASET}/") if f"/{BATCH}/" in p or p.endswith(f"/{BATCH}")] == []
    assert tagged_versions(repo, DATASET) == []


def assert_published_in_full(settings: Settings, plan: DropPlan) -> None:
    """No record lost: the version holds every record the drop planted as good, and conservation is exact."""
    repo = repository(settings)
    [version] = tagged_versions(repo, DATASET)
    assert version.batch_id == BATCH and version.published_records == expected_published(plan)
    published = repo.require_frame("main", layout.stage_data_path(DATASET, Stage.PUBLISHED, BATCH))
    assert len(published) == expected_published(plan)
    raw = repo.require_frame("main", layout.stage_quarantine_path(DATASET, Stage.RAW, BATCH))
    assert len(raw) == plan.unparsable  # nothing of the fault was quarantined as the client's


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, name: str, cursor: str | None = None) -> str | None:
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources) as context:
        defs.resolve_sensor_def(name)(context)
        return context.cursor


def deliver_all(settings: Settings, defs: dg.Definitions, instance: dg.DagsterInstance) -> AlertOutbox:
    tick(defs, instance, ALERT_DELIVERY_SENSOR)
    return AlertOutbox(settings.resolved_database_url)


def test_lakefs_killed_mid_step_fails_loudly_and_the_next_run_publishes_everything(
        fault_env, emulator: Service, moto: Service, slack, instance: dg.DagsterInstance) -> None:
    fault_env()
    settings = Settings()
    plan = land(settings, moto.url)
    defs = build_definitions(settings)

    failed = run_batch(defs, instance, {step_key(Stage.DEDUP): emulator.kill})
    assert not emulator.alive and failed.status is dg.DagsterRunStatus.FAILURE
    emulator.start()  # same port, same data directory: what was committed before the crash is still there
    assert_nothing_published(settings)

    tick(defs, instance, RUN_FAILURE_ALERT_SENSOR)
    outbox = deliver_all(settings, defs, instance)
    [message] = outbox.messages()
    assert message.alert.kind is AlertKind.RUN_FAILED and message.alert.batch_id == BATCH
    assert message.status is OutboxStatus.SENT and len(slack.messages) == 1

    again = run_batch(defs, instance)
    assert again.status is dg.DagsterRunStatus.SUCCESS
    assert_published_in_full(settings, plan)


_KILL_ON_SECOND_FILE: dict = {"service": None, "opened": 0}


def _kill_on_second_file(real, Bucket, Key):  # noqa: N803 - boto3's spelling
    if not Key.endswith(".json") and "/incoming/" in Key:
        _KILL_ON_SECOND_FILE["opened"] += 1
        if _KILL_ON_SECOND_FILE["opened"] == 2:
            _KILL_ON_SECOND_FILE["service"].kill()
    return real.get_object(Bucket=Bucket, Key=Key)


class KillingLanding(ObjectStorageResource):
    """The landing zone, whose S3 process is killed (SIGKILL) as the batch opens the drop's second data file."""

    def client(self):
        real = super().client()

        class Client:
            def __getattr__(self, name):
                return functools.partial(_kill_on_second_file, real) if name == "get_object" else getattr(real, name)

        return Client()


def test_s3_killed_mid_ingestion_is_retried_then_fails_and_blames_no_file(
        fault_env, emulator: Service, moto: Service, slack, instance: dg.DagsterInstance,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factory, "SOURCE_RETRY_SECONDS", 0)
    fault_env()
    settings = Settings()
    plan = land(settings, moto.url)
    assert len(plan.files) >= 2
    _KILL_ON_SECOND_FILE.update(service=moto, opened=0)
    defs = build_definitions(settings, resources={"landing": KillingLanding(
        landing_bucket=settings.landing_bucket, endpoint_url=moto.url, access_key_id="test",
        secret_access_key="test-secret", manifest_grace_minutes=0)})

    failed = run_batch(defs, instance)  # moto dies as raw opens the drop's second file: in the middle of the step
    assert not moto.alive and failed.status is dg.DagsterRunStatus.FAILURE
    [failure] = instance.all_logs(failed.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    assert failure.step_key == step_key(Stage.RAW)
    assert "SourceUnavailable" in failure.dagster_event.step_failure_data.error.to_string()
    assert_nothing_published(settings)
    repo = repository(settings)
    if repo.branch_exists(layout.batch_branch(DATASET, BATCH)):
        quarantine = repo.get_frame(layout.batch_branch(DATASET, BATCH),
                                    layout.stage_quarantine_path(DATASET, Stage.RAW, BATCH))
        assert quarantine is None or len(quarantine) == plan.unparsable  # S3 being down is no bad record

    tick(defs, instance, RUN_FAILURE_ALERT_SENSOR)
    [message] = deliver_all(settings, defs, instance).messages()
    assert message.alert.kind is AlertKind.RUN_FAILED and len(slack.messages) == 1

    # moto keeps nothing across a restart (S3 itself would): the client's objects are put back byte for byte.
    moto.start()
    land(settings, moto.url)
    again = run_batch(defs, instance)
    assert again.status is dg.DagsterRunStatus.SUCCESS
    assert_published_in_full(settings, plan)


@pytest.mark.parametrize(("stalls", "succeeds"), [(1, True), (20, False)])
def test_a_read_stalled_mid_body_is_retried_and_never_quarantined(
        fault_env, emulator: Service, moto: Service, slack, instance: dg.DagsterInstance,
        monkeypatch: pytest.MonkeyPatch, stalls: int, succeeds: bool) -> None:
    monkeypatch.setattr(factory, "SOURCE_RETRY_SECONDS", 0)
    proxy = StallingProxy(moto.url)
    try:
        fault_env(s3_url=proxy.url, TRAINYARD_S3_READ_TIMEOUT_SECONDS="1")
        settings = Settings()
        plan = land(settings, moto.url)  # the client uploads straight to S3; the platform reads through the proxy
        assert any(name.endswith(".parquet") for name in plan.files)
        proxy.stall(".parquet", stalls)
        run = run_batch(build_definitions(settings), instance)
    finally:
        proxy.close()
    assert proxy.stalled >= 1
    if succeeds:
        assert run.status is dg.DagsterRunStatus.SUCCESS
        assert_published_in_full(settings, plan)
    else:
        assert run.status is dg.DagsterRunStatus.FAILURE
        assert_nothing_published(settings)
        failures = [e for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)]
        assert [e.step_key for e in failures] == [step_key(Stage.RAW)]
        error = failures[0].dagster_event.step_failure_data.error.to_string()
        assert "SourceUnavailable" in error and ".parquet: reading the file failed" in error


def test_postgres_down_loses_no_alert_and_publishes_nothing(
        fault_env, emulator: Service, moto: Service, slack, instance: dg.DagsterInstance,
        private_postgres: PrivatePostgres) -> None:
    fault_env(database_url=private_postgres.url)
    settings = Settings()
    plan = land(settings, moto.url)
    defs = build_definitions(settings)
    AlertOutbox(settings.resolved_database_url).create()  # the platform's tables exist before the outage

    private_postgres.stop()
    failed = run_batch(defs, instance)
    assert failed.status is dg.DagsterRunStatus.FAILURE  # publishing needs its lock and records: it stops
    assert_nothing_published(settings)
    with pytest.raises(Exception, match="(?i)connect|refused|server"):
        tick(defs, instance, RUN_FAILURE_ALERT_SENSOR)  # cannot write the alert: the tick fails, the cursor stays

    private_postgres.start()
    tick(defs, instance, RUN_FAILURE_ALERT_SENSOR)
    outbox = deliver_all(settings, defs, instance)
    run_failed = [m for m in outbox.messages() if m.alert.kind is AlertKind.RUN_FAILED]
    assert [m.alert.batch_id for m in run_failed] == [BATCH] and run_failed[0].status is OutboxStatus.SENT
    assert len([m for m in slack.messages if m.text and BATCH in m.text]) == 1

    again = run_batch(defs, instance)
    assert again.status is dg.DagsterRunStatus.SUCCESS
    assert_published_in_full(settings, plan)


def test_slack_rate_limits_errors_and_lost_responses_deliver_every_alert_exactly_once(
        fault_env, emulator: Service, moto: Service, slack, private_postgres: PrivatePostgres) -> None:
    from dagster_project.alerts import Alert

    fault_env(database_url=private_postgres.url)
    settings = Settings()
    router = AlertRouter(AlertOutbox(settings.resolved_database_url))
    alerts = [Alert(kind=AlertKind.RUN_FAILED, tenant=TENANT, dataset=DATASET, batch_id=f"batch-{i}",
                    title=f"batch-{i} failed", dedupe_key=f"run_failed:faults:{i}", channel="#faults",
                    playbook_url="https://example.test/ops_playbooks/run_failed.md")
              for i in range(6)]
    for alert in alerts:
        router.raise_alert(alert)
    slack.rate_limit_next(1, retry_after=2)
    slack.fail_next(2, status=500)
    slack.lose_next_response(2)
    sender = SlackSender(token="xoxb-faults", base_url=slack.base_url, timeout=5)
    now = utcnow()
    for _ in range(60):  # a virtual clock: each round is past any back-off the last one asked for
        router.deliver(sender, now=now)
        if not router.outbox.messages(status=OutboxStatus.PENDING):
            break
        now += timedelta(minutes=10)
    assert router.outbox.messages(status=OutboxStatus.PENDING) == []
    posted = sorted(m.text for m in slack.messages)
    assert len(posted) == len(alerts) and len(set(posted)) == len(alerts)  # every alert, none twice
    assert all(m.status is OutboxStatus.SENT for m in router.outbox.messages())


_KILLABLE_RUN = """
import sys
import dagster as dg
from dagster_project import layout
from dagster_project.definitions import build_definitions
from dagster_project.settings import Settings
job = build_definitions(Settings()).resolve_job_def(layout.job_name(sys.argv[1], sys.argv[2]))
with dg.DagsterInstance.get() as instance:
    job.execute_in_process(instance=instance, partition_key=sys.argv[3], raise_on_error=False)
"""


def test_a_run_whose_process_is_killed_mid_run_is_alerted_and_the_batch_completes(
        fault_env, emulator: Service, moto: Service, slack, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal
    import subprocess
    import sys

    from assets.alert_sensors import STALLED_RUN_ALERT_SENSOR

    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    fault_env(TRAINYARD_STALLED_RUN_MINUTES="0.02")  # a run with no new event for ~1 s counts as stalled here
    settings = Settings()
    plan = land(settings, moto.url)
    defs = build_definitions(settings)
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(layout.partitions_name(TENANT, DATASET), [BATCH])
        # Its own process group, killed whole as a dying container would be (Dagster's log-capturing `tail`
        # helpers with it; killing the worker alone orphans them).
        worker = subprocess.Popen([sys.executable, "-c", _KILLABLE_RUN, TENANT, DATASET, BATCH],
                                  start_new_session=True)
        wait_until(lambda: step_key(Stage.CLEAN) in started_steps(instance) or worker.poll() is not None,
                   "the run to start clean", timeout=10 * WAIT_SECONDS, interval=0.1)
        os.killpg(worker.pid, signal.SIGKILL)  # the run worker dies in clean: no event of that run will follow
        worker.wait(timeout=WAIT_SECONDS)
        [killed] = instance.get_runs()
        assert killed.status is dg.DagsterRunStatus.STARTED  # what Dagster shows until run monitoring acts
        assert_nothing_published(settings)

        cursors: dict[str, str | None] = {"stalled": None}
        outbox = AlertOutbox(settings.resolved_database_url)

        def stalled_alerted() -> bool:  # stalled once a second without an event has passed
            cursors["stalled"] = tick(defs, instance, STALLED_RUN_ALERT_SENSOR, cursors["stalled"])
            return bool(outbox.messages())

        wait_until(stalled_alerted, "the run_stalled alert", timeout=10 * WAIT_SECONDS, interval=0.1)
        cursor = cursors["stalled"]
        [message] = outbox.messages()
        assert message.alert.kind is AlertKind.RUN_STALLED and message.alert.batch_id == BATCH
        tick(defs, instance, STALLED_RUN_ALERT_SENSOR, cursor)
        assert len(outbox.messages()) == 1  # once per run

        again = run_batch(defs, instance)  # the batch is not stuck behind the dead run
        assert again.status is dg.DagsterRunStatus.SUCCESS
    assert_published_in_full(settings, plan)


def test_a_stalled_lakefs_read_times_out_and_is_retried_instead_of_hanging_the_step(
        fault_env, emulator: Service, moto: Service, slack, instance: dg.DagsterInstance,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster_project.lakefs.sdk as sdk

    monkeypatch.setattr(sdk, "REQUEST_TIMEOUT", (5.0, 5.0))  # 120 s in production
    proxy = StallingProxy(emulator.url)
    try:
        fault_env(TRAINYARD_LAKEFS_URL=proxy.url)
        settings = Settings()
        plan = land(settings, moto.url)
        proxy.stall("/objects", 2)  # two object reads stop mid-body: each one times out and is asked again
        run = run_batch(build_definitions(settings), instance)
        # The proxy holds a stalled response until the client hangs up (or WAIT_SECONDS pass): a client without a
        # read timeout never hangs up (it used to wait for ever); with one, it gives up and asks again.
        assert proxy.stalled == 2 and proxy.abandoned == 2 and run.status is dg.DagsterRunStatus.SUCCESS
        assert_published_in_full(settings, plan)
    finally:
        proxy.close()
