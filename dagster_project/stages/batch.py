"""One batch of one tenant's dataset: where its data lives on its lakeFS branch, and how a stage reads and commits.

Every stage reads its input from the batch branch, writes its output (and its quarantine) back under
``datasets/<dataset>/<stage>/batch=<id>/`` and commits with a :class:`~dagster_project.lakefs.metadata.CommitMetadata`
record (stage, counts, Dagster run id). The repository is a :class:`~dagster_project.lakefs.LakeFSPort`, so the
same code runs against lakeFS, the emulator or the in-memory fake of the unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dagster_project import layout
from dagster_project.lakefs import LakeFSPort
from dagster_project.lakefs.metadata import CommitMetadata
from dagster_project.layout import Stage
from dagster_project.quality.result import GateVerdicts
from dagster_project.records import QUARANTINE_COLUMNS, empty_quarantine
from dagster_project.tenants import DatasetConfig, TenantConfig

QUARANTINING_STAGES = (Stage.RAW, Stage.CLEAN, Stage.PII, Stage.CONSOLIDATED_LABELS)
PII_FINDINGS_FILE = "pii_findings.parquet"
GOLD_FILE = "gold.parquet"
DUPLICATES_FILE = "duplicates.parquet"
MANIFEST_COPY = "manifest.json"


@dataclass(frozen=True)
class Batch:
    """One batch of one tenant's dataset, and where its data lives."""

    tenant: TenantConfig
    dataset: DatasetConfig
    batch_id: str
    repo: LakeFSPort
    run_id: str = ""
    reads: list[tuple[str, str]] = field(default_factory=list, compare=False, repr=False)
    """(ref, path) of every frame read through :meth:`read` and :meth:`read_ref`: what a gate was computed on."""

    @property
    def branch(self) -> str:
        return layout.batch_branch(self.dataset.name, self.batch_id)

    def data_path(self, stage: Stage) -> str:
        return layout.stage_data_path(self.dataset.name, stage, self.batch_id)

    def quarantine_path(self, stage: Stage) -> str:
        return layout.stage_quarantine_path(self.dataset.name, stage, self.batch_id)

    def stage_file(self, stage: Stage, name: str) -> str:
        return layout.stage_dir(self.dataset.name, stage, self.batch_id) + name

    def read(self, stage: Stage, name: str | None = None) -> pd.DataFrame:
        return self.read_ref(self.branch, self.stage_file(stage, name) if name else self.data_path(stage))

    def read_ref(self, ref: str, path: str) -> pd.DataFrame:
        self.reads.append((ref, path))
        return self.repo.require_frame(ref, path)

    def metadata(self, stage: Stage | str, counts: dict[str, Any] | None = None,
                 gates: GateVerdicts | None = None) -> CommitMetadata:
        return CommitMetadata.with_counts(counts or {}, stage=str(stage), tenant=self.tenant.name,
                                          dataset=self.dataset.name, batch_id=self.batch_id,
                                          dagster_run_id=self.run_id, gates=gates or {})

    def commit(self, stage: Stage | str, message: str, counts: dict[str, Any] | None = None,
               gates: GateVerdicts | None = None) -> str:
        return self.repo.commit(self.branch, f"{self.dataset.name} {self.batch_id}: {message}",
                                self.metadata(stage, counts, gates).to_lakefs())


@dataclass
class StageReport:
    """What a stage did, for Dagster metadata and the demo summary."""

    stage: Stage
    rows: int
    commit_id: str
    counts: dict[str, int | float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """What an operator should read in the run log (e.g. a drop's manifest problem)."""


def write_stage(batch: Batch, stage: Stage, data: pd.DataFrame, quarantine: pd.DataFrame | None = None) -> None:
    batch.repo.put_frame(batch.branch, batch.data_path(stage), data)
    if quarantine is not None:
        batch.repo.put_frame(batch.branch, batch.quarantine_path(stage), quarantine)


def all_quarantine(batch: Batch) -> pd.DataFrame:
    """Every quarantined record of the batch, whichever stage held it back."""
    frames = [batch.repo.get_frame(batch.branch, batch.quarantine_path(stage)) for stage in QUARANTINING_STAGES]
    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True)[QUARANTINE_COLUMNS] if frames else empty_quarantine()


def reason_counts(quarantine: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in quarantine["reason"].value_counts().items()}
