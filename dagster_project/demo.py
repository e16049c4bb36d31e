"""``trainyard demo``: one seeded drop per configured dataset, plus one deliberately bad drop, run by Dagster.

The demo is the quick start and a smoke test of the whole shape: it starts the embedded services (S3, lakeFS,
a Slack receiver), uploads each dataset's gold set and a seeded drop, plus a bad drop that a quality gate must
stop, and runs ``dagster-daemon`` over a local ``DAGSTER_HOME``: the landing sensors register each drop as a
batch partition and launch its run, the blocking gates stop the bad batch, and the alert sensors deliver one
Slack alert for it. The demo waits for all of that, prints what happened from Dagster's records, lakeFS and
the alert outbox, and stops what it started. Running it again finds every batch already processed and prints
the same summary without starting new runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg

from dagster_project import layout
from dagster_project.alerts import AlertKind, AlertOutbox, OutboxStatus, format_blocks
from dagster_project.devservices.dagster_instance import dagster_home, prepare_home, running_daemon, workspace_file
from dagster_project.devservices.local import LocalServices, s3_client
from dagster_project.devservices.sample_data import DropPlan, build_drop, upload_drop, upload_gold_set
from dagster_project.gates import read_gate_results
from dagster_project.lakefs import LakeFSRepository, RefNotFound, settings_client
from dagster_project.layout import Stage
from dagster_project.publishing.approvals import ApprovalStore
from dagster_project.publishing.versions import Version, export_key, find_published_version
from dagster_project.quality.result import GateResult
from dagster_project.settings import Settings
from dagster_project.stages.batch import Batch
from dagster_project.tenants import DatasetConfig, TenantConfig, load_tenants

Target = tuple[TenantConfig, DatasetConfig]

DEMO_DROP = "demo-0001"
BAD_DROP = "demo-0002-bad"
DEMO_RECORDS = 400
RUN_TIMEOUT_SECONDS = 900


def _repo(settings: Settings, tenant: TenantConfig) -> LakeFSRepository:
    return LakeFSRepository(settings_client(settings), tenant.lakefs_repository)


def _published(settings: Settings, tenant: TenantConfig, dataset: DatasetConfig) -> Version | None:
    try:
        return find_published_version(_repo(settings, tenant), dataset.name, DEMO_DROP)
    except RefNotFound:  # the repository does not exist until the first batch starts
        return None


def _latest_run(instance: dg.DagsterInstance, tenant: TenantConfig, dataset: DatasetConfig,
                batch_id: str) -> dg.DagsterRun | None:
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=layout.job_name(tenant.name, dataset.name),
                              tags={"dagster/partition": batch_id}),
        limit=1,
    )
    return runs[0] if runs else None


def bad_drop_plan(tenant: TenantConfig, dataset: DatasetConfig) -> tuple[DropPlan, str]:
    """The deliberately bad drop and the gate that must stop it.

    A dataset declared PII-free gets a drop whose texts leak emails, phone numbers and IBANs: nothing redacts
    them (the policy says there is nothing to redact), so the PII residual gate must block the batch before a
    single task reaches a vendor. Without such a dataset, a drop flooded with duplicates is used instead.
    """
    if dataset.pii_policy == "none":
        return build_drop(tenant, dataset, BAD_DROP, 200, seed=77, plant_defects=False, pii_share=0.5), "pii_residual"
    return build_drop(tenant, dataset, BAD_DROP, 200, seed=77, duplicate_share=0.95), "duplicate_rate"


def pick_bad_target(targets: list[Target]) -> Target:
    return next(((t, d) for t, d in targets if d.pii_policy == "none"), targets[-1])


def _alert_messages(settings: Settings, dataset: DatasetConfig, batch_id: str) -> list:
    outbox = AlertOutbox(settings.resolved_database_url, schema=settings.database_schema)
    try:
        return [m for m in outbox.messages() if m.alert.dataset == dataset.name and m.alert.batch_id == batch_id]
    finally:
        outbox.dispose()


def _bad_batch_done(settings: Settings, instance: dg.DagsterInstance, target: Target) -> bool:
    tenant, dataset = target
    run = _latest_run(instance, tenant, dataset, BAD_DROP)
    if run is None or run.status != dg.DagsterRunStatus.FAILURE:
        return False
    return any(m.status == OutboxStatus.SENT for m in _alert_messages(settings, dataset, BAD_DROP))


ACTIVE_RUNS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def _settled(settings: Settings, s3: Any, instance: dg.DagsterInstance, good: list[Target]) -> bool:
    """Every published demo version has its training manifest in S3 and no run is still going."""
    for tenant, dataset in good:
        try:
            s3.head_object(Bucket=settings.landing_bucket,
                           Key=export_key(tenant.landing_prefix, dataset.name, "latest"))
        except s3.exceptions.ClientError:
            return False
    return not instance.get_run_records(filters=dg.RunsFilter(statuses=ACTIVE_RUNS), limit=1)


def _awaiting_approval(store: ApprovalStore, tenant: TenantConfig, dataset: DatasetConfig) -> str | None:
    """The candidate commit the publish step recorded as waiting for its data owners, if any.

    Trainyard's own record, not the branch head: an ``auto`` batch's head is also a publish candidate for the
    moment between the candidate commit and its merge, and approving it then would be refused.
    """
    return next((p.commit_id for p in store.pending_batches()
                 if (p.tenant, p.dataset, p.batch_id) == (tenant.name, dataset.name, DEMO_DROP)), None)


def approve_as_data_owner(tenant: TenantConfig, dataset: DatasetConfig, commit: str, env: dict[str, str]) -> None:
    """What the data owner does after reading the approval request: the real CLI, as a separate process."""
    owner = tenant.data_owners[0]
    command = [str(Path(sys.executable).parent / "trainyard"), "approve", tenant.name, dataset.name, DEMO_DROP,
               "--commit", commit, "--as", owner, "--reason", "demo: diff and gate results reviewed"]
    print(f"  $ trainyard approve {tenant.name} {dataset.name} {DEMO_DROP} --commit {commit[:12]} --as {owner} "
          "--reason ...", flush=True)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    print("\n".join(f"    {line}" for line in (result.stdout + result.stderr).strip().splitlines()), flush=True)
    if result.returncode != 0:
        raise RuntimeError(f"trainyard approve failed with exit code {result.returncode}")


def _wait(settings: Settings, good: list[Target], bad: Target, env: dict[str, str]) -> None:
    s3 = s3_client(settings)  # one client for the whole wait, not one per poll
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    pending = list(good)
    approved: set[str] = set()
    bad_done = False
    with (dg.DagsterInstance.get() as instance,
          ApprovalStore(settings.resolved_database_url, schema=settings.database_schema) as store):
        # ... and the UI shows where each ended, every version's manifest is exported, and no run is left running
        # (a run worker outliving the services would retry against the next run's S3).
        while pending or not bad_done or store.ledger.unreported() or not _settled(settings, s3, instance, good):
            for tenant, dataset in list(pending):
                if _published(settings, tenant, dataset):
                    print(f"  {tenant.name}/{dataset.name}: batch {DEMO_DROP} is on main", flush=True)
                    pending.remove((tenant, dataset))
                    continue
                key = f"{tenant.name}/{dataset.name}"
                candidate = None if key in approved else _awaiting_approval(store, tenant, dataset)
                if candidate:
                    print(f"  {key}: batch {DEMO_DROP} passed every gate and waits for data-owner approval",
                          flush=True)
                    approve_as_data_owner(tenant, dataset, candidate, env)
                    approved.add(key)
                    continue
                run = _latest_run(instance, tenant, dataset, DEMO_DROP)
                if run is not None and run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
                    raise RuntimeError(f"run {run.run_id} for {tenant.name}/{dataset.name} ended {run.status.value};"
                                       f" inspect it with `make dev` (DAGSTER_HOME={dagster_home(settings)})")
            if not bad_done and _bad_batch_done(settings, instance, bad):
                print(f"  {bad[0].name}/{bad[1].name}: batch {BAD_DROP} was blocked and on-call was alerted",
                      flush=True)
                bad_done = True
            if time.monotonic() > deadline:
                raise TimeoutError(f"demo batches not finished after {RUN_TIMEOUT_SECONDS}s: "
                                   f"{[f'{t.name}/{d.name}' for t, d in pending]}, bad batch done: {bad_done}, "
                                   f"outcomes not yet in the UI: {len(store.ledger.unreported())}")
            time.sleep(2)


def _stage_metadata(instance: dg.DagsterInstance, tenant: TenantConfig, dataset: DatasetConfig,
                    stage: Stage, batch_id: str) -> dict[str, Any]:
    key = dg.AssetKey([tenant.name, dataset.name, str(stage)])
    result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[batch_id]),
                                             limit=1)
    if not result.records:
        return {}
    materialization = result.records[0].event_log_entry.asset_materialization
    return {name: value.value for name, value in materialization.metadata.items()} if materialization else {}


STAGE_NOTES = {
    Stage.RAW: lambda m: f"records in {m.get('records_in')}, quarantined {m.get('quarantined')}, "
                         f"files {m.get('files')}",
    Stage.CLEAN: lambda m: f"quarantined {m.get('quarantined')}",
    Stage.PII: lambda m: f"{m.get('records_with_pii')} records with PII, {m.get('pii_findings')} findings, "
                         f"quarantined {m.get('quarantined')}",
    Stage.DEDUP: lambda m: f"duplicates {m.get('duplicates')} (in batch {m.get('duplicates_in_batch')}, "
                           f"of main {m.get('duplicates_of_main')})",
    Stage.LABELING_TASKS: lambda m: f"items {m.get('items')} + gold {m.get('gold_items')}, "
                                    f"overlap k={m.get('overlap_k')}",
    Stage.ANNOTATIONS: lambda m: f"annotators {m.get('annotators')}, cost ${m.get('labeling_cost_usd', 0):.2f}",
    Stage.CONSOLIDATED_LABELS: lambda m: f"mean confidence {m.get('mean_confidence')}",
    Stage.PUBLISHED: lambda m: f"status {m.get('status')}",
}


def _number(value: float) -> str:
    return f"{value:.4g}"


def _gate_lines(gates: list[GateResult]) -> list[str]:
    return [f"  gate {g.name:<24} {_number(g.value):>7} {g.comparison.value} {_number(g.threshold)}  "
            f"{'PASSED' if g.passed else 'FAILED'} (n={g.sample_size})" for g in gates]


def _stage_table(instance: dg.DagsterInstance, tenant: TenantConfig, dataset: DatasetConfig,
                 batch_id: str) -> list[str]:
    run = _latest_run(instance, tenant, dataset, batch_id)
    lines = [f"  dagster run {run.run_id if run else '-'}  ({run.status.value if run else 'no run'})",
             f"  {'stage':<22}{'rows':>8}   notes"]
    for stage in Stage:
        metadata = _stage_metadata(instance, tenant, dataset, stage, batch_id)
        rows = metadata.get("dagster/row_count", "-")
        lines.append(f"  {stage.value:<22}{rows!s:>8}   {STAGE_NOTES[stage](metadata) if metadata else ''}")
    return lines


def summary_lines(settings: Settings, tenant: TenantConfig, dataset: DatasetConfig) -> list[str]:
    published = _published(settings, tenant, dataset)
    if published is None:
        return [f"{tenant.name}/{dataset.name}: batch {DEMO_DROP} was not published"]
    tag, main_commit = published.tag, published.commit_id
    summary = _repo(settings, tenant).get_json(main_commit, layout.batch_summary_path(dataset.name, DEMO_DROP)) or {}
    branch = layout.batch_branch(dataset.name, DEMO_DROP)
    lines = [f"{tenant.name} / {dataset.name}   batch {DEMO_DROP}   branch {branch}"]
    with dg.DagsterInstance.get() as instance:
        lines += _stage_table(instance, tenant, dataset, DEMO_DROP)
    reasons = summary.get("quarantine_reasons", {})
    lines.append(f"  quarantined ({sum(reasons.values())}):")
    lines += [f"    {count:>5}  {reason}" for reason, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
    lines += _gate_lines([GateResult.model_validate(g) for g in summary.get("gates", [])])
    c = summary.get("conservation", {})
    lines.append(f"  conservation: records in {c.get('records_in')} = published {c.get('published')} + quarantined "
                 f"{c.get('quarantined')} + duplicates {c.get('duplicates')}  "
                 f"{'balanced' if c.get('balanced') else 'NOT BALANCED'}")
    lines.append(f"  main: commit {main_commit}  tag {tag}")
    if dataset.publish.policy == "owner":
        lines += _approval_lines(settings, tenant, dataset)
    return lines


def _approval_lines(settings: Settings, tenant: TenantConfig, dataset: DatasetConfig) -> list[str]:
    lines = []
    for message in _alert_messages(settings, dataset, DEMO_DROP):
        if message.kind == AlertKind.APPROVAL_REQUESTED:
            text, _ = format_blocks(message.alert)
            lines.append(f"  slack {message.channel} [{message.status.value}]: {text.splitlines()[0]}")
    with ApprovalStore(settings.resolved_database_url, schema=settings.database_schema) as store:
        for record in store.history(tenant.name, dataset.name, DEMO_DROP):
            lines.append(f"  {record.verdict.value}d by {record.actor} on commit {record.commit_id} "
                         f"({record.reason})")
    return lines


def blocked_summary_lines(settings: Settings, tenant: TenantConfig, dataset: DatasetConfig) -> list[str]:
    branch = layout.batch_branch(dataset.name, BAD_DROP)
    lines = [f"{tenant.name} / {dataset.name}   batch {BAD_DROP}   branch {branch}   (deliberately bad drop)"]
    with dg.DagsterInstance.get() as instance:
        lines += _stage_table(instance, tenant, dataset, BAD_DROP)
    batch = Batch(tenant, dataset, BAD_DROP, _repo(settings, tenant))
    lines += _gate_lines(sorted(read_gate_results(batch), key=lambda g: (g.passed, g.name)))
    on_main = find_published_version(batch.repo, dataset.name, BAD_DROP)
    lines.append(f"  main: {'REACHED MAIN' if on_main else 'untouched (the batch stays on its branch)'}")
    for message in _alert_messages(settings, dataset, BAD_DROP):
        if message.kind != AlertKind.GATE_FAILED:
            continue
        text, _ = format_blocks(message.alert)
        lines.append(f"  slack {message.channel} [{message.status.value}]: {text.splitlines()[0]}")
        lines += [f"      {line}" for line in text.splitlines()[1:]]
    return lines


def run_demo(settings: Settings | None = None) -> int:
    settings = settings or Settings()
    env = prepare_home(settings)
    os.environ.update({k: env[k] for k in ("DAGSTER_HOME", "TRAINYARD_HOME", "TRAINYARD_TENANTS_FILE")})
    targets = load_tenants(settings.tenants_file).datasets()
    bad = pick_bad_target(targets)
    log_path = settings.home.resolve() / "logs" / "demo-daemon.log"
    print(f"Trainyard demo: {len(targets)} dataset(s); DAGSTER_HOME={env['DAGSTER_HOME']}", flush=True)
    with LocalServices(settings) as services:
        print(f"  services: S3 {services.s3.url if services.s3 else '-'}, lakeFS {settings.lakefs_api_url}, "
              f"Slack {settings.slack_base_url}", flush=True)
        s3 = s3_client(settings)
        for seed, (tenant, dataset) in enumerate(targets, start=1):
            upload_gold_set(s3, settings.landing_bucket, tenant, dataset, unchanged_ok=True)
            plan = build_drop(tenant, dataset, DEMO_DROP, DEMO_RECORDS, seed=seed)
            upload_drop(s3, settings.landing_bucket, plan, unchanged_ok=True)  # S3 keeps them across runs
            print(f"  uploaded s3://{settings.landing_bucket}/{plan.drop_prefix} ({plan.records} rows, "
                  f"{plan.unparsable} unparsable, {plan.invalid} invalid, {plan.duplicates} duplicates, "
                  f"{plan.with_pii} with PII) and a gold set", flush=True)
        bad_plan, bad_gate = bad_drop_plan(*bad)
        upload_drop(s3, settings.landing_bucket, bad_plan, unchanged_ok=True)
        print(f"  uploaded s3://{settings.landing_bucket}/{bad_plan.drop_prefix} -- a bad drop the {bad_gate} gate "
              f"must stop", flush=True)
        with dg.DagsterInstance.get() as instance:
            done = all(_published(settings, t, d) for t, d in targets) and _bad_batch_done(settings, instance, bad)
        if done:
            print("  every demo batch is already processed: nothing new for the sensors (idempotent re-run)")
        else:
            print("  starting dagster-daemon; the landing sensors will pick the drops up ...", flush=True)
            with running_daemon(workspace_file(settings), env, log_path):
                _wait(settings, targets, bad, env)
            if services.slack is not None:
                print(f"  the Slack receiver got {len(services.slack.messages)} message(s)", flush=True)
        print()
        for tenant, dataset in targets:
            print("\n".join(summary_lines(settings, tenant, dataset)))
            print()
        print("\n".join(blocked_summary_lines(settings, *bad)))
        print()
    print("Inspect the runs, checks and metadata in the Dagster UI: make dev  (http://127.0.0.1:3000)")
    return 0
