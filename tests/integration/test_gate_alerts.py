"""A failed gate, end to end through Dagster: the blocking check fails the run and queues one alert in the
PostgreSQL outbox where it is evaluated (the run-failure sensor stays quiet about that run), and the delivery
sensor delivers exactly one Slack message (to a local receiver, through slack-sdk) with the metric, threshold,
branch and playbook link; a re-run that passes sends a recovery message in the thread; a run that fails for
another reason raises a ``run_failed`` alert instead."""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg
import pytest

from assets.alert_sensors import ALERT_DELIVERY_SENSOR, RUN_FAILURE_ALERT_SENSOR
from dagster_project import layout
from dagster_project.alerts import AlertOutbox, IncidentStatus, OutboxStatus
from dagster_project.definitions import build_definitions
from dagster_project.devservices.sample_data import build_drop, upload_drop, upload_gold_set
from dagster_project.devservices.slack_receiver import RunningSlackReceiver, start_slack_receiver
from dagster_project.settings import Settings
from dagster_project.tenants import load_tenants
from tests.conftest import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER
from tests.integration.test_dagster_postgres import postgres_instance  # noqa: F401 - fixture

TENANT, DATASET, BATCH = "stahlwerk", "defect_reports", "leaky-batch"


@pytest.fixture
def slack() -> RunningSlackReceiver:
    with start_slack_receiver(token="xoxb-test") as receiver:
        yield receiver


@pytest.fixture
def alert_settings(settings: Settings, slack: RunningSlackReceiver, postgres_database: str,
                   monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("TRAINYARD_SLACK_BASE_URL", slack.base_url)
    monkeypatch.setenv("TRAINYARD_SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("TRAINYARD_DATABASE_URL",
                       f"postgresql+psycopg2://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{postgres_database}")
    monkeypatch.setenv("TRAINYARD_DATABASE_SCHEMA", f"alerts_{uuid.uuid4().hex[:10]}")
    monkeypatch.setenv("TRAINYARD_PLAYBOOK_BASE_URL", "https://git.example/trainyard/ops_playbooks")
    return Settings()


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, name: str, cursors: dict[str, str | None]) -> None:
    with dg.build_sensor_context(instance=instance, cursor=cursors.get(name), resources=defs.resources) as context:
        defs.resolve_sensor_def(name)(context)
        cursors[name] = context.cursor


def run_failure_sensor(defs: dg.Definitions, instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> None:
    """Evaluate the run-failure alert sensor once the run has failed."""
    assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.FAILURE
    tick(defs, instance, RUN_FAILURE_ALERT_SENSOR, {})


def test_failed_gate_alerts_once_and_recovers(alert_settings: Settings, s3, slack: RunningSlackReceiver,
                                              postgres_instance: dg.DagsterInstance,  # noqa: F811
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    instance = postgres_instance
    tenant = load_tenants(alert_settings.tenants_file).tenant(TENANT)
    dataset = tenant.dataset(DATASET)
    # A dataset declared PII-free receives texts with emails and IBANs: nothing redacts them.
    upload_drop(s3, alert_settings.landing_bucket,
                build_drop(tenant, dataset, BATCH, 120, seed=8, plant_defects=False, pii_share=0.5))
    upload_gold_set(s3, alert_settings.landing_bucket, tenant, dataset)
    instance.add_dynamic_partitions(layout.partitions_name(TENANT, DATASET), [BATCH])
    defs = build_definitions(alert_settings)
    job = defs.resolve_job_def(layout.job_name(TENANT, DATASET))

    failed = job.execute_in_process(instance=instance, partition_key=BATCH, raise_on_error=False)
    assert not failed.success
    assert instance.get_run_by_id(failed.run_id).tags[layout.ALERTED_TAG] == "gate_failed:pii_residual"
    # The run failed because of the gate: the run-failure sensor must not announce it a second time.
    run_failure_sensor(defs, instance, failed)
    cursors: dict[str, str | None] = {}
    for _ in range(3):  # repeated ticks must not repeat the message
        tick(defs, instance, ALERT_DELIVERY_SENSOR, cursors)

    assert len(slack.messages) == 1
    message = slack.messages[0]
    assert message.channel == tenant.slack_channel
    branch = layout.batch_branch(DATASET, BATCH)
    for expected in ("pii_residual", "<= 0", branch, "https://git.example/trainyard/ops_playbooks/gate_failed.md",
                     f"/runs/{failed.run_id}"):
        assert expected in message.text, (expected, message.text)
    outbox = AlertOutbox(alert_settings.database_url, schema=alert_settings.database_schema)
    [sent] = outbox.messages()
    assert sent.status == OutboxStatus.SENT and sent.alert.metric == "pii_residual" and sent.alert.value > 0

    # The client's next export is clean; re-running the batch passes the gate and on-call gets a recovery reply.
    clean = build_drop(tenant, dataset, BATCH, 120, seed=8, plant_defects=False, pii_share=0.0)
    upload_drop(s3, alert_settings.landing_bucket, clean)
    passed = job.execute_in_process(instance=instance, partition_key=BATCH)
    assert passed.success
    tick(defs, instance, ALERT_DELIVERY_SENSOR, cursors)
    assert len(slack.messages) == 2
    recovery = slack.messages[1]
    assert recovery.thread_ts == message.ts and "pii_residual" in recovery.text
    assert outbox.incident(sent.dedupe_key).status == IncidentStatus.RESOLVED
    outbox.dispose()


def test_run_failing_for_another_reason_raises_run_failed(alert_settings: Settings, slack: RunningSlackReceiver,
                                                          postgres_instance: dg.DagsterInstance,  # noqa: F811
                                                          ) -> None:
    instance = postgres_instance
    defs = build_definitions(alert_settings)
    instance.add_dynamic_partitions(layout.partitions_name(TENANT, DATASET), ["no-such-drop"])
    job = defs.resolve_job_def(layout.job_name(TENANT, DATASET))
    result = job.execute_in_process(instance=instance, partition_key="no-such-drop", raise_on_error=False)
    assert not result.success

    run_failure_sensor(defs, instance, result)
    tick(defs, instance, ALERT_DELIVERY_SENSOR, {})

    assert [m.channel for m in slack.messages] == ["#stahlwerk-quality"]
    assert "batch run failed" in slack.messages[0].text and "no-such-drop" in slack.messages[0].text
