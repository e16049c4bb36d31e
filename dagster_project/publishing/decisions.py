"""Data-owner decisions on a batch that passed its gates: approve or reject its publish candidate, merge it once
approved, ask the owners for a decision, and clean up after rejections.

The decision itself is recorded by :class:`~dagster_project.publishing.approvals.ApprovalStore`, bound to the
candidate commit; everything here reads the batch branch through the lakeFS port, so it is unit-tested against
the in-memory fake.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from dagster_project import layout
from dagster_project.alerts import Alert, AlertKind, playbook_url
from dagster_project.gates import sentence
from dagster_project.lakefs import Commit, LakeFSPort, RefNotFound
from dagster_project.lakefs.metadata import PUBLISHED_STAGE, CommitMetadata
from dagster_project.publishing.approvals import ApprovalState, ApprovalStore, Verdict, rejected_batches
from dagster_project.publishing.ledger import BatchOutcome, BatchState
from dagster_project.publishing.publish import PublishOutcome, check_gates, merge_batch, record_if_ours
from dagster_project.publishing.versions import diff_published, find_published_version
from dagster_project.stages.batch import Batch
from dagster_project.tenants import TenantsConfig


class NotAwaitingApproval(RuntimeError):
    """The batch has no publish candidate to decide on (not processed yet, gates failed, or already on main)."""


def publish_candidate(batch: Batch) -> tuple[Commit, CommitMetadata]:
    """The branch head, if it is the batch's publish candidate (committed by the publish step, gates passed)."""
    try:
        head = batch.repo.get_commit(batch.repo.branch_head(batch.branch))
    except RefNotFound as exc:
        raise NotAwaitingApproval(f"batch {batch.batch_id}: branch {batch.branch} does not exist") from exc
    meta = CommitMetadata.from_lakefs(head.metadata)
    if meta is None or meta.stage != PUBLISHED_STAGE or meta.batch_id != batch.batch_id:
        raise NotAwaitingApproval(
            f"{batch.tenant.name}/{batch.dataset.name} batch {batch.batch_id}: branch {batch.branch} head "
            f"{head.id[:12]} is not a publish candidate (stage {meta.stage if meta else '-'}); "
            "only batches whose gates passed and that wait for approval can be approved; `trainyard show` says "
            "where it stands, and `trainyard reject` closes out a blocked batch")
    return head, meta


MIN_COMMIT_PREFIX = 12
"""How much of a commit id a data owner must give (the approval request shows the full id)."""


def decide(batch: Batch, store: ApprovalStore, actor: str, verdict: Verdict, reason: str = "",
           commit: str | None = None) -> ApprovalState:
    """Record a data owner's decision on the batch's publish candidate ``commit`` -- the one they reviewed.

    ``commit`` (the full id, or at least its first 12 characters) must still be the branch head: if the branch
    moved since the request was sent, the owner would be deciding on something they have not seen. The CLI and
    the launchpad job require it for approvals; without it (a rejection, which is safe on any commit) the decision
    binds to the current head.
    """
    if find_published_version(batch.repo, batch.dataset.name, batch.batch_id) is not None:
        raise NotAwaitingApproval(f"batch {batch.batch_id} is already on main")
    if verdict == Verdict.REJECT:
        return close_out(batch, store, actor, reason, commit)
    head, _ = publish_candidate(batch)
    if commit is not None:
        if len(commit) < MIN_COMMIT_PREFIX:
            raise ValueError(f"the commit needs at least {MIN_COMMIT_PREFIX} characters of its id, got {commit!r}")
        if not head.id.startswith(commit.lower()):
            raise NotAwaitingApproval(f"batch {batch.batch_id}: you reviewed commit {commit}, but the publish "
                                      f"candidate is now {head.id[:12]}; read the new approval request first")
    store.decide(batch.tenant, batch.dataset, batch.batch_id, head.id, actor, verdict, reason)
    state = store.state(batch.tenant, batch.dataset, batch.batch_id, head.id)
    if not state.rejected:  # back on the merge sensor's list, e.g. an owner who rejected now approves
        store.mark_pending(batch.tenant.name, batch.dataset.name, batch.batch_id, head.id)
    return state


def close_out(batch: Batch, store: ApprovalStore, actor: str, reason: str, commit: str | None = None) -> ApprovalState:
    """Reject the batch as it stands -- a publish candidate, a batch a gate blocked (whose branch may hold PII), or
    one still running: the decision is recorded like any other, the batch is never merged (a running ``auto``
    batch stops at its merge, :func:`~dagster_project.publishing.publish.refuse_if_rejected`), and its branch goes
    after the retention period like every rejected batch's."""
    try:
        head_id = batch.repo.branch_head(batch.branch)
    except RefNotFound as exc:
        raise NotAwaitingApproval(f"batch {batch.batch_id}: branch {batch.branch} does not exist (never processed, "
                                  "or already cleaned up)") from exc
    if commit is not None and len(commit) < MIN_COMMIT_PREFIX:
        raise ValueError(f"the commit needs at least {MIN_COMMIT_PREFIX} characters of its id, got {commit!r}")
    if commit is not None and not head_id.startswith(commit.lower()):
        raise NotAwaitingApproval(f"batch {batch.batch_id}: you reviewed commit {commit}, but the branch is now at "
                                  f"{head_id[:12]}; look at it again first")
    previous = store.ledger.get(batch.tenant.name, batch.dataset.name, batch.batch_id)
    # Under the lock merges take: a merge in flight finishes first (and then the batch is on main), or sees this.
    with store.publish_lock(batch.tenant.name, batch.dataset.name):
        if find_published_version(batch.repo, batch.dataset.name, batch.batch_id) is not None:
            raise NotAwaitingApproval(f"batch {batch.batch_id} is already on main")
        store.decide(batch.tenant, batch.dataset, batch.batch_id, head_id, actor, Verdict.REJECT, reason)
    store.clear_pending(batch.tenant.name, batch.dataset.name, batch.batch_id)
    was = f" (was {previous.state.value}: {previous.reason})" if previous else ""
    store.ledger.record(BatchOutcome(batch.tenant.name, batch.dataset.name, batch.batch_id, BatchState.REJECTED,
                                     f"rejected by {actor.lower()}: {reason}{was}"[:1000], stage=previous.stage
                                     if previous else None, commit_id=head_id, actor=actor.lower()))
    return store.state(batch.tenant, batch.dataset, batch.batch_id, head_id)


def merge_if_approved(batch: Batch, store: ApprovalStore) -> PublishOutcome:
    """Merge an owner-policy batch once enough data owners approved its current head commit."""
    already = find_published_version(batch.repo, batch.dataset.name, batch.batch_id)
    if already is not None:
        record_if_ours(batch, store, already)
        store.clear_pending(batch.tenant.name, batch.dataset.name, batch.batch_id)
        return PublishOutcome("already_published", batch.repo.branch_head(batch.branch), None, already.commit_id,
                              already.tag)
    head, candidate = publish_candidate(batch)
    check_gates(batch)
    state = store.state(batch.tenant, batch.dataset, batch.batch_id, head.id)
    if state.rejected:
        store.clear_pending(batch.tenant.name, batch.dataset.name, batch.batch_id)
        return PublishOutcome("rejected", head.id, None)
    if not state.approved:
        return PublishOutcome("awaiting_approval", head.id, None)
    main_commit, tag = merge_batch(batch, candidate, approved_by=state.approvers, approved_commit=head.id,
                                   commit=head.id, store=store)
    store.clear_pending(batch.tenant.name, batch.dataset.name, batch.batch_id)
    return PublishOutcome("published", head.id, None, main_commit, tag, approved_by=state.approvers)


def approval_request(batch: Batch, outcome: PublishOutcome, playbook_base_url: str, run_url: str | None) -> Alert:
    """The message the data owners get: what the batch changes on main, its gates, and the exact commands."""
    diff = diff_published(batch.repo, batch.dataset.name, layout.MAIN_BRANCH, batch.branch)
    where = f"{batch.tenant.name} {batch.dataset.name} {batch.batch_id}"
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
            "approve": f"trainyard approve {where} --commit {outcome.batch_commit} --as <your email>",
            "reject": f"trainyard reject {where} --commit {outcome.batch_commit} --as <your email> --reason '<why>'",
            "label_changes": label_changes or ["no change in the label distribution"],
            "gates": [sentence(g) for g in outcome.gates],
        },
        # One request per candidate commit: a new candidate of the same batch is a new thing to review.
        dedupe_key=f"approval_requested:{batch.tenant.name}:{batch.dataset.name}:{batch.batch_id}:"
                   f"{outcome.batch_commit[:12]}",
        playbook_url=playbook_url(AlertKind.APPROVAL_REQUESTED, playbook_base_url), run_url=run_url,
        channel=batch.tenant.approvals_channel,
    )


def cleanup_rejected_branches(store: ApprovalStore, tenants: TenantsConfig, repo_for: Callable[[str], LakeFSPort],
                              retention: timedelta, now: datetime | None = None) -> list[str]:
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
