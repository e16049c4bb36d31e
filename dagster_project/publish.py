"""Publishing a batch: reconcile every record, commit the batch with its lineage and gate results, and merge it
into ``main`` as the dataset's next version -- only when every blocking gate passed on that branch.

The blocking asset checks already stop the Dagster run before this step; the publish step checks the gate
results recorded on the branch again, so no path around Dagster (a re-execution, a manual call) can merge a
batch whose gates failed or never ran.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import lakefs_sdk
import pandas as pd
from lakefs_sdk.exceptions import NotFoundException

from dagster_project import layout
from dagster_project.alerts import Alert, AlertKind, playbook_url
from dagster_project.conservation import ConservationError, ConservationReport, reconcile
from dagster_project.dedup import index_entries
from dagster_project.gatekeeper import touches_actions
from dagster_project.gates import blocking_gate_names, read_gate_results
from dagster_project.governance import ApprovalState, ApprovalStore, Verdict, rejected_batches
from dagster_project.lakefs_repo import LakeFSRepository
from dagster_project.layout import Stage
from dagster_project.pipeline import (
    DUPLICATES_FILE,
    Batch,
    all_quarantine,
    build_published,
    reason_counts,
    write_stage,
)
from dagster_project.tenants import TenantsConfig
from dagster_project.versions import diff_published


class PublishRefused(RuntimeError):
    """The batch may not reach main (a gate failed or was never evaluated)."""


@dataclass
class PublishOutcome:
    status: str  # "published" | "already_published" | "awaiting_approval" | "rejected"
    batch_commit: str
    conservation: ConservationReport | None
    main_commit: str | None = None
    version_tag: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def find_published_version(repo: LakeFSRepository, dataset: str, batch_id: str) -> tuple[str, str] | None:
    """(tag, commit id) of the version that published this batch, if any."""
    for tag in repo.iter_tags(prefix=f"{dataset}/v"):
        if repo.get_commit(tag.commit_id).metadata.get("trainyard.batch_id") == batch_id:
            return tag.id, tag.commit_id
    return None


def next_version(repo: LakeFSRepository, dataset: str) -> int:
    versions = [int(t.id.rsplit("/v", 1)[1]) for t in repo.iter_tags(prefix=f"{dataset}/v")
                if t.id.rsplit("/v", 1)[1].isdigit()]
    return max(versions, default=0) + 1


def check_gates(batch: Batch) -> list[dict[str, Any]]:
    """The recorded gate results, or PublishRefused naming the gates that failed or never ran."""
    results = read_gate_results(batch)
    recorded = {g["name"]: g for g in results}
    failed = [name for name in blocking_gate_names() if name in recorded and not recorded[name]["passed"]]
    missing = [name for name in blocking_gate_names() if name not in recorded]
    if failed or missing:
        problems = ([f"gates failed: {', '.join(failed)}"] if failed else []) + (
            [f"gates not evaluated: {', '.join(missing)}"] if missing else [])
        raise PublishRefused(f"batch {batch.batch_id}: {'; '.join(problems)}")
    return results


def run_publish(batch: Batch, store: ApprovalStore | None = None) -> PublishOutcome:
    """Reconcile, commit the batch with its lineage and gate results, and merge it into main if policy allows."""
    already = find_published_version(batch.repo, batch.dataset.name, batch.batch_id)
    if already is not None:
        tag, commit_id = already
        summary = batch.repo.get_json(commit_id, layout.batch_summary_path(batch.dataset.name, batch.batch_id)) or {}
        return PublishOutcome("already_published", batch.repo.branch_head(batch.branch), None, commit_id, tag, summary)

    gates = check_gates(batch)
    raw = batch.read(Stage.RAW)
    quarantine = all_quarantine(batch)
    raw_quarantine = quarantine[quarantine["stage"] == Stage.RAW]
    duplicates = batch.read(Stage.DEDUP, DUPLICATES_FILE)
    published = build_published(batch)
    report = reconcile(pd.concat([raw["record_id"], raw_quarantine["record_id"]], ignore_index=True),
                       published["record_id"], quarantine["record_id"], duplicates["record_id"])
    if not report.balanced:
        raise ConservationError(f"batch {batch.batch_id} does not reconcile: {report.describe()}")

    write_stage(batch, Stage.PUBLISHED, published)
    batch.repo.put_frame(batch.branch, layout.dedup_index_path(batch.dataset.name, batch.batch_id),
                         index_entries(published))
    summary = {
        "tenant": batch.tenant.name, "dataset": batch.dataset.name, "batch_id": batch.batch_id,
        "conservation": report.as_dict(),
        "quarantine_reasons": reason_counts(quarantine),
        "label_distribution": {str(k): int(v) for k, v in published["label"].value_counts().sort_index().items()},
        "gates": gates,
    }
    batch.repo.put_json(batch.branch, layout.batch_summary_path(batch.dataset.name, batch.batch_id), summary)
    lineage = {**report.as_dict(), "gates": json.dumps(
        {g["name"]: {"value": g["value"], "threshold": g["threshold"], "passed": g["passed"]} for g in gates},
        sort_keys=True)}
    batch_commit = batch.commit(Stage.PUBLISHED, "publish candidate", lineage)
    if store is not None:  # the record the gatekeeper checks before letting this commit into main
        store.record_candidate(batch.tenant.name, batch.dataset.name, batch.batch_id, batch_commit,
                               json.loads(lineage["gates"]))
    if batch.dataset.publish.policy != "auto":
        return PublishOutcome("awaiting_approval", batch_commit, report, summary=summary)
    main_commit, tag = merge_batch(batch, lineage)
    return PublishOutcome("published", batch_commit, report, main_commit, tag, summary)


MERGE_LOOKBACK = 1000
"""How many recent commits of main are searched for an untagged merge of a batch."""


def merged_commit(batch: Batch) -> str | None:
    """The merge commit on main that published this batch, if one exists (tagged or not)."""
    for commit in batch.repo.log(layout.MAIN_BRANCH, amount=MERGE_LOOKBACK):
        meta = commit.metadata or {}
        if len(commit.parents) == 2 and meta.get("trainyard.batch_id") == batch.batch_id and \
                meta.get("trainyard.dataset") == batch.dataset.name:
            return commit.id
    return None


def merge_batch(batch: Batch, lineage: dict[str, Any]) -> tuple[str, str]:
    """Merge the batch branch into main and tag the result as the dataset's next version."""
    touched = touches_actions(batch.repo, batch.branch)
    if touched:
        raise PublishRefused(f"batch {batch.batch_id} changes {', '.join(touched)}; action files never change "
                             "through a batch")
    metadata = {"trainyard.tenant": batch.tenant.name, "trainyard.dataset": batch.dataset.name,
                "trainyard.batch_id": batch.batch_id, "trainyard.dagster_run_id": batch.run_id,
                **{f"trainyard.{k}": str(v) for k, v in lineage.items()}}
    # A run that died between merging and tagging left the merge on main: tag that commit, never merge twice.
    main_commit = merged_commit(batch) or batch.repo.merge(
        batch.branch, layout.MAIN_BRANCH, f"publish {batch.dataset.name} batch {batch.batch_id}", metadata)
    while True:  # another dataset may take a version number between our read and our create
        tag = layout.version_tag(batch.dataset.name, next_version(batch.repo, batch.dataset.name))
        if batch.repo.create_tag(tag, main_commit):
            return main_commit, tag


# -- owner approval ---------------------------------------------------------------------------------------------
class NotAwaitingApproval(RuntimeError):
    """The batch has no publish candidate to decide on (not processed yet, gates failed, or already on main)."""


def publish_candidate(batch: Batch) -> lakefs_sdk.Commit:
    """The branch head, if it is the batch's publish candidate (committed by the publish step, gates passed)."""
    try:
        head = batch.repo.get_commit(batch.repo.branch_head(batch.branch))
    except NotFoundException as exc:
        raise NotAwaitingApproval(f"batch {batch.batch_id}: branch {batch.branch} does not exist") from exc
    if head.metadata.get("trainyard.stage") != Stage.PUBLISHED or head.metadata.get("trainyard.batch_id") != \
            batch.batch_id:
        raise NotAwaitingApproval(
            f"{batch.tenant.name}/{batch.dataset.name} batch {batch.batch_id}: branch {batch.branch} head "
            f"{head.id[:12]} is not a publish candidate (stage {head.metadata.get('trainyard.stage', '-')}); "
            "only batches whose gates passed and that wait for approval can be approved")
    return head


def decide(batch: Batch, store: ApprovalStore, actor: str, verdict: Verdict, reason: str = "") -> ApprovalState:
    """Record a data owner's decision on the batch's current publish candidate."""
    if find_published_version(batch.repo, batch.dataset.name, batch.batch_id) is not None:
        raise NotAwaitingApproval(f"batch {batch.batch_id} is already on main")
    head = publish_candidate(batch)
    store.decide(batch.tenant, batch.dataset, batch.batch_id, head.id, actor, verdict, reason)
    return store.state(batch.tenant, batch.dataset, batch.batch_id, head.id)


def merge_if_approved(batch: Batch, store: ApprovalStore) -> PublishOutcome:
    """Merge an owner-policy batch once enough data owners approved its current head commit."""
    already = find_published_version(batch.repo, batch.dataset.name, batch.batch_id)
    if already is not None:
        return PublishOutcome("already_published", batch.repo.branch_head(batch.branch), None, already[1],
                              already[0])
    head = publish_candidate(batch)
    check_gates(batch)
    state = store.state(batch.tenant, batch.dataset, batch.batch_id, head.id)
    if state.rejected:
        return PublishOutcome("rejected", head.id, None)
    if not state.approved:
        return PublishOutcome("awaiting_approval", head.id, None)
    lineage = {k.removeprefix("trainyard."): v for k, v in head.metadata.items()
               if k.removeprefix("trainyard.") in ("records_in", "published", "quarantined", "duplicates",
                                                   "balanced", "gates")}
    lineage["approved_by"] = ",".join(state.approvers)
    lineage["approved_commit"] = head.id
    main_commit, tag = merge_batch(batch, lineage)
    return PublishOutcome("published", head.id, None, main_commit, tag)


def approval_request(batch: Batch, outcome: PublishOutcome, playbook_base_url: str, run_url: str | None) -> Alert:
    """The message the data owners get: what the batch changes on main, its gates, and the exact commands."""
    diff = diff_published(batch.repo, batch.dataset.name, layout.MAIN_BRANCH, batch.branch)
    where = f"{batch.tenant.name} {batch.dataset.name} {batch.batch_id}"
    gates = [f"{g['name']}: {g['value']} {g['comparison']} {g['threshold']} "
             f"{'passed' if g['passed'] else 'FAILED'}" for g in outcome.summary.get("gates", [])]
    label_changes = [f"{label}: {int(r.left)} -> {int(r.right)} ({int(r.change):+d})"
                     for label, r in diff.label_counts.iterrows() if r.change]
    required = batch.dataset.publish.required_approvals
    return Alert(
        kind=AlertKind.APPROVAL_REQUESTED, tenant=batch.tenant.name, dataset=batch.dataset.name,
        batch_id=batch.batch_id, branch=batch.branch,
        title=f"{batch.tenant.name}/{batch.dataset.name} batch {batch.batch_id} awaits approval "
              f"({required} data owner{'s' if required > 1 else ''})",
        metric="records_added", value=float(diff.added),
        details={
            "diff_vs_main": f"+{diff.added} records, -{diff.removed} removed, {diff.relabelled} relabelled",
            "commit": outcome.batch_commit,
            "approve": f"trainyard approve {where} --as <your email>",
            "reject": f"trainyard reject {where} --as <your email> --reason '<why>'",
            "label_changes": label_changes or ["no change in the label distribution"],
            "gates": gates,
        },
        dedupe_key=f"approval_requested:{batch.tenant.name}:{batch.dataset.name}:{batch.batch_id}",
        playbook_url=playbook_url(AlertKind.APPROVAL_REQUESTED, playbook_base_url), run_url=run_url,
        channel=batch.tenant.approvals_channel,
    )


def cleanup_rejected_branches(store: ApprovalStore, tenants: TenantsConfig,
                              repo_for: Callable[[str], LakeFSRepository], retention: timedelta,
                              now: datetime | None = None) -> list[str]:
    """Delete branches of batches rejected more than ``retention`` ago (kept until then for forensics).

    The approvals audit table keeps the decision forever; only the branch data goes.
    """
    cutoff = (now or datetime.now(UTC)) - retention
    deleted = []
    for record in rejected_batches(store, cutoff):
        try:
            tenant = tenants.tenant(record.tenant)
        except KeyError:
            continue
        branch = layout.batch_branch(record.dataset, record.batch_id)
        if repo_for(tenant.lakefs_repository).delete_branch(branch):
            deleted.append(f"{tenant.lakefs_repository}/{branch}")
    return deleted
