"""The run queue's fairness and timer settings, in every place an instance is configured: infra/dagster.yaml (docker
compose, the PostgreSQL integration tests), the Helm values (Kubernetes) and the embedded instance of ``trainyard
demo|dev``. A limit keyed on a tag no run carries limits nothing, so the batch jobs' tags are checked too.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from dagster_project import layout
from dagster_project.devservices.dagster_instance import (
    DAGSTER_YAML,
    EMBEDDED_SENSOR_INTERVAL_SECONDS,
    prepare_home,
    sensor_interval_seconds,
)
from dagster_project.settings import Settings
from dagster_project.tenants import TenantsConfig
from tests.conftest import REPO_ROOT

SENSOR_DAEMON_LOOP_SECONDS = 5
"""Dagster's sensor daemon looks at sensors at most this often (not configurable)."""
PER_VALUE = {"applyLimitPerUniqueValue": True}


def _limits(runs: dict) -> dict[str, tuple[object, int]]:
    return {limit["key"]: (limit.get("value"), limit["limit"]) for limit in runs["tag_concurrency_limits"]}


INFRA = yaml.safe_load((REPO_ROOT / "infra" / "dagster.yaml").read_text())
EMBEDDED = yaml.safe_load(DAGSTER_YAML)
HELM = yaml.safe_load((REPO_ROOT / "infra" / "helm" / "values.yaml").read_text())


@pytest.mark.parametrize("config", [INFRA, EMBEDDED], ids=["infra", "embedded"])
def test_one_tenant_or_vendor_cannot_take_every_run_slot(config: dict) -> None:
    runs = config["concurrency"]["runs"]
    limits = _limits(runs)
    for tag in (layout.TENANT_TAG, layout.VENDOR_TAG):
        value, limit = limits[tag]
        assert value == PER_VALUE and 1 <= limit < runs["max_concurrent_runs"], tag


@pytest.mark.parametrize("config", [INFRA, EMBEDDED], ids=["infra", "embedded"])
def test_a_queued_run_and_a_sensor_tick_wait_on_no_long_timer(config: dict) -> None:
    assert config["run_queue"]["dequeue_interval_seconds"] <= 1
    assert config["sensors"]["use_threads"] is True and config["sensors"]["num_workers"] >= 2


def test_the_helm_values_carry_the_same_limits_and_timers_as_infra() -> None:
    queued = HELM["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    infra = _limits(INFRA["concurrency"]["runs"])
    helm = {limit["key"]: (limit.get("value"), limit["limit"]) for limit in queued["tagConcurrencyLimits"]}
    assert set(helm) == set(infra)
    assert all(helm[key][0] == infra[key][0] for key in infra)
    assert all(limit < queued["maxConcurrentRuns"] for key, (_, limit) in helm.items() if key != "dagster/partition")
    assert queued["dequeueIntervalSeconds"] <= 1
    assert HELM["dagsterDaemon"]["sensors"]["useThreads"] is True
    daemon = HELM["dagsterDaemon"]
    assert daemon["runMonitoring"]["enabled"] and daemon["runRetries"]["enabled"]
    assert daemon["runRetries"]["retryOnAssetOrOpFailure"] is False  # failed gates and step errors: no retry
    assert HELM["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"


def test_the_embedded_instance_loads_with_the_queue_and_sensor_settings(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAINYARD_SENSOR_INTERVAL_SECONDS", raising=False)
    env = prepare_home(Settings(home=tmp_path))
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert instance.run_coordinator.dequeue_interval_seconds == 1
        assert instance.get_sensor_settings()["use_threads"] is True
    # A sensor interval at or above the daemon's loop often waits a second loop; below it, every loop evaluates it.
    assert int(env["TRAINYARD_SENSOR_INTERVAL_SECONDS"]) == EMBEDDED_SENSOR_INTERVAL_SECONDS
    assert EMBEDDED_SENSOR_INTERVAL_SECONDS < SENSOR_DAEMON_LOOP_SECONDS


def test_an_explicit_sensor_interval_wins_over_the_embedded_default(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAINYARD_SENSOR_INTERVAL_SECONDS", raising=False)
    assert sensor_interval_seconds(Settings(home=tmp_path, sensor_interval_seconds=30)) == 30
    assert sensor_interval_seconds(Settings(home=tmp_path)) == EMBEDDED_SENSOR_INTERVAL_SECONDS


def test_every_batch_run_carries_its_tenant_and_vendor(location, example_config: TenantsConfig) -> None:
    _, defs, _, _, _ = location
    for tenant, dataset in example_config.datasets():
        tags = defs.resolve_job_def(layout.job_name(tenant.name, dataset.name)).tags
        assert tags[layout.TENANT_TAG] == tenant.name
        assert tags[layout.VENDOR_TAG] == "+".join(sorted(v.name for v in dataset.vendors))
        assert tags["dagster/retry_on_asset_or_op_failure"] == "false"  # a failed gate is not run again


def test_a_run_launched_by_the_landing_sensor_has_the_tags(location) -> None:
    from tests.unit.conftest import land_and_run

    tenant, dataset, _, result = land_and_run(location, "stahlwerk", "defect_reports", "wk01", 120)
    run_tags = result.dagster_run.tags
    assert run_tags[layout.TENANT_TAG] == "stahlwerk" and run_tags[layout.VENDOR_TAG] == "simwork_eu"
