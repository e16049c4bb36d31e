"""Alerts about runs themselves, through the real sensors on an in-process Dagster instance: a batch run that
stops making progress without failing (its worker was killed) is reported once and resolves when the run ends;
a failed batch run is reported once -- and not lost when the platform database is down at that tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test  # tests only: a run frozen in STARTED, as a killed one is

from assets.alert_sensors import RUN_FAILURE_ALERT_SENSOR, STALLED_RUN_ALERT_SENSOR, FailureCursor
from dagster_project import layout
from dagster_project.alerts import (
    AlertKind,
    AlertOutbox,
    AlertRouter,
    IncidentStatus,
    MessageType,
    is_stalled,
    stalled_key,
)
from dagster_project.definitions import build_definitions
from dagster_project.settings import SECRET_ENV_VARS, Settings
from resources.lakefs import InMemoryLakeFSResource
from resources.platform_db import PlatformDatabaseResource
from resources.slack import AlertsResource


def test_a_run_is_stalled_once_it_has_been_quiet_for_the_threshold() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert is_stalled(now - timedelta(minutes=30), now, timedelta(minutes=30))
    assert not is_stalled(now - timedelta(minutes=29), now, timedelta(minutes=30))


@pytest.fixture
def stalled_setup(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TRAINYARD_HOME", str(tmp_path / "home"))
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    for name, env in SECRET_ENV_VARS.items():
        monkeypatch.setenv(env, url if name == "database_url" else "unit-secret")
    alerts = AlertsResource(database=PlatformDatabaseResource(url=url), playbook_base_url="https://playbooks.example",
                            stalled_run_minutes=0)  # every quiet run counts as stalled at once
    defs = build_definitions(Settings(), resources={"alerts": alerts,
                                                    "lakefs": InMemoryLakeFSResource(namespace=str(tmp_path))})
    return defs, dg.DagsterInstance.ephemeral(), AlertOutbox(url)


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None,
         sensor: str = STALLED_RUN_ALERT_SENSOR) -> str | None:
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources) as context:
        defs.resolve_sensor_def(sensor)(context)
        return context.cursor


def test_a_killed_run_raises_run_stalled_once_and_resolves_when_it_ends(stalled_setup) -> None:
    defs, instance, outbox = stalled_setup
    tags = {**layout.dagster_tags("northbank", "support_intents"), "dagster/partition": "wk49"}
    run = create_run_for_test(instance, job_name=layout.job_name("northbank", "support_intents"),
                              status=dg.DagsterRunStatus.STARTED, tags=tags)
    create_run_for_test(instance, job_name="not_a_batch_job", status=dg.DagsterRunStatus.STARTED)  # ignored

    cursor = tick(defs, instance, None)
    [message] = outbox.messages()
    alert = message.alert
    assert alert.kind is AlertKind.RUN_STALLED and alert.batch_id == "wk49"
    assert alert.branch == "batch-support_intents-wk49" and alert.details["run_id"] == run.run_id
    assert alert.dedupe_key == stalled_key("northbank", "support_intents", "wk49", run.run_id)

    cursor = tick(defs, instance, cursor)  # still stalled: no second message, no repeat counted
    assert len(outbox.messages()) == 1 and outbox.incident(alert.dedupe_key).occurrences == 1

    instance.report_run_failed(run, "run worker terminated")  # e.g. failed by run monitoring
    tick(defs, instance, cursor)
    assert outbox.incident(alert.dedupe_key).status is IncidentStatus.RESOLVED
    assert outbox.messages()[-1].message_type is MessageType.RECOVERY


def test_a_failed_run_is_alerted_once_even_if_the_database_was_down_at_the_first_tick(
        stalled_setup, monkeypatch: pytest.MonkeyPatch) -> None:
    defs, instance, outbox = stalled_setup
    tags = {**layout.dagster_tags("northbank", "support_intents"), "dagster/partition": "wk49"}
    run = create_run_for_test(instance, job_name=layout.job_name("northbank", "support_intents"),
                              status=dg.DagsterRunStatus.STARTED, tags=tags)
    instance.report_run_failed(run, "lakeFS unreachable")
    gated = create_run_for_test(instance, job_name=layout.job_name("northbank", "support_intents"),
                                status=dg.DagsterRunStatus.STARTED, tags={**tags, layout.ALERTED_TAG: "gate_failed:x"})
    instance.report_run_failed(gated, "a blocking gate failed")  # announced by its gate already

    original = AlertRouter.raise_alert

    def database_down(self, alert, now=None):
        raise ConnectionError("could not connect to the platform database")

    monkeypatch.setattr(AlertRouter, "raise_alert", database_down)
    with pytest.raises(Exception, match="could not connect"):
        tick(defs, instance, None, RUN_FAILURE_ALERT_SENSOR)  # the tick fails; its cursor is not kept
    monkeypatch.setattr(AlertRouter, "raise_alert", original)
    assert outbox.messages() == []

    cursor = tick(defs, instance, None, RUN_FAILURE_ALERT_SENSOR)
    [message] = outbox.messages()
    assert message.alert.kind is AlertKind.RUN_FAILED and message.alert.batch_id == "wk49"
    assert "lakeFS unreachable" in message.alert.details["error"]
    tick(defs, instance, cursor, RUN_FAILURE_ALERT_SENSOR)
    assert len(outbox.messages()) == 1  # handled runs are not alerted again


def test_the_failure_cursor_skips_handled_runs_that_share_a_timestamp() -> None:
    t = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
    cursor = FailureCursor().past(t, "run-a").past(t, "run-b")
    assert cursor.updated_after == t - timedelta(seconds=1) and set(cursor.done) == {"run-a", "run-b"}
    later = FailureCursor.from_json(cursor.to_json()).past(t + timedelta(seconds=5), "run-c")
    assert later.updated_after == t + timedelta(seconds=4) and set(later.done) == {"run-c"}
