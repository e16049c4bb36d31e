"""A batch with nothing to publish is an incident, never an empty version.

Why: a drop whose manifest is missing or unreadable, or whose every record is quarantined, used to run to a
*successful* end and merge a version with 0 records -- training would read "a new version" that holds nothing, and
only a log line said why. Now the stage that finds nothing left stops the batch with :class:`DropRejected` (after
committing the quarantine table to the batch branch, so every record keeps its visible reason), the run fails, and
on-call gets a ``drop_rejected`` alert that names the reasons and tells them to ask the client for a new drop.
"""

from __future__ import annotations

from collections.abc import Mapping

from dagster_project.alerts import Alert, AlertKind, playbook_url
from dagster_project.layout import Stage
from dagster_project.stages.batch import DUPLICATES_FILE, Batch, all_quarantine, reason_counts


class DropRejected(RuntimeError):
    """Nothing of the batch can be published; ``reasons`` counts its quarantined records by reason."""

    def __init__(self, batch: Batch, why: str, records_in: int, reasons: Mapping[str, int]) -> None:
        self.batch_id = batch.batch_id
        self.why = why
        self.records_in = records_in
        self.reasons = dict(reasons)
        super().__init__(f"{batch.tenant.name}/{batch.dataset.name} batch {batch.batch_id} rejected: {why}")


def reject_if_empty(batch: Batch, remaining: int, stage: str) -> None:
    """Raise :class:`DropRejected` when no record of the batch is left after ``stage`` (run once the stage's
    quarantine and duplicates are written: every record the batch received is then counted in one of them)."""
    if remaining > 0:
        return
    reasons = reason_counts(all_quarantine(batch))
    duplicates = batch.repo.get_frame(batch.branch, batch.stage_file(Stage.DEDUP, DUPLICATES_FILE))
    if duplicates is not None and len(duplicates):
        reasons["duplicate of another record"] = len(duplicates)
    records_in = sum(reasons.values())
    why = "the drop holds no records" if records_in == 0 else f"none of its {records_in} records is left after {stage}"
    raise DropRejected(batch, why, records_in, reasons)


def drop_rejected_alert(batch: Batch, rejection: DropRejected, playbook_base_url: str, run_url: str | None) -> Alert:
    top = sorted(rejection.reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    return Alert(
        kind=AlertKind.DROP_REJECTED, tenant=batch.tenant.name, dataset=batch.dataset.name, batch_id=batch.batch_id,
        branch=batch.branch, title=f"drop rejected: {batch.tenant.name}/{batch.dataset.name} batch {batch.batch_id}",
        metric="records_publishable", value=0.0,
        details={"why": rejection.why, "records_in": rejection.records_in,
                 "quarantine_reasons": [{"reason": r, "records": n} for r, n in top],
                 "next_step": "ask the client team for a corrected drop (a new drop folder); nothing reached main"},
        playbook_url=playbook_url(AlertKind.DROP_REJECTED, playbook_base_url), run_url=run_url,
        channel=batch.tenant.slack_channel)
