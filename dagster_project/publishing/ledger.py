"""Where every batch ended: published, waiting for its data owners, blocked by a gate, rejected, in conflict with
``main``, or rejected as a drop -- one row per batch, with the reason.

Why a table of its own: a batch ends in different processes -- its run's publish step, a blocking gate, the merge
sensor, a data owner's ``trainyard reject`` -- and only the first two happen inside a Dagster run. Each records
its outcome here; the batch outcome sensor then reports every outcome no run reported on the ``published``
asset's partition, so the Dagster UI's latest state of each batch is true, and ``trainyard batches`` lists the
same states without Dagster. The approvals audit table and the versions table stay the records of *decisions*
and *versions*; this is the one place that says where a batch stands.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa

from dagster_project.clock import as_utc, utcnow
from dagster_project.db import create_tables, named_lock

OUTCOMES_TABLE = "trainyard_batch_outcomes"


class BatchState(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    """Every gate passed; the publish candidate waits for its data owners (publish policy ``owner``)."""
    PUBLISHED = "published"
    """Merged into ``main`` and tagged as a version."""
    BLOCKED = "blocked"
    """A blocking gate failed; nothing of the batch reached ``main``."""
    REJECTED = "rejected"
    """A data owner rejected it (a candidate, or a blocked batch closed out); its branch goes after the retention."""
    MERGE_CONFLICT = "merge_conflict"
    """Merging it into ``main`` conflicted; nothing changed, the batch stays on its branch."""
    DROP_REJECTED = "drop_rejected"
    """Nothing of the drop could be published (no valid manifest, every record quarantined or a duplicate)."""
    REFUSED = "refused"
    """Publishing refused it after its gates: records that became duplicates of main meanwhile, a change to the
    lakeFS actions, a record-conservation error, a data owner's earlier rejection."""


OPEN_STATES = frozenset({BatchState.AWAITING_APPROVAL, BatchState.BLOCKED, BatchState.MERGE_CONFLICT,
                         BatchState.REFUSED})
"""States a person still has to act on (approve, reject, resolve or re-run)."""


@dataclass(frozen=True)
class BatchOutcome:
    """Where one batch stands, and why."""

    tenant: str
    dataset: str
    batch_id: str
    state: BatchState
    reason: str
    """One sentence a person reads: the failed gate's result, the owner's reason, the conflict."""
    stage: str | None = None
    """The stage the batch stopped at (blocked, drop rejected) or ``published``."""
    gate: str | None = None
    commit_id: str | None = None
    """The batch branch commit the outcome is about (the candidate, the gate's commit)."""
    main_commit: str | None = None
    version_tag: str | None = None
    run_id: str | None = None
    actor: str | None = None
    """Who decided (a data owner's email), for decisions."""
    at: datetime | None = None
    materialized: bool = False
    """The batch's ``published`` partition was materialized before this outcome (as a candidate, or published):
    a later outcome is reported as a new materialization, so the partition's latest metadata stays true."""
    reported: bool = False
    """The Dagster UI has this outcome (its run reported it, or the outcome sensor did)."""
    revision: int = 0
    figures: dict[str, float] = field(default_factory=dict)
    """The batch's numbers (records, quarantined, duplicates, every gate's value), carried to later outcomes, so a
    merge reported outside any run plots like one made in a run."""


class BatchLedger:
    """The batch outcomes table: the latest outcome per batch, and whether the UI has it yet."""

    def __init__(self, engine: sa.Engine, schema: str | None = None) -> None:
        self.engine = engine
        metadata = sa.MetaData(schema=schema)
        self.table = sa.Table(
            OUTCOMES_TABLE, metadata,
            sa.Column("tenant", sa.String(64), primary_key=True),
            sa.Column("dataset", sa.String(64), primary_key=True),
            sa.Column("batch_id", sa.String(128), primary_key=True),
            sa.Column("state", sa.String(32), nullable=False),
            sa.Column("reason", sa.Text(), nullable=False),
            sa.Column("stage", sa.String(64)),
            sa.Column("gate", sa.String(64)),
            sa.Column("commit_id", sa.String(64)),
            sa.Column("main_commit", sa.String(64)),
            sa.Column("version_tag", sa.String(255)),
            sa.Column("run_id", sa.String(64)),
            sa.Column("actor", sa.String(255)),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("materialized", sa.Boolean(), nullable=False, default=False),
            sa.Column("reported", sa.Boolean(), nullable=False, default=False),
            sa.Column("revision", sa.Integer(), nullable=False, default=1),
            sa.Column("figures", sa.JSON()),
            sa.Index(f"ix_{OUTCOMES_TABLE}_unreported", "reported"),
        )
        create_tables(engine, metadata, schema)

    def record(self, outcome: BatchOutcome, reported: bool = False) -> BatchOutcome:
        """Make ``outcome`` the batch's latest; ``reported=True`` when the caller's own run reports it to Dagster."""
        at = as_utc(outcome.at or utcnow())
        key = self._key(outcome.tenant, outcome.dataset, outcome.batch_id)
        # One writer per batch (SQLite ignores FOR UPDATE; PostgreSQL has no row to lock before the first insert).
        lock = named_lock(self.engine, f"{OUTCOMES_TABLE}:{outcome.tenant}:{outcome.dataset}:{outcome.batch_id}")
        with lock, self.engine.begin() as conn:
            previous = conn.execute(sa.select(self.table).where(*key).with_for_update()).mappings().first()
            if previous and self._same(previous, outcome) and (previous["reported"] or not reported):
                return self._outcome(previous)  # e.g. the same merge conflict on every tick: nothing new to show
            materialized = bool(previous and (previous["materialized"] or previous["state"] in (
                BatchState.AWAITING_APPROVAL.value, BatchState.PUBLISHED.value)))
            revision = (previous["revision"] + 1) if previous else 1
            if not outcome.figures and previous and previous["figures"]:
                outcome = replace(outcome, figures=dict(previous["figures"]))
            if (previous and outcome.state is BatchState.BLOCKED and previous["state"] == BatchState.BLOCKED.value
                    and outcome.run_id and previous["run_id"] == outcome.run_id and outcome.gate
                    and outcome.gate not in (previous["gate"] or "").split(", ")):
                # several blocking gates of one stage failed in the same run: name them all
                outcome = replace(outcome, gate=f"{previous['gate']}, {outcome.gate}",
                                  reason=f"{previous['reason']}; {outcome.reason}")
            values = {"state": outcome.state.value, "reason": outcome.reason, "stage": outcome.stage,
                      "gate": outcome.gate, "commit_id": outcome.commit_id, "main_commit": outcome.main_commit,
                      "version_tag": outcome.version_tag, "run_id": outcome.run_id, "actor": outcome.actor, "at": at,
                      "materialized": materialized, "reported": reported, "revision": revision,
                      "figures": outcome.figures or None}
            if previous:
                conn.execute(sa.update(self.table).where(*key).values(**values))
            else:
                conn.execute(sa.insert(self.table).values(tenant=outcome.tenant, dataset=outcome.dataset,
                                                          batch_id=outcome.batch_id, **values))
        return replace(outcome, at=at, materialized=materialized, reported=reported, revision=revision)

    def get(self, tenant: str, dataset: str, batch_id: str) -> BatchOutcome | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.table).where(*self._key(tenant, dataset, batch_id))).mappings().first()
        return self._outcome(row) if row else None

    def list(self, tenant: str, dataset: str | None = None,
             states: frozenset[BatchState] | set[BatchState] | None = None) -> list[BatchOutcome]:
        """The tenant's batches (of one dataset), newest outcome first."""
        query = sa.select(self.table).where(self.table.c.tenant == tenant)
        if dataset is not None:
            query = query.where(self.table.c.dataset == dataset)
        if states:
            query = query.where(self.table.c.state.in_([s.value for s in states]))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(self.table.c.at.desc())).mappings().all()
        return [self._outcome(r) for r in rows]

    def unreported(self, limit: int = 100) -> list[BatchOutcome]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.table).where(self.table.c.reported.is_(False))
                                .order_by(self.table.c.at).limit(limit)).mappings().all()
        return [self._outcome(r) for r in rows]

    def mark_reported(self, tenant: str, dataset: str, batch_id: str, revision: int) -> bool:
        """Only the revision that was reported. If the batch moved on meanwhile, its newer outcome is reported
        (again) after this one, so the older event is never the partition's latest."""
        with self.engine.begin() as conn:
            result = conn.execute(sa.update(self.table).where(
                *self._key(tenant, dataset, batch_id), self.table.c.revision == revision).values(reported=True))
            if result.rowcount == 1:
                return True
            conn.execute(sa.update(self.table).where(
                *self._key(tenant, dataset, batch_id), self.table.c.revision > revision).values(reported=False))
        return False

    @staticmethod
    def _same(row: sa.RowMapping, outcome: BatchOutcome) -> bool:
        return all(row[name] == (getattr(outcome, name).value if name == "state" else getattr(outcome, name))
                   for name in ("state", "reason", "stage", "gate", "commit_id", "main_commit", "version_tag"))

    def _key(self, tenant: str, dataset: str, batch_id: str) -> tuple[sa.ColumnElement[bool], ...]:
        c = self.table.c
        return c.tenant == tenant, c.dataset == dataset, c.batch_id == batch_id

    @staticmethod
    def _outcome(row: sa.RowMapping) -> BatchOutcome:
        return BatchOutcome(
            tenant=row["tenant"], dataset=row["dataset"], batch_id=row["batch_id"], state=BatchState(row["state"]),
            reason=row["reason"], stage=row["stage"], gate=row["gate"], commit_id=row["commit_id"],
            main_commit=row["main_commit"], version_tag=row["version_tag"], run_id=row["run_id"],
            actor=row["actor"], at=as_utc(row["at"]), materialized=bool(row["materialized"]),
            reported=bool(row["reported"]), revision=int(row["revision"]), figures=dict(row["figures"] or {}))
