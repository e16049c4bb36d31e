"""What a data owner reads about their batches: which wait for a decision, which a gate blocked, and, for one batch,
its stages, gates, difference from ``main`` and the exact commands that act on it.

Why here: ``trainyard batches`` and ``trainyard show`` are the data owner's view, and they must agree with the
Dagster UI and Slack. They read the same records -- the batch outcomes ledger, the stage commits and gate results on
the batch branch, the published diff -- and nothing of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from dagster_project.clock import utcnow
from dagster_project.gates import read_gate_results, sentence
from dagster_project.lakefs import RefNotFound
from dagster_project.lakefs.metadata import CommitMetadata
from dagster_project.layout import MAIN_BRANCH, Stage
from dagster_project.publishing.approvals import ApprovalStore
from dagster_project.publishing.ledger import BatchOutcome, BatchState
from dagster_project.publishing.versions import NothingPublished, VersionDiff, diff_published
from dagster_project.quality.result import GateResult
from dagster_project.stages.batch import Batch


@dataclass(frozen=True)
class StageCommit:
    stage: str
    commit_id: str
    counts: dict[str, str]
    at: datetime | None


@dataclass
class BatchStatus:
    batch: Batch
    outcome: BatchOutcome | None
    head: str | None
    """The batch branch head (None once the branch is gone)."""
    stages: list[StageCommit] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    diff: VersionDiff | None = None
    diff_note: str | None = None

    def commands(self) -> list[str]:
        """What the data owner can do now, spelled out."""
        b = self.batch
        where = f"{b.tenant.name} {b.dataset.name} {b.batch_id}"
        state = self.outcome.state if self.outcome else None
        if state is BatchState.AWAITING_APPROVAL and self.head:
            return [f"trainyard approve {where} --commit {self.head} --as <your email>",
                    f"trainyard reject {where} --commit {self.head} --as <your email> --reason '<why>'"]
        if state in (BatchState.BLOCKED, BatchState.MERGE_CONFLICT, BatchState.DROP_REJECTED) and self.head:
            return [f"trainyard reject {where} --as <your email> --reason '<why>'   (close it out; its branch is "
                    "deleted after the retention period)",
                    "or fix the cause and re-run the batch's partition from the Dagster UI"]
        if state is BatchState.PUBLISHED:
            return [f"trainyard versions {b.tenant.name} {b.dataset.name}"]
        return []


def age(at: datetime | None, now: datetime | None = None) -> str:
    if at is None:
        return "-"
    seconds = int(((now or utcnow()) - at).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def batch_status(batch: Batch, store: ApprovalStore) -> BatchStatus:
    outcome = store.ledger.get(batch.tenant.name, batch.dataset.name, batch.batch_id)
    try:
        head = batch.repo.branch_head(batch.branch)
    except RefNotFound:
        return BatchStatus(batch, outcome, None, diff_note=f"branch {batch.branch} does not exist (never processed, "
                                                            "or deleted after its rejection)")
    status = BatchStatus(batch, outcome, head)
    seen: set[str] = set()
    for commit in batch.repo.log(batch.branch, amount=500):  # newest first: the latest commit of each stage
        meta = CommitMetadata.from_lakefs(commit.metadata)
        if meta is None or not meta.belongs_to(batch.dataset.name, batch.batch_id) or meta.stage in seen:
            continue
        if meta.stage in {str(s) for s in Stage}:
            seen.add(meta.stage)
            status.stages.append(StageCommit(meta.stage, commit.id, dict(meta.counts),
                                             datetime.fromtimestamp(commit.creation_date, UTC)
                                             if commit.creation_date else None))
    order = [str(s) for s in Stage]
    status.stages.sort(key=lambda s: order.index(s.stage))
    status.gates = read_gate_results(batch)
    try:
        status.diff = diff_published(batch.repo, batch.dataset.name, MAIN_BRANCH, batch.branch)
    except NothingPublished as exc:
        status.diff_note = str(exc)
    return status


def status_lines(status: BatchStatus) -> list[str]:
    b, outcome = status.batch, status.outcome
    lines = [f"{b.tenant.name}/{b.dataset.name} batch {b.batch_id}",
             f"  state:   {outcome.state.value if outcome else 'in progress (no outcome yet)'}"
             + (f" ({age(outcome.at)} ago)" if outcome else "")]
    if outcome:
        lines.append(f"  why:     {outcome.reason}")
    lines.append(f"  branch:  {b.branch}" + (f" at {status.head}" if status.head else " (gone)"))
    if status.stages:
        lines.append("  stages:")
        for stage in status.stages:
            counts = ", ".join(f"{k} {v}" for k, v in stage.counts.items())
            lines.append(f"    {stage.stage:<20} {stage.commit_id[:12]}  {counts}")
    if status.gates:
        lines.append("  gates:")
        lines += [f"    {'PASS' if g.passed else 'FAIL'}  {sentence(g)}" for g in status.gates]
    if status.diff is not None:
        lines.append("  against main:")
        lines += [f"    {line}" for line in status.diff.lines()]
    elif status.diff_note:
        lines.append(f"  against main: {status.diff_note}")
    commands = status.commands()
    if commands:
        lines.append("  commands:")
        lines += [f"    {c}" for c in commands]
    return lines


def batch_list_lines(outcomes: list[BatchOutcome], now: datetime | None = None) -> list[str]:
    if not outcomes:
        return ["no batches with an outcome yet (batches still running are in the Dagster UI)"]
    lines = [f"{'dataset':<18} {'batch':<30} {'state':<18} {'age':>5}  gates / version"]
    for o in outcomes:
        gates = (f"failed: {o.gate}" if o.gate else "-") if o.state is BatchState.BLOCKED else \
            o.version_tag or ("all passed" if o.state is BatchState.AWAITING_APPROVAL else "-")
        lines.append(f"{o.dataset:<18} {o.batch_id:<30} {o.state.value:<18} {age(o.at, now):>5}  {gates}")
    return lines
