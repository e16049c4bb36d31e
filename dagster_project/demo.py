"""``trainyard demo``: one seeded drop per configured dataset, picked up by the Dagster sensor and run by Dagster.

The demo is the quick start and a smoke test of the whole shape: it starts the embedded services, uploads
the drops, runs ``dagster-daemon`` over a local ``DAGSTER_HOME`` so the landing sensor registers each drop
as a batch partition and launches its run, waits for every batch to reach lakeFS ``main``, prints what
happened from Dagster's own records and lakeFS, and stops what it started. Running it again finds the
batches already published and prints the same summary without starting new runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
from lakefs_sdk.exceptions import ApiException

from dagster_project import layout, pipeline
from dagster_project.devservices.local import LocalServices, s3_client
from dagster_project.lakefs_repo import LakeFSRepository, api_client
from dagster_project.layout import Stage
from dagster_project.sample_data import build_drop, upload_drop
from dagster_project.settings import Settings
from dagster_project.tenants import DatasetConfig, TenantConfig, load_tenants

DEMO_DROP = "demo-0001"
DEMO_RECORDS = 400
DEMO_SENSOR_INTERVAL_SECONDS = 5
RUN_TIMEOUT_SECONDS = 900
DAGSTER_YAML = """\
# Written by `trainyard demo`: the quick start's local instance (SQLite under this directory).
# Shared deployments use infra/dagster.yaml (PostgreSQL).
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 2
"""


def dagster_home(settings: Settings) -> Path:
    return settings.home.resolve() / "dagster"


def prepare_home(settings: Settings) -> dict[str, str]:
    """Create the local DAGSTER_HOME and workspace; return the environment for child processes."""
    home = dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    (home / "workspace.yaml").write_text("load_from:\n  - python_module: dagster_project.definitions\n")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "TRAINYARD_HOME": str(settings.home.resolve()),
        "TRAINYARD_TENANTS_FILE": str(Path(settings.tenants_file).resolve()),
    }


def _repo(settings: Settings, tenant: TenantConfig) -> LakeFSRepository:
    client = api_client(settings.lakefs_api_url, settings.lakefs_access_key_id,
                        settings.lakefs_secret_access_key.get_secret_value())
    return LakeFSRepository(client, tenant.lakefs_repository)


def _published(settings: Settings, tenant: TenantConfig, dataset: DatasetConfig) -> tuple[str, str] | None:
    try:
        return pipeline.find_published_version(_repo(settings, tenant), dataset.name, DEMO_DROP)
    except ApiException as exc:
        if exc.status == 404:  # the repository does not exist until the first batch starts
            return None
        raise


def _latest_run(instance: dg.DagsterInstance, tenant: TenantConfig, dataset: DatasetConfig) -> dg.DagsterRun | None:
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=layout.job_name(tenant.name, dataset.name),
                              tags={"dagster/partition": DEMO_DROP}),
        limit=1,
    )
    return runs[0] if runs else None


def _wait_for_batches(settings: Settings, datasets: list[tuple[TenantConfig, DatasetConfig]]) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    pending = list(datasets)
    with dg.DagsterInstance.get() as instance:
        while pending:
            for tenant, dataset in list(pending):
                if _published(settings, tenant, dataset):
                    print(f"  {tenant.name}/{dataset.name}: batch {DEMO_DROP} is on main", flush=True)
                    pending.remove((tenant, dataset))
                    continue
                run = _latest_run(instance, tenant, dataset)
                if run is not None and run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
                    raise RuntimeError(f"run {run.run_id} for {tenant.name}/{dataset.name} ended {run.status.value};"
                                       f" inspect it with `make dev` (DAGSTER_HOME={dagster_home(settings)})")
            if pending and time.monotonic() > deadline:
                names = ", ".join(f"{t.name}/{d.name}" for t, d in pending)
                raise TimeoutError(f"no published batch for {names} after {RUN_TIMEOUT_SECONDS}s")
            time.sleep(2)


def _stage_metadata(instance: dg.DagsterInstance, tenant: TenantConfig, dataset: DatasetConfig,
                    stage: Stage) -> dict[str, Any]:
    key = dg.AssetKey([tenant.name, dataset.name, str(stage)])
    result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[DEMO_DROP]),
                                             limit=1)
    if not result.records:
        return {}
    materialization = result.records[0].event_log_entry.asset_materialization
    return {name: value.value for name, value in materialization.metadata.items()} if materialization else {}


STAGE_NOTES = {
    Stage.RAW: lambda m: f"records in {m.get('records_in')}, quarantined {m.get('quarantined')}, "
                         f"files {m.get('files')}",
    Stage.CLEAN: lambda m: f"quarantined {m.get('quarantined')}",
    Stage.DEDUP: lambda m: f"duplicates {m.get('duplicates')} (in batch {m.get('duplicates_in_batch')}, "
                           f"of main {m.get('duplicates_of_main')})",
    Stage.LABELING_TASKS: lambda m: f"items {m.get('items')} x overlap k={m.get('overlap_k')}",
    Stage.ANNOTATIONS: lambda m: f"annotators {m.get('annotators')}, cost ${m.get('labeling_cost_usd', 0):.2f}",
    Stage.CONSOLIDATED_LABELS: lambda m: f"mean confidence {m.get('mean_confidence')}",
    Stage.PUBLISHED: lambda m: f"status {m.get('status')}",
}


def summary_lines(settings: Settings, tenant: TenantConfig, dataset: DatasetConfig) -> list[str]:
    published = _published(settings, tenant, dataset)
    if published is None:
        return [f"{tenant.name}/{dataset.name}: batch {DEMO_DROP} was not published"]
    tag, main_commit = published
    repo = _repo(settings, tenant)
    summary = repo.get_json(main_commit, layout.batch_summary_path(dataset.name, DEMO_DROP)) or {}
    branch = layout.batch_branch(dataset.name, DEMO_DROP)
    lines = [f"{tenant.name} / {dataset.name}   batch {DEMO_DROP}   branch {branch}"]
    with dg.DagsterInstance.get() as instance:
        run = _latest_run(instance, tenant, dataset)
        lines.append(f"  dagster run {run.run_id if run else '-'}  ({run.status.value if run else 'no run'})")
        lines.append(f"  {'stage':<22}{'rows':>8}   notes")
        for stage in Stage:
            metadata = _stage_metadata(instance, tenant, dataset, stage)
            rows = metadata.get("dagster/row_count", "-")
            lines.append(f"  {stage.value:<22}{rows!s:>8}   {STAGE_NOTES[stage](metadata) if metadata else ''}")
    reasons = summary.get("quarantine_reasons", {})
    lines.append(f"  quarantined ({sum(reasons.values())}):")
    lines += [f"    {count:>5}  {reason}" for reason, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
    for gate in summary.get("gates", []):
        verdict = "PASSED" if gate["passed"] else "FAILED"
        lines.append(f"  gate {gate['gate']}: {gate['value']:.4f} {gate['comparison']} {gate['threshold']}  "
                     f"{verdict} (n={gate['sample_size']})")
    c = summary.get("conservation", {})
    lines.append(f"  conservation: records in {c.get('records_in')} = published {c.get('published')} + quarantined "
                 f"{c.get('quarantined')} + duplicates {c.get('duplicates')}  "
                 f"{'balanced' if c.get('balanced') else 'NOT BALANCED'}")
    lines.append(f"  main: commit {main_commit}  tag {tag}")
    return lines


def run_demo(settings: Settings | None = None) -> int:
    settings = settings or Settings()
    env = prepare_home(settings)
    env["TRAINYARD_SENSOR_INTERVAL_SECONDS"] = str(DEMO_SENSOR_INTERVAL_SECONDS)
    os.environ.update({k: env[k] for k in ("DAGSTER_HOME", "TRAINYARD_HOME", "TRAINYARD_TENANTS_FILE")})
    datasets = load_tenants(settings.tenants_file).datasets()
    log_path = settings.home.resolve() / "logs" / "demo-daemon.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"Trainyard demo: {len(datasets)} dataset(s); DAGSTER_HOME={env['DAGSTER_HOME']}", flush=True)
    with LocalServices(settings) as services:
        print(f"  services: S3 {services.s3.url if services.s3 else '-'}, lakeFS {settings.lakefs_api_url}", flush=True)
        s3 = s3_client(settings)
        for seed, (tenant, dataset) in enumerate(datasets, start=1):
            plan = build_drop(tenant, dataset, DEMO_DROP, DEMO_RECORDS, seed=seed)
            upload_drop(s3, settings.landing_bucket, plan)
            print(f"  uploaded s3://{settings.landing_bucket}/{plan.drop_prefix} ({plan.records} rows, "
                  f"{plan.unparsable} unparsable, {plan.invalid} invalid, {plan.duplicates} duplicates, "
                  f"{plan.with_pii} with PII)", flush=True)
        if all(_published(settings, t, d) for t, d in datasets):
            print("  every demo batch is already on main: nothing new for the sensor (idempotent re-run)")
        else:
            daemon_cmd = [str(Path(sys.executable).parent / "dagster-daemon"), "run",
                          "-w", str(dagster_home(settings) / "workspace.yaml")]
            print("  starting dagster-daemon; the landing sensors will pick the drops up ...", flush=True)
            with open(log_path, "ab") as log:
                daemon = subprocess.Popen(daemon_cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
                try:
                    _wait_for_batches(settings, datasets)
                finally:
                    daemon.terminate()
                    try:
                        daemon.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        daemon.kill()
        print()
        for tenant, dataset in datasets:
            print("\n".join(summary_lines(settings, tenant, dataset)))
            print()
    print("Inspect the runs, checks and metadata in the Dagster UI: make dev  (http://127.0.0.1:3000)")
    return 0
