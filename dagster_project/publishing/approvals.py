"""Data-owner approvals for publishing, recorded in the platform database and bound to a commit.

lakeFS has no approvals and its branch protection does not block merges, so Trainyard keeps them: a data owner
of the dataset (``data_owners`` in the tenants file) approves or rejects a batch, and the decision is written to
an audit table (who, when, batch, commit id, decision, reason) together with the branch head commit it was made
on. Only decisions on the *current* head count: if anything is committed to the batch branch after the approval,
the approval is stale and the batch waits again. ``required_approvals: 2`` needs two distinct owners.

The same database keeps the publish candidates Trainyard committed (what the gatekeeper trusts, never commit
metadata) and the batches still waiting for a decision, so the merge sensor looks only at those.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa

from dagster_project.clock import as_utc, utcnow
from dagster_project.db import create_tables, make_engine, named_lock
from dagster_project.publishing.ledger import BatchLedger
from dagster_project.quality.result import GateVerdicts, verdicts_from_json, verdicts_to_json
from dagster_project.tenants import DatasetConfig, TenantConfig

APPROVALS_TABLE = "trainyard_approvals"
CANDIDATES_TABLE = "trainyard_publish_candidates"
PENDING_TABLE = "trainyard_pending_approvals"
VERSIONS_TABLE = "trainyard_versions"


class Verdict(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class NotADataOwner(PermissionError):
    """Only the listed data owners of a dataset may approve or reject its batches."""


@dataclass(frozen=True)
class ApprovalRecord:
    id: int
    tenant: str
    dataset: str
    batch_id: str
    commit_id: str
    verdict: Verdict
    actor: str
    reason: str
    decided_at: datetime


@dataclass(frozen=True)
class Candidate:
    """A commit Trainyard itself made as a batch's publish candidate, with the gate verdicts it was made with."""

    commit_id: str
    tenant: str
    dataset: str
    batch_id: str
    gates: GateVerdicts
    recorded_at: datetime

    def failed_or_missing(self, required: list[str]) -> list[str]:
        return [name for name in required if name not in self.gates or not self.gates[name].passed]


@dataclass(frozen=True)
class PendingBatch:
    tenant: str
    dataset: str
    batch_id: str
    commit_id: str
    since: datetime


@dataclass(frozen=True)
class ApprovalState:
    """Where a batch stands for one commit: approved, rejected, or still waiting (and for whom)."""

    commit_id: str
    required: int
    approvers: tuple[str, ...]
    rejected_by: tuple[str, ...]
    stale: tuple[str, ...]
    """Owners whose decision was made on an earlier commit of the branch and no longer counts."""

    @property
    def rejected(self) -> bool:
        return bool(self.rejected_by)

    @property
    def approved(self) -> bool:
        return not self.rejected and len(self.approvers) >= self.required

    @property
    def missing(self) -> int:
        return max(0, self.required - len(self.approvers))


class ApprovalStore:
    """The approvals audit table (append-only: a decision is never updated or deleted)."""

    def __init__(self, url: str | sa.URL | None = None, schema: str | None = None,
                 engine: sa.Engine | None = None) -> None:
        if engine is None and url is None:
            raise ValueError("ApprovalStore needs a database URL or an engine")
        self.engine = engine if engine is not None else make_engine(url)
        self.schema = schema
        self.metadata = sa.MetaData(schema=schema)
        self.table = sa.Table(
            APPROVALS_TABLE, self.metadata,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                      autoincrement=True),
            sa.Column("tenant", sa.String(64), nullable=False),
            sa.Column("dataset", sa.String(64), nullable=False),
            sa.Column("batch_id", sa.String(128), nullable=False),
            sa.Column("commit_id", sa.String(64), nullable=False),
            sa.Column("verdict", sa.String(16), nullable=False),
            sa.Column("actor", sa.String(255), nullable=False),
            sa.Column("reason", sa.Text(), nullable=False, default=""),
            sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
            sa.Index(f"ix_{APPROVALS_TABLE}_batch", "tenant", "dataset", "batch_id"),
        )
        # Publish candidates as Trainyard committed them: the gatekeeper trusts this record, never commit metadata
        # (anyone with write access to lakeFS can set metadata on a commit).
        self.candidates = sa.Table(
            CANDIDATES_TABLE, self.metadata,
            sa.Column("commit_id", sa.String(64), primary_key=True),
            sa.Column("tenant", sa.String(64), nullable=False),
            sa.Column("dataset", sa.String(64), nullable=False),
            sa.Column("batch_id", sa.String(128), nullable=False),
            sa.Column("gates", sa.JSON(), nullable=False),
            sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        )
        # Owner-policy batches waiting for a decision: one row per batch, gone once it is merged or rejected.
        self.pending = sa.Table(
            PENDING_TABLE, self.metadata,
            sa.Column("tenant", sa.String(64), primary_key=True),
            sa.Column("dataset", sa.String(64), primary_key=True),
            sa.Column("batch_id", sa.String(128), primary_key=True),
            sa.Column("commit_id", sa.String(64), nullable=False),
            sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        )
        # The versions Trainyard itself tagged after a gated merge: a tag anyone else creates is not a version.
        self.versions = sa.Table(
            VERSIONS_TABLE, self.metadata,
            sa.Column("tenant", sa.String(64), primary_key=True),
            sa.Column("dataset", sa.String(64), primary_key=True),
            sa.Column("tag", sa.String(255), primary_key=True),
            sa.Column("commit_id", sa.String(64), nullable=False),
            sa.Column("batch_id", sa.String(128), nullable=False),
            sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        )
        create_tables(self.engine, self.metadata, schema)
        self.ledger = BatchLedger(self.engine, schema)
        """Where each batch ended (same database); :mod:`dagster_project.publishing.ledger`."""

    def record_candidate(self, tenant: str, dataset: str, batch_id: str, commit_id: str,
                         gates: GateVerdicts) -> None:
        """Remember that Trainyard itself committed ``commit_id`` as a publish candidate with these gate verdicts."""
        stored = verdicts_to_json(gates)
        with self.engine.begin() as conn:
            exists = conn.execute(sa.select(self.candidates.c.commit_id)
                                  .where(self.candidates.c.commit_id == commit_id)).first()
            if exists is None:
                conn.execute(sa.insert(self.candidates).values(
                    commit_id=commit_id, tenant=tenant, dataset=dataset, batch_id=batch_id, gates=stored,
                    recorded_at=utcnow()))

    def candidate(self, commit_id: str) -> Candidate | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.candidates).where(self.candidates.c.commit_id == commit_id)).mappings()
            found = row.first()
        if found is None:
            return None
        gates = verdicts_from_json(found["gates"])
        return Candidate(found["commit_id"], found["tenant"], found["dataset"], found["batch_id"], gates,
                         as_utc(found["recorded_at"]))

    def publish_lock(self, tenant: str, dataset: str, blocking: bool = True) -> AbstractContextManager[None]:
        """One merge-and-tag at a time per dataset, across every process (runs, sensors, the CLI)."""
        return named_lock(self.engine, f"trainyard-publish:{tenant}/{dataset}", blocking=blocking)

    def record_version(self, tenant: str, dataset: str, tag: str, commit_id: str, batch_id: str) -> None:
        """Remember that Trainyard tagged ``commit_id`` (its merge of ``batch_id``) as ``tag``; idempotent."""
        key = (self.versions.c.tenant == tenant) & (self.versions.c.dataset == dataset) & (self.versions.c.tag == tag)
        with self.engine.begin() as conn:
            existing = conn.execute(sa.select(self.versions.c.commit_id).where(key)).scalar()
            if existing is None:
                conn.execute(sa.insert(self.versions).values(tenant=tenant, dataset=dataset, tag=tag,
                                                             commit_id=commit_id, batch_id=batch_id,
                                                             recorded_at=utcnow()))
            elif existing != commit_id:
                raise ValueError(f"{tenant}/{dataset} version {tag} is recorded for commit {existing[:12]}, "
                                 f"not {commit_id[:12]}: versions never move")

    def recorded_versions(self, tenant: str, dataset: str) -> dict[str, str]:
        """Tag -> commit id of every version Trainyard recorded for the dataset."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.versions.c.tag, self.versions.c.commit_id).where(
                self.versions.c.tenant == tenant, self.versions.c.dataset == dataset)).all()
        return {tag: commit for tag, commit in rows}

    def mark_pending(self, tenant: str, dataset: str, batch_id: str, commit_id: str) -> None:
        """The batch's candidate ``commit_id`` waits for its data owners (replaces an earlier candidate)."""
        key = (self.pending.c.tenant == tenant) & (self.pending.c.dataset == dataset) & (
            self.pending.c.batch_id == batch_id)
        with self.engine.begin() as conn:
            conn.execute(sa.delete(self.pending).where(key))
            conn.execute(sa.insert(self.pending).values(tenant=tenant, dataset=dataset, batch_id=batch_id,
                                                        commit_id=commit_id, since=utcnow()))

    def clear_pending(self, tenant: str, dataset: str, batch_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(self.pending).where(
                self.pending.c.tenant == tenant, self.pending.c.dataset == dataset,
                self.pending.c.batch_id == batch_id))

    def pending_batches(self) -> list[PendingBatch]:
        """Batches waiting for a data-owner decision, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.pending).order_by(self.pending.c.since)).mappings().all()
        return [PendingBatch(r["tenant"], r["dataset"], r["batch_id"], r["commit_id"], as_utc(r["since"]))
                for r in rows]

    def __enter__(self) -> ApprovalStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    def dispose(self) -> None:
        self.engine.dispose()

    def decide(self, tenant: TenantConfig, dataset: DatasetConfig, batch_id: str, commit_id: str, actor: str,
               verdict: Verdict, reason: str = "", now: datetime | None = None) -> ApprovalRecord:
        """Record a data owner's decision on a batch at ``commit_id`` (the branch head they reviewed)."""
        owners = {owner.lower() for owner in tenant.data_owners}
        if actor.lower() not in owners:
            raise NotADataOwner(
                f"{actor} is not a data owner of {tenant.name}/{dataset.name}; data owners: "
                f"{', '.join(tenant.data_owners)} (change them in the tenants file)")
        if verdict == Verdict.REJECT and not reason.strip():
            raise ValueError("a rejection needs a reason (--reason), for the audit trail and the client team")
        decided_at = (now or utcnow()).astimezone(UTC)
        values = {"tenant": tenant.name, "dataset": dataset.name, "batch_id": batch_id, "commit_id": commit_id,
                  "verdict": verdict.value, "actor": actor.lower(), "reason": reason, "decided_at": decided_at}
        with self.engine.begin() as conn:
            record_id = conn.execute(sa.insert(self.table).values(**values).returning(self.table.c.id)).scalar_one()
        return ApprovalRecord(record_id, tenant.name, dataset.name, batch_id, commit_id, verdict, actor.lower(),
                              reason, decided_at)

    def history(self, tenant: str, dataset: str, batch_id: str | None = None) -> list[ApprovalRecord]:
        query = sa.select(self.table).where(self.table.c.tenant == tenant, self.table.c.dataset == dataset)
        if batch_id is not None:
            query = query.where(self.table.c.batch_id == batch_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(self.table.c.id)).mappings().all()
        return [ApprovalRecord(r["id"], r["tenant"], r["dataset"], r["batch_id"], r["commit_id"],
                               Verdict(r["verdict"]), r["actor"], r["reason"], as_utc(r["decided_at"])) for r in rows]

    def rejection(self, tenant: str, dataset: str, batch_id: str) -> ApprovalRecord | None:
        """The batch's latest decision if it is a rejection: an ``auto`` batch rejected so is never merged."""
        history = self.history(tenant, dataset, batch_id)
        return history[-1] if history and history[-1].verdict == Verdict.REJECT else None

    def batches_with_decisions(self) -> list[tuple[str, str, str]]:
        """(tenant, dataset, batch_id) of every batch anyone has decided on."""
        query = sa.select(self.table.c.tenant, self.table.c.dataset, self.table.c.batch_id).distinct()
        with self.engine.connect() as conn:
            return sorted(tuple(row) for row in conn.execute(query))

    def state(self, tenant: TenantConfig, dataset: DatasetConfig, batch_id: str, commit_id: str) -> ApprovalState:
        """The batch's approval state for ``commit_id``; each owner's latest decision counts."""
        latest: dict[str, ApprovalRecord] = {}
        owners = {owner.lower() for owner in tenant.data_owners}
        for record in self.history(tenant.name, dataset.name, batch_id):
            if record.actor in owners:  # an owner removed from the tenants file no longer counts
                latest[record.actor] = record
        current = {actor: r for actor, r in latest.items() if r.commit_id == commit_id}
        return ApprovalState(
            commit_id=commit_id,
            required=dataset.publish.required_approvals,
            approvers=tuple(sorted(a for a, r in current.items() if r.verdict == Verdict.APPROVE)),
            rejected_by=tuple(sorted(a for a, r in current.items() if r.verdict == Verdict.REJECT)),
            stale=tuple(sorted(a for a, r in latest.items() if r.commit_id != commit_id)),
        )


def rejected_batches(store: ApprovalStore, older_than: datetime) -> list[ApprovalRecord]:
    """The latest rejection of every batch whose most recent decision is a rejection made before ``older_than``."""
    latest: dict[tuple[str, str, str], ApprovalRecord] = {}
    for tenant, dataset, batch_id in store.batches_with_decisions():
        history = store.history(tenant, dataset, batch_id)
        if history:
            latest[(tenant, dataset, batch_id)] = history[-1]
    return [r for r in latest.values() if r.verdict == Verdict.REJECT and r.decided_at < older_than]
