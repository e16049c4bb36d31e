"""One tenant's backlog does not starve another: the shipped infra/dagster.yaml on PostgreSQL, the real
dagster-daemon (landing sensors, run queue, run workers) and the embedded S3 and lakeFS.

Tenant A lands more drops than there are run slots; once A's runs are queued, tenant B lands one. The queue is
first-in first-out, so with no tag limits B's run would start only after every one of A's had started; with
``trainyard/tenant`` limited per value, A never holds more slots than its limit and B's run starts next to A's
first ones. (A's datasets share one vendor, so the per-vendor limit alone would also leave B a slot here; without
the per-tenant limit A runs three at once and the test fails on that.) Start and end times come from Dagster's run
records.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import yaml

from dagster_project import layout
from dagster_project.devservices.dagster_instance import running_daemon, write_workspace
from dagster_project.devservices.sample_data import build_drop, upload_drop, upload_gold_set
from dagster_project.settings import Settings
from dagster_project.tenants import load_tenants
from tests.conftest import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER, REPO_ROOT
from tests.integration.test_dagster_postgres import postgres_instance  # noqa: F401 -- the fixture
from tests.waiting import wait_until

A, B = ("northbank", "support_intents"), ("stahlwerk", "defect_reports")
RECORDS = 120
WAIT_SECONDS = 900.0
ENDED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _queue_config() -> tuple[int, int]:
    runs = yaml.safe_load((REPO_ROOT / "infra" / "dagster.yaml").read_text())["concurrency"]["runs"]
    tenant_limit = next(limit["limit"] for limit in runs["tag_concurrency_limits"] if limit["key"] == layout.TENANT_TAG)
    return runs["max_concurrent_runs"], tenant_limit


def _batch_runs(instance: dg.DagsterInstance, tenant: str, dataset: str) -> list[dg.RunRecord]:
    return list(instance.get_run_records(filters=dg.RunsFilter(job_name=layout.job_name(tenant, dataset))))


def _most_at_once(records: list[dg.RunRecord]) -> int:
    """The most runs in progress at the same moment."""
    edges = sorted([(r.start_time, 1) for r in records] + [(r.end_time, -1) for r in records])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def test_a_tenant_backlog_leaves_run_slots_for_another_tenant(
        settings: Settings, s3, postgres_instance: dg.DagsterInstance, postgres_database: str,  # noqa: F811
        tmp_path: Path) -> None:
    instance = postgres_instance
    max_runs, tenant_limit = _queue_config()
    assert tenant_limit < max_runs
    tenants = load_tenants(settings.tenants_file)
    env = {**os.environ, **settings.secret_environment(), "DAGSTER_HOME": str(instance.root_directory),
           "TRAINYARD_SENSOR_INTERVAL_SECONDS": "2",
           "TRAINYARD_DATABASE_URL": f"postgresql+psycopg2://{PG_USER}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/"
                                     f"{postgres_database}",
           "TRAINYARD_DATABASE_SCHEMA": "trainyard"}
    for tenant_name, dataset_name in (A, B):
        tenant = tenants.tenant(tenant_name)
        upload_gold_set(s3, settings.landing_bucket, tenant, tenant.dataset(dataset_name))
    a_tenant = tenants.tenant(A[0])
    backlog = max_runs + 1  # more of A's drops than there are slots: FIFO alone would hand A every one
    for index in range(backlog):
        upload_drop(s3, settings.landing_bucket, build_drop(a_tenant, a_tenant.dataset(A[1]), f"a-{index:02d}",
                                                            RECORDS, seed=index))
    workspace = write_workspace(tmp_path / "workspace.yaml")
    with running_daemon(workspace, env, tmp_path / "daemon.log"):
        wait_until(lambda: len(_batch_runs(instance, *A)) == backlog, f"{backlog} runs for {A[0]}",
                   timeout=WAIT_SECONDS, interval=0.5)
        b_tenant = tenants.tenant(B[0])
        upload_drop(s3, settings.landing_bucket, build_drop(b_tenant, b_tenant.dataset(B[1]), "b-00", RECORDS,
                                                            seed=99))
        wait_until(lambda: [r.dagster_run.status for r in _batch_runs(instance, *B)] == [dg.DagsterRunStatus.SUCCESS],
                   f"{B[0]}'s run to succeed", timeout=WAIT_SECONDS, interval=0.5)
        wait_until(lambda: all(r.dagster_run.status in ENDED for r in _batch_runs(instance, *A)),
                   f"{A[0]}'s runs to end", timeout=WAIT_SECONDS, interval=0.5)
    a_runs, [b_run] = _batch_runs(instance, *A), _batch_runs(instance, *B)
    assert {r.dagster_run.status for r in a_runs} == {dg.DagsterRunStatus.SUCCESS}
    for record, (tenant_name, dataset_name) in [*((r, A) for r in a_runs), (b_run, B)]:
        tags = record.dagster_run.tags
        vendors = "+".join(sorted(v.name for v in tenants.tenant(tenant_name).dataset(dataset_name).vendors))
        assert tags[layout.TENANT_TAG] == tenant_name and tags[layout.VENDOR_TAG] == vendors
    # B landed after all of A's runs were queued, and still started before A's backlog had all started ...
    assert b_run.create_timestamp.timestamp() > max(r.create_timestamp.timestamp() for r in a_runs)
    assert b_run.start_time < max(r.start_time for r in a_runs)
    # ... because A never held more slots than the per-tenant limit.
    assert _most_at_once(a_runs) <= tenant_limit
