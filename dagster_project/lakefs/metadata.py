"""The ``trainyard.*`` keys Trainyard writes on lakeFS commits, as one typed record.

Why a model: every stage commit, gate commit, publish candidate and merge into ``main`` carries who and what it
belongs to (tenant, dataset, batch, stage, Dagster run), its record counts and, for candidates and merges, the
gate verdicts and approvals. Publishing, versions, the gatekeeper and the CLI all read these back. lakeFS metadata
is a flat ``str -> str`` map, so the prefixing, the JSON encoding of the gates and the parsing of numbers happen
here and nowhere else. Commit metadata is evidence, not authority: anyone who can write to lakeFS can set it, so
the gatekeeper trusts Trainyard's own database record of a candidate, never these keys alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dagster_project.quality.result import GateVerdicts, verdicts_to_json

PREFIX = "trainyard."
PUBLISHED_STAGE = "published"
"""``stage`` of a publish candidate (the commit that may be merged into ``main``)."""
MERGED_STAGE = "merged"
"""``stage`` of the merge commit on ``main`` that publishes a batch."""


class MalformedMetadata(ValueError):
    """A commit carries ``trainyard.*`` keys Trainyard could not have written (hand-made or damaged)."""


class CommitMetadata(BaseModel):
    """What a Trainyard commit says about itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: str
    tenant: str | None = None
    dataset: str | None = None
    batch_id: str | None = None
    dagster_run_id: str = ""
    counts: dict[str, str] = Field(default_factory=dict)
    """Record counts and other figures of the stage (``records_in``, ``published``, ``balanced``...), as lakeFS
    stores them: strings."""
    gates: GateVerdicts = Field(default_factory=dict)
    """Gate verdicts: the gate a gate commit recorded, or every gate of a publish candidate and its merge."""
    approved_by: tuple[str, ...] = ()
    approved_commit: str | None = None
    """The candidate commit the data owners approved (owner publish policy)."""

    def to_lakefs(self) -> dict[str, str]:
        values: dict[str, str] = {f"{PREFIX}stage": self.stage, f"{PREFIX}dagster_run_id": self.dagster_run_id}
        for name in ("tenant", "dataset", "batch_id", "approved_commit"):
            if getattr(self, name) is not None:
                values[f"{PREFIX}{name}"] = str(getattr(self, name))
        values.update({f"{PREFIX}{k}": v for k, v in self.counts.items()})
        if self.gates:
            values[f"{PREFIX}gates"] = json.dumps(verdicts_to_json(self.gates))
        if self.approved_by:
            values[f"{PREFIX}approved_by"] = ",".join(self.approved_by)
        return values

    @classmethod
    def from_lakefs(cls, metadata: Mapping[str, str] | None) -> CommitMetadata | None:
        """The record on a commit, or None for a commit Trainyard did not make (no ``trainyard.stage``)."""
        own = {k.removeprefix(PREFIX): v for k, v in (metadata or {}).items() if k.startswith(PREFIX)}
        if "stage" not in own:
            return None
        fields = {name: own.pop(name) for name in ("stage", "tenant", "dataset", "batch_id", "dagster_run_id",
                                                   "approved_commit") if name in own}
        approved_by = tuple(a for a in own.pop("approved_by", "").split(",") if a)
        try:
            gates = json.loads(own.pop("gates")) if "gates" in own else {}
            return cls(**fields, counts=own, gates=gates, approved_by=approved_by)
        except (ValueError, ValidationError) as exc:  # json.JSONDecodeError is a ValueError
            problems = exc.errors() if isinstance(exc, ValidationError) else [{"loc": ("gates",), "msg": str(exc)}]
            first = problems[0]
            where = PREFIX + ".".join(str(part) for part in first["loc"])
            raise MalformedMetadata(f"{where}: {first['msg']} ({len(problems)} problem(s) in the trainyard.* "
                                    "commit metadata)") from exc

    @classmethod
    def with_counts(cls, counts: Mapping[str, object], **fields: object) -> CommitMetadata:
        """A record whose counts are given as numbers or flags (stored as lakeFS strings)."""
        return cls(counts={k: str(v) for k, v in counts.items()}, **fields)

    def count(self, name: str, default: int = 0) -> int:
        value = self.counts.get(name)
        return default if value is None else int(float(value))

    def belongs_to(self, dataset: str, batch_id: str) -> bool:
        return self.dataset == dataset and self.batch_id == batch_id
