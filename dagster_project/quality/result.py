"""The one record of a quality check's result, from the function that measures it to the Slack message about it.

Why one typed record: a gate's result is computed by a plain function of this package, committed as JSON on the
batch branch, summarised in lakeFS commit metadata and in the platform database (what the gatekeeper trusts),
shown as Dagster check metadata and turned into an alert. Each of those used to re-shape it (and one re-derived the
comparison from text); now every one of them reads and writes this model, and its serialisations live here:
:meth:`GateResult.to_json` / :meth:`GateResult.from_json` for the branch record, :meth:`GateResult.verdict` for the
compact form that travels in commit metadata and the candidates table.

``worst`` holds JSON-able dicts of ids, field names, kinds and numbers, never record text or PII values.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator


class Comparison(StrEnum):
    """How a check's value must stand against its threshold for the check to pass."""

    AT_LEAST = ">="
    """The value must reach the threshold (agreement, accuracy, completeness)."""
    AT_MOST = "<="
    """The value must not exceed the threshold (duplicate rate, drift, PII left)."""

    def holds(self, value: float, threshold: float) -> bool:
        return value >= threshold if self is Comparison.AT_LEAST else value <= threshold

    @property
    def phrase(self) -> str:
        return "at least" if self is Comparison.AT_LEAST else "at most"


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars become Python numbers, timestamps ISO strings, containers recurse."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


class ComputedOn(BaseModel):
    """Where a gate read its inputs: the batch branch's head commit and the paths it read there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    commit_id: str
    paths: tuple[str, ...] = ()
    reference_commit: str | None = None
    """``main``'s head when the gate also compared the batch with what is published (drift)."""


class GateVerdict(BaseModel):
    """The part of a :class:`GateResult` that travels with a commit: enough to re-check, small enough for metadata."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    passed: bool
    value: float
    threshold: float
    comparison: Comparison


GateVerdicts = dict[str, GateVerdict]
"""Verdicts by gate name: what a publish candidate carries in its commit metadata and in the candidates table."""
_VERDICTS = TypeAdapter(GateVerdicts)


def verdicts_to_json(verdicts: GateVerdicts) -> dict[str, Any]:
    """Plain JSON values, in gate-name order (so equal verdicts serialise to equal text)."""
    return dict(sorted(_VERDICTS.dump_python(verdicts, mode="json").items()))


def verdicts_from_json(data: Any) -> GateVerdicts:
    """Parse and validate :func:`verdicts_to_json` output (raises ``pydantic.ValidationError``)."""
    return _VERDICTS.validate_python(data)


class GateResult(BaseModel):
    """One evaluation of one check: ``passed`` says whether ``value <comparison> threshold`` held."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    passed: bool
    value: float
    threshold: float
    comparison: Comparison
    sample_size: int = Field(ge=0)
    worst: list[dict[str, Any]] = Field(default_factory=list)
    """Worst offenders, most severe first (ids, counts, per-annotator figures; never text or PII values)."""
    statistic: str | None = None
    """What ``value`` is when it is not the plain metric, e.g. ``Wilson upper bound`` or ``|AUC - 0.5|``."""
    computed_on: ComputedOn | None = None
    evaluated_at: datetime | None = None

    @field_validator("worst", mode="before")
    @classmethod
    def _plain_json(cls, value: Any) -> Any:
        return jsonable(value) if isinstance(value, list | tuple) else value

    @property
    def not_applicable(self) -> str | None:
        """Why the check did not apply to this batch (it then passes), if it did not."""
        return next((str(w["not_applicable"]) for w in self.worst if "not_applicable" in w), None)

    def describe(self) -> str:
        """One sentence an operator reads, e.g. ``agreement 0.62 must be at least 0.67: FAILED``."""
        if self.not_applicable:
            return f"{self.name}: passed, not applicable ({self.not_applicable})"
        measured = f"{self.statistic} of {self.name}" if self.statistic else self.name
        verdict = "passed" if self.passed else "FAILED"
        return (f"{measured} {_number(self.value)} must be {self.comparison.phrase} {_number(self.threshold)} "
                f"(n={self.sample_size}): {verdict}")

    def verdict(self) -> GateVerdict:
        return GateVerdict(passed=self.passed, value=self.value, threshold=self.threshold,
                           comparison=self.comparison)

    def measurement(self) -> GateResult:
        """The result without where and when it was computed: two evaluations of unchanged data compare equal."""
        return self.model_copy(update={"computed_on": None, "evaluated_at": None})

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> GateResult:
        return cls.model_validate_json(data)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else format(value, ".4g")
