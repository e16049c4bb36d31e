"""What an alert is: its kind, severity, where it happened, by how much, and which playbook says what to do.

Why a model of its own: the gates, the publishing sensors, the run-failure sensor and the CLI all raise alerts, and
the outbox stores them as JSON; one frozen pydantic record keeps every raiser and every renderer on the same fields.
The comparison is the gate vocabulary's :class:`~dagster_project.quality.result.Comparison`, not a string.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dagster_project.clock import as_utc, utcnow
from dagster_project.quality.result import Comparison

PLAYBOOK_DIR = Path(__file__).resolve().parents[2] / "ops_playbooks"
"""One Markdown runbook per alert kind, at the repository root (found from an editable install too)."""

class Severity(StrEnum):
    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class AlertKind(StrEnum):
    """Every alert kind the platform raises -- the single list; each has ``ops_playbooks/<kind>.md``."""

    GATE_FAILED = "gate_failed"
    """A blocking quality gate failed; the batch is stopped before publish."""
    CHECK_WARNING = "check_warning"
    """A non-blocking (WARN) check failed; the batch continues."""
    RUN_FAILED = "run_failed"
    """A batch run failed for a reason other than a gate."""
    RUN_STALLED = "run_stalled"
    """A batch run has been STARTED without any new event for too long (a killed or hung run worker)."""
    MERGE_CONFLICT = "merge_conflict"
    """Merging a batch branch into main hit a conflict."""
    DROP_REJECTED = "drop_rejected"
    """Nothing of a drop can be published (manifest missing or unreadable, every record quarantined)."""
    UNTRUSTED_VERSION = "untrusted_version"
    """A version-shaped tag Trainyard did not create (or that was moved) appeared; it is ignored."""
    APPROVAL_REQUESTED = "approval_requested"
    """A batch passed every gate and waits for its data owners' approval (publish policy ``owner``)."""
    OBJECT_NOT_INGESTED = "object_not_ingested"
    """Objects under ``incoming/`` that no batch will read: outside any drop folder, or added to a drop after it
    became a batch. The client must send them in a new drop."""
    SENSOR_FAILING = "sensor_failing"
    """A sensor's ticks keep failing (a dependency down, a bug): what it watches is not being watched."""


DEFAULT_SEVERITY: dict[AlertKind, Severity] = {
    AlertKind.GATE_FAILED: Severity.ERROR,
    AlertKind.CHECK_WARNING: Severity.WARNING,
    AlertKind.RUN_FAILED: Severity.ERROR,
    AlertKind.RUN_STALLED: Severity.ERROR,
    AlertKind.MERGE_CONFLICT: Severity.ERROR,
    AlertKind.DROP_REJECTED: Severity.ERROR,
    AlertKind.UNTRUSTED_VERSION: Severity.CRITICAL,
    AlertKind.APPROVAL_REQUESTED: Severity.INFO,
    AlertKind.OBJECT_NOT_INGESTED: Severity.WARNING,
    AlertKind.SENSOR_FAILING: Severity.ERROR,
}
"""The severity an alert gets unless the raiser says otherwise; each playbook's front matter states the same."""


def playbook_path(kind: AlertKind | str) -> Path:
    """The runbook file for an alert kind (``ops_playbooks/<kind>.md`` at the repository root)."""
    return PLAYBOOK_DIR / f"{AlertKind(kind).value}.md"


def playbook_url(kind: AlertKind | str, base_url: str) -> str:
    """Where on-call reads the runbook, e.g. ``<repo web URL>/blob/main/ops_playbooks/gate_failed.md``."""
    return f"{base_url.rstrip('/')}/{AlertKind(kind).value}.md"


def derive_dedupe_key(kind: str, tenant: str, dataset: str, metric: str | None, batch_id: str | None) -> str:
    """``kind:tenant:dataset:metric:batch_id`` with ``-`` for a missing part: one incident per gate and batch."""
    return ":".join([str(kind), tenant, dataset, metric or "-", batch_id or "-"])


class Alert(BaseModel):
    """Everything on-call needs to act: what failed, where (tenant, dataset, batch, branch), by how much, and
    what to do (playbook and run links). Immutable, JSON-serialisable (it is stored in the outbox)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: AlertKind
    severity: Severity
    tenant: str = Field(min_length=1)
    dataset: str = Field(min_length=1)
    batch_id: str | None = None
    branch: str | None = None
    """The lakeFS branch holding the batch (``batch-<dataset>-<batch_id>``)."""
    title: str = Field(min_length=1)
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None
    comparison: Comparison | None = None
    """What the value must satisfy against the threshold, e.g. ``>=`` for a minimum."""
    details: dict[str, Any] = Field(default_factory=dict)
    """Extra evidence; list values (e.g. ``worst_items``) are shown as the worst offenders."""
    dedupe_key: str
    playbook_url: str = Field(min_length=1)
    run_url: str | None = None
    channel: str = Field(min_length=1)
    """The tenant's Slack channel, e.g. ``#northbank-data-oncall``."""
    occurred_at: datetime = Field(default_factory=utcnow)

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_kind(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("severity") is None and data.get("kind") is not None:
            data["severity"] = DEFAULT_SEVERITY[AlertKind(data["kind"])]
        if not data.get("dedupe_key") and data.get("kind") is not None:
            data["dedupe_key"] = derive_dedupe_key(AlertKind(data["kind"]).value, data.get("tenant", ""),
                                                   data.get("dataset", ""), data.get("metric"), data.get("batch_id"))
        return data

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return as_utc(value)
