"""A whole batch through Dagster on a PostgreSQL-backed instance, configured by the shipped infra/dagster.yaml.

The landing sensor is evaluated against a real drop in moto S3, the partition it registers and the run it
requests are executed, and the test then reads runs, materializations and check results back -- through the
instance API and straight from the PostgreSQL tables, so it proves where Dagster stored them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from dagster_project import layout
from dagster_project.definitions import build_definitions
from dagster_project.devservices.sample_data import build_drop, upload_drop, upload_gold_set
from dagster_project.gates import GATES
from dagster_project.layout import Stage
from dagster_project.settings import Settings
from dagster_project.tenants import load_tenants
from tests.conftest import PG_HOST, PG_PASSWORD, PG_USER, REPO_ROOT, write_tenants

STAGES = list(Stage)


@pytest.fixture
def postgres_instance(tmp_path: Path, postgres_database: str, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "infra" / "dagster.yaml", home / "dagster.yaml")
    for name, value in {"DAGSTER_PG_USERNAME": PG_USER, "DAGSTER_PG_PASSWORD": PG_PASSWORD,
                        "DAGSTER_PG_HOST": PG_HOST, "DAGSTER_PG_DB": postgres_database}.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def evaluate_landing_sensor(defs: dg.Definitions, instance: dg.DagsterInstance, tenant: str, dataset: str,
                            cursor: str | None = None) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def(layout.landing_sensor_name(tenant, dataset))
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources) as context:
        return sensor(context)


def apply_partition_requests(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def test_batch_runs_through_dagster_on_postgres(settings: Settings, s3, postgres_instance: dg.DagsterInstance,
                                                postgres_connection) -> None:
    instance = postgres_instance
    # infra/dagster.yaml: a run whose worker died is failed by run monitoring (then alerted) and retried once.
    assert instance.run_monitoring_enabled and instance.run_monitoring_max_runtime_seconds == 4 * 3600
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
    defs = build_definitions(settings)
    tenant, dataset = "northbank", "support_intents"
    config_tenant = load_tenants(settings.tenants_file).tenant(tenant)
    plan = build_drop(config_tenant, config_tenant.dataset(dataset), "2026-11-22T09:00 upload", 300, seed=21)
    upload_drop(s3, settings.landing_bucket, plan)
    upload_gold_set(s3, settings.landing_bucket, config_tenant, config_tenant.dataset(dataset))

    first = evaluate_landing_sensor(defs, instance, tenant, dataset)
    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    batch_id = request.partition_key
    assert batch_id.startswith("2026-11-22T09-00-upload-")  # unsafe drop name made branch-safe
    assert request.run_key == batch_id
    apply_partition_requests(instance, first)
    assert instance.get_dynamic_partitions(layout.partitions_name(tenant, dataset)) == [batch_id]

    again = evaluate_landing_sensor(defs, instance, tenant, dataset, cursor=first.cursor)
    assert again.run_requests == []  # a drop becomes exactly one batch

    job = defs.resolve_job_def(layout.job_name(tenant, dataset))
    result = job.execute_in_process(instance=instance, partition_key=batch_id, tags=request.tags)
    assert result.success

    # Runs, materializations and the gate's evaluation are in the instance ...
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": batch_id}))
    assert [r.run_id for r in runs] == [result.run_id]
    for stage in STAGES:
        key = dg.AssetKey([tenant, dataset, stage.value])
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[batch_id]), limit=5).records
        assert len(records) == 1, stage
        assert "dagster/row_count" in records[0].event_log_entry.asset_materialization.metadata
    published = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey([tenant, dataset, "published"]), asset_partitions=[batch_id]),
        limit=1).records[0].event_log_entry.asset_materialization.metadata
    expected = plan.records - plan.unparsable - plan.invalid - plan.duplicates
    assert published["dagster/row_count"].value == expected
    assert published["records_in"].value == plan.records
    assert published["version_tag"].value == "support_intents/v1"
    for gate in GATES:
        check_key = dg.AssetCheckKey(dg.AssetKey([tenant, dataset, gate.stage.value]), gate.name)
        history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=5)
        assert [h.status for h in history] == [AssetCheckExecutionRecordStatus.SUCCEEDED], gate.name

    # A new version triggers what depends on it: the version sensor requests the training-manifest export.
    version_sensor = defs.resolve_sensor_def(f"{tenant}__{dataset}__version_sensor")
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        sensed = version_sensor(context)
    assert [r.tags["trainyard/version"] for r in sensed.run_requests] == ["support_intents/v1"]
    export = defs.resolve_job_def(f"{tenant}__{dataset}__version_job").execute_in_process(
        instance=instance, tags=sensed.run_requests[0].tags)
    assert export.success
    manifest = json.loads(s3.get_object(Bucket=settings.landing_bucket,
                                        Key="northbank/support_intents/exports/versions/v1.json")["Body"].read())
    assert manifest["commit_id"] == published["main_commit"].value and manifest["version"] == "support_intents/v1"
    assert manifest["files"] == [f"datasets/support_intents/published/batch={batch_id}/data.parquet"]
    with dg.build_sensor_context(instance=instance, resources=defs.resources, cursor=sensed.cursor) as context:
        again = version_sensor(context)
    assert again.run_requests == []

    # ... and the instance is PostgreSQL: the same facts, read with SQL.
    with postgres_connection.cursor() as cursor:
        cursor.execute("SELECT run_id, status FROM runs ORDER BY create_timestamp")
        assert cursor.fetchall() == [(result.run_id, "SUCCESS"), (export.run_id, "SUCCESS")]
        cursor.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                       "AND partition = %s", (batch_id,))  # one per stage; the manifest is not partitioned
        assert cursor.fetchone()[0] == len(STAGES)
        cursor.execute("SELECT check_name, execution_status FROM asset_check_executions ORDER BY check_name")
        assert cursor.fetchall() == sorted((g.name, "SUCCEEDED") for g in GATES)


def test_failed_gate_stops_the_run_before_publish(settings: Settings, s3, postgres_instance: dg.DagsterInstance,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def sloppy_vendor(raw: dict) -> None:
        raw["tenants"][1]["datasets"][0]["vendors"][0]["accuracy"] = 0.35

    tenants_file = write_tenants(tmp_path / "tenants.yaml", sloppy_vendor)
    monkeypatch.setenv("TRAINYARD_TENANTS_FILE", str(tenants_file))
    settings = Settings()
    instance = postgres_instance
    defs = build_definitions(settings)
    tenant = load_tenants(tenants_file).tenant("stahlwerk")
    upload_drop(s3, settings.landing_bucket,
                build_drop(tenant, tenant.datasets[0], "bad-vendor", 90, seed=2, plant_defects=False))
    upload_gold_set(s3, settings.landing_bucket, tenant, tenant.datasets[0])
    sensed = evaluate_landing_sensor(defs, instance, "stahlwerk", "defect_reports")
    apply_partition_requests(instance, sensed)

    result = defs.resolve_job_def(layout.job_name("stahlwerk", "defect_reports")).execute_in_process(
        instance=instance, partition_key="bad-vendor", raise_on_error=False)

    assert not result.success
    check_key = dg.AssetCheckKey(dg.AssetKey(["stahlwerk", "defect_reports", "annotations"]), "gold_accuracy")
    history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=5)
    assert [h.status for h in history] == [AssetCheckExecutionRecordStatus.FAILED]
    evaluation = history[0].event.dagster_event.event_specific_data
    assert evaluation.metadata["value"].value < evaluation.metadata["threshold"].value == 0.95
    consolidated = dg.AssetKey(["stahlwerk", "defect_reports", "consolidated_labels"])
    assert instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=consolidated), limit=1).records == []
    published = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(["stahlwerk", "defect_reports", "published"])), limit=1)
    assert published.records == []
