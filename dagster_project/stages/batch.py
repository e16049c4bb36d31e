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
from dagster_project.stages.parts import frame_bytes, part_index, part_name, read_frame
from dagster_project.tenants import DatasetConfig, TenantConfig

QUARANTINING_STAGES = (Stage.RAW, Stage.CLEAN, Stage.PII, Stage.CONSOLIDATED_LABELS)
STREAMED_STAGES = (Stage.RAW, Stage.CLEAN, Stage.PII, Stage.DEDUP)
"""Stages whose output is written as numbered parts (:mod:`~dagster_project.stages.parts`)."""
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

    def part_paths(self, stage: Stage, ref: str | None = None) -> list[str]:
        """The Parquet parts of a streamed stage's output, in part order (see :mod:`~dagster_project.stages.parts`)."""
        paths = self.repo.list_paths(ref or self.branch, layout.stage_dir(self.dataset.name, stage, self.batch_id))
        return sorted((p for p in paths if part_index(p) is not None), key=lambda p: part_index(p) or 0)

    def read(self, stage: Stage, name: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
        """A stage's whole output (every part of a streamed stage) or one of its named files."""
        if name is None and stage in STREAMED_STAGES:
            return self.read_parts(stage, columns)
        frame = self.read_ref(self.branch, self.stage_file(stage, name) if name else self.data_path(stage))
        return frame if columns is None else frame[columns]

    def read_parts(self, stage: Stage, columns: list[str] | None = None) -> pd.DataFrame:
        paths = self.part_paths(stage)
        if not paths:
            raise FileNotFoundError(f"lakefs://{self.repo.name}/{self.branch}/{self.data_path(stage)} has no parts; "
                                    "run the upstream stage first")
        self.reads.extend((self.branch, p) for p in paths)
        return pd.concat([read_frame(self.get_part(p), columns) for p in paths], ignore_index=True)

    def get_part(self, path: str) -> bytes:
        data = self.repo.get_bytes(self.branch, path)
        if data is None:
            raise FileNotFoundError(f"lakefs://{self.repo.name}/{self.branch}/{path} disappeared while being read")
        return data

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
    """Write a stage's whole output: one part for a streamed stage (any older parts are removed), else one file."""
    if stage in STREAMED_STAGES:
        with PartWriter(batch, stage) as parts:
            parts.put(0, frame_bytes(data))
    else:
        batch.repo.put_frame(batch.branch, batch.data_path(stage), data)
    if quarantine is not None:
        batch.repo.put_frame(batch.branch, batch.quarantine_path(stage), quarantine)


class PartWriter:
    """Uploads a streamed stage's parts as they are produced; on close, removes parts a previous run left that
    this run did not write (a re-run over a smaller input leaves no stale records behind)."""

    def __init__(self, batch: Batch, stage: Stage) -> None:
        self.batch, self.stage = batch, stage
        self.written: dict[int, str] = {}
        """Path of every part this run wrote, by part number."""

    def __enter__(self) -> PartWriter:
        self._before = set(self.batch.part_paths(self.stage))
        return self

    def put(self, index: int, data: bytes) -> None:
        path = layout.stage_dir(self.batch.dataset.name, self.stage, self.batch.batch_id) + part_name(index)
        self.batch.repo.put_bytes(self.batch.branch, path, data)
        self.written[index] = path

    def discard(self, indexes: list[int]) -> None:
        """Take back parts written by this run (e.g. of a file that turned out to be corrupt half-way)."""
        self.batch.repo.delete_paths(self.batch.branch, [self.written.pop(i) for i in indexes])

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if kind is None:
            self.batch.repo.delete_paths(self.batch.branch, sorted(self._before - set(self.written.values())))


def all_quarantine(batch: Batch) -> pd.DataFrame:
    """Every quarantined record of the batch, whichever stage held it back."""
    frames = [batch.repo.get_frame(batch.branch, batch.quarantine_path(stage)) for stage in QUARANTINING_STAGES]
    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True)[QUARANTINE_COLUMNS] if frames else empty_quarantine()


def reason_counts(quarantine: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in quarantine["reason"].value_counts().items()}
