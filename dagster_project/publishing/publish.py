"""Publishing a batch: reconcile every record, commit the batch with its lineage and gate results, and merge it
into ``main`` as the dataset's next version -- only when every blocking gate passed on that branch.

The blocking asset checks already stop the Dagster run before this step; the publish step checks the gate
results recorded on the branch again, so no path around Dagster (a re-execution, a manual call) can merge a
batch whose gates failed or never ran.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dagster_project import layout
from dagster_project.alerts import Alert, AlertKind, playbook_url
from dagster_project.conservation import ConservationError, ConservationReport, reconcile
from dagster_project.gates import blocking_gate_names, read_gate_results
from dagster_project.lakefs.metadata import MERGED_STAGE, PUBLISHED_STAGE, CommitMetadata
from dagster_project.layout import Stage
from dagster_project.publishing.approvals import ApprovalStore
from dagster_project.publishing.gatekeeper import touches_actions
from dagster_project.publishing.versions import Version, find_published_version, next_version
from dagster_project.quality.result import GateResult
from dagster_project.stages.batch import DUPLICATES_FILE, Batch, all_quarantine, reason_counts, write_stage
from dagster_project.stages.dedup import SIGNATURES_FILE, as_digests, index_entries
from dagster_project.stages.neardup import SignatureIndex
from dagster_project.stages.rejection import reject_if_empty
from dagster_project.stages.runners import build_published, published_hash_index

CONSERVATION_COUNTS = ("records_in", "published", "quarantined", "duplicates", "balanced")
"""The reconciled counts every publish candidate and merge commit carries."""
MERGE_LOOKBACK = 1000
"""How many recent commits of main are searched for an untagged merge of a batch."""


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
    gates: list[GateResult] = field(default_factory=list)
    approved_by: tuple[str, ...] = ()


def check_gates(batch: Batch) -> list[GateResult]:
    """The recorded gate results, or PublishRefused naming the gates that failed or never ran."""
    results = read_gate_results(batch)
    recorded = {g.name: g for g in results}
    failed = [name for name in blocking_gate_names() if name in recorded and not recorded[name].passed]
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
        if store is not None:
            record_if_ours(batch, store, already)
        summary = batch.repo.get_json(already.commit_id,
                                      layout.batch_summary_path(batch.dataset.name, batch.batch_id)) or {}
        return PublishOutcome("already_published", batch.repo.branch_head(batch.branch), None, already.commit_id,
                              already.tag, summary)

    refuse_if_rejected(batch, store)
    gates = check_gates(batch)
    raw = batch.read(Stage.RAW)
    quarantine = all_quarantine(batch)
    raw_quarantine = quarantine[quarantine["stage"] == Stage.RAW]
    duplicates = batch.read(Stage.DEDUP, DUPLICATES_FILE)
    published = build_published(batch)
    reject_if_empty(batch, len(published), "consolidation")  # never an empty version
    report = reconcile(pd.concat([raw["record_id"], raw_quarantine["record_id"]], ignore_index=True),
                       published["record_id"], quarantine["record_id"], duplicates["record_id"])
    if not report.balanced:
        raise ConservationError(f"batch {batch.batch_id} does not reconcile: {report.describe()}")

    write_stage(batch, Stage.PUBLISHED, published)
    batch.repo.put_frame(batch.branch, layout.dedup_index_path(batch.dataset.name, batch.batch_id),
                         index_entries(published))
    publish_signatures(batch, published["record_id"])
    summary = {
        "tenant": batch.tenant.name, "dataset": batch.dataset.name, "batch_id": batch.batch_id,
        "conservation": report.as_dict(),
        "quarantine_reasons": reason_counts(quarantine),
        "label_distribution": {str(k): int(v) for k, v in published["label"].value_counts().sort_index().items()},
        "gates": [g.model_dump(mode="json") for g in gates],
    }
    batch.repo.put_json(batch.branch, layout.batch_summary_path(batch.dataset.name, batch.batch_id), summary)
    verdicts = {g.name: g.verdict() for g in gates}
    batch_commit = batch.commit(PUBLISHED_STAGE, "publish candidate", report.as_dict(), verdicts)
    if store is not None:  # the record the gatekeeper checks before letting this commit into main
        store.record_candidate(batch.tenant.name, batch.dataset.name, batch.batch_id, batch_commit, verdicts)
    if batch.dataset.publish.policy != "auto":
        if store is not None:
            store.mark_pending(batch.tenant.name, batch.dataset.name, batch.batch_id, batch_commit)
        return PublishOutcome("awaiting_approval", batch_commit, report, summary=summary, gates=gates)
    main_commit, tag = merge_batch(batch, batch.metadata(PUBLISHED_STAGE, report.as_dict(), verdicts),
                                   commit=batch_commit, store=store)
    return PublishOutcome("published", batch_commit, report, main_commit, tag, summary, gates)


def merged_commit(batch: Batch) -> str | None:
    """The merge commit on main that published this batch, if one exists (tagged or not)."""
    for commit in batch.repo.log(layout.MAIN_BRANCH, amount=MERGE_LOOKBACK):
        meta = CommitMetadata.from_lakefs(commit.metadata)
        if len(commit.parents) == 2 and meta is not None and meta.belongs_to(batch.dataset.name, batch.batch_id):
            return commit.id
    return None


def merge_batch(batch: Batch, candidate: CommitMetadata | None, approved_by: tuple[str, ...] = (),
                approved_commit: str | None = None, commit: str | None = None,
                store: ApprovalStore | None = None) -> tuple[str, str]:
    """Merge the batch's checked ``commit`` into main and tag the result as the dataset's next version.

    The commit id is merged, never the branch name: whatever lands on the branch after the gates and approvals were
    checked cannot ride along. (Without ``commit``, the branch head is read once, here.) The merge commit carries
    the candidate's reconciled counts and gate verdicts, and who approved which commit. The new tag is recorded
    in ``store`` (what makes it a trusted version).
    """
    source = commit or batch.repo.branch_head(batch.branch)
    touched = touches_actions(batch.repo, source)
    if touched:
        raise PublishRefused(f"batch {batch.batch_id} changes {', '.join(touched)}; action files never change "
                             "through a batch")
    # Two batches of one dataset publishing at once would both pass dedup against the same main and number their
    # versions in any order: merge and tag one at a time, and re-check duplicates against main under the lock.
    with store.publish_lock(batch.tenant.name, batch.dataset.name) if store is not None else nullcontext():
        return _merge_and_tag(batch, source, candidate, approved_by, approved_commit, store)


def refuse_if_rejected(batch: Batch, store: ApprovalStore | None) -> None:
    """A re-run never overrules a data owner: an ``auto`` batch whose latest decision (in the append-only audit
    table) is a rejection is never merged. (Under ``owner``, approvals bind to a candidate commit instead.)"""
    if store is None or batch.dataset.publish.policy != "auto":
        return
    rejection = store.rejection(batch.tenant.name, batch.dataset.name, batch.batch_id)
    if rejection is not None:
        raise PublishRefused(f"batch {batch.batch_id} was rejected by {rejection.actor} ({rejection.reason}); a "
                             "rejected batch is never merged automatically: the client sends a new drop")


def _merge_and_tag(batch: Batch, source: str, candidate: CommitMetadata | None, approved_by: tuple[str, ...],
                   approved_commit: str | None, store: ApprovalStore | None) -> tuple[str, str]:
    already = merged_commit(batch)
    if already is None:  # checked again under the lock a rejection also takes
        refuse_if_rejected(batch, store)
    if already is None:
        refuse_new_duplicates_of_main(batch, source)
    counts = {k: v for k, v in (candidate.counts if candidate else {}).items() if k in CONSERVATION_COUNTS}
    metadata = batch.metadata(MERGED_STAGE, counts, candidate.gates if candidate else None).model_copy(
        update={"approved_by": approved_by, "approved_commit": approved_commit})
    # A run that died between merging and tagging left the merge on main: tag that commit, never merge twice.
    main_commit = already or batch.repo.merge(
        source, layout.MAIN_BRANCH, f"publish {batch.dataset.name} batch {batch.batch_id}",
        metadata.to_lakefs())
    while True:  # another dataset may take a version number between our read and our create
        tag = layout.version_tag(batch.dataset.name, next_version(batch.repo, batch.dataset.name))
        if batch.repo.create_tag(tag, main_commit):
            if store is not None:
                store.record_version(batch.tenant.name, batch.dataset.name, tag, main_commit, batch.batch_id)
            return main_commit, tag


def publish_signatures(batch: Batch, published_ids: pd.Series) -> None:
    """The near-duplicate index main keeps for this batch: the band keys dedup computed, for the records actually
    published (one that consolidation held back is no original for later batches)."""
    data = batch.repo.get_bytes(batch.branch, batch.stage_file(Stage.DEDUP, SIGNATURES_FILE))
    if data is None:  # the dataset checks exact duplicates only
        return
    index = SignatureIndex.from_bytes(data)
    held_back = set(index.ids()) - set(published_ids)
    batch.repo.put_bytes(batch.branch, layout.neardup_index_path(batch.dataset.name, batch.batch_id),
                         index.without(held_back).to_bytes() if held_back else data)


def refuse_new_duplicates_of_main(batch: Batch, source: str) -> None:
    """Refuse to merge records whose texts reached main after this batch's dedup ran (another batch published
    them meanwhile): merged anyway, the same text would be on main twice."""
    mine = batch.repo.get_frame(source, layout.dedup_index_path(batch.dataset.name, batch.batch_id))
    if mine is None or mine.empty:
        return
    known = published_hash_index(batch)
    repeated = mine[mine["text_hash"].isin(as_digests(known["text_hash"]))]
    if len(repeated):
        examples = ", ".join(repeated["record_id"].head(5))
        raise PublishRefused(
            f"batch {batch.batch_id}: {len(repeated)} records are now duplicates of records another batch published "
            f"on main after this batch was deduplicated (e.g. {examples}); re-run the batch from its dedup step")


def record_if_ours(batch: Batch, store: ApprovalStore, version: Version) -> bool:
    """Record a version tag a run created but died before recording, if it is provably Trainyard's own.

    Proof, not metadata: the tag is on this batch's merge commit on ``main``, whose merged parent is a publish
    candidate Trainyard recorded for this very batch. A hand-made tag or commit fails one of those.
    """
    if version.tag in store.recorded_versions(batch.tenant.name, batch.dataset.name):
        return True
    if merged_commit(batch) != version.commit_id:
        return False
    parents = batch.repo.get_commit(version.commit_id).parents
    candidate = store.candidate(parents[1]) if len(parents) == 2 else None
    if candidate is None or (candidate.tenant, candidate.dataset, candidate.batch_id) != (
            batch.tenant.name, batch.dataset.name, batch.batch_id):
        return False
    store.record_version(batch.tenant.name, batch.dataset.name, version.tag, version.commit_id, batch.batch_id)
    return True


def merge_conflict_alert(batch: Batch, error: str, playbook_base_url: str, run_url: str | None) -> Alert:
    """The alert for a batch whose merge into main conflicted (nothing was merged; the branch is intact)."""
    return Alert(kind=AlertKind.MERGE_CONFLICT, tenant=batch.tenant.name, dataset=batch.dataset.name,
                 batch_id=batch.batch_id, branch=batch.branch,
                 title=f"merge conflict publishing {batch.tenant.name}/{batch.dataset.name} batch {batch.batch_id}",
                 metric="merge", details={"error": error[:1500]}, channel=batch.tenant.slack_channel,
                 playbook_url=playbook_url(AlertKind.MERGE_CONFLICT, playbook_base_url), run_url=run_url)
