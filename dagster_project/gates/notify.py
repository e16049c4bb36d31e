"""On-call hears about a gate where it is evaluated: a failed check raises an alert, a passing one resolves it.

Why here and not in a sensor over Dagster's event log: the check function holds the typed result (value,
threshold, comparison, worst offenders) and knows whether it blocks, so the alert is built from that record and
nothing is re-read or re-parsed; and no private Dagster event API is needed. A failed *blocking* gate stops the
run, so the caller also marks the run as alerted and the run-failure sensor does not announce it a second time.
"""

from __future__ import annotations

from dagster_project.alerts import Alert, AlertKind, AlertRouter, derive_dedupe_key, playbook_url
from dagster_project.gates.registry import sentence
from dagster_project.quality.result import GateResult
from dagster_project.stages.batch import Batch

CHECK_KINDS = (AlertKind.GATE_FAILED, AlertKind.CHECK_WARNING)


def gate_alert(result: GateResult, blocking: bool, batch: Batch, playbook_base_url: str,
               run_url: str | None) -> Alert:
    """The alert for a failed quality check: ``gate_failed`` when it blocks the batch, else ``check_warning``."""
    kind = AlertKind.GATE_FAILED if blocking else AlertKind.CHECK_WARNING
    verb = "blocked" if blocking else "warning on"
    where = f"{batch.tenant.name}/{batch.dataset.name} batch {batch.batch_id}"
    details: dict[str, object] = {"check": sentence(result), "worst_offenders": result.worst}
    if result.computed_on is not None:
        details["computed_on_commit"] = result.computed_on.commit_id
    return Alert(
        kind=kind, tenant=batch.tenant.name, dataset=batch.dataset.name, batch_id=batch.batch_id, branch=batch.branch,
        title=f"{result.name} gate {verb} {where}", metric=result.name, value=result.value,
        threshold=result.threshold, comparison=result.comparison, details=details,
        playbook_url=playbook_url(kind, playbook_base_url), run_url=run_url, channel=batch.tenant.slack_channel,
    )


def report_gate_result(router: AlertRouter, result: GateResult, blocking: bool, batch: Batch,
                       playbook_base_url: str, run_url: str | None, run_id: str = "") -> bool:
    """Raise the alert of a failed check, or resolve the open incident of one that passes again on the same batch.

    Returns True when an alert was raised (queued or counted as a repeat of an open incident).
    """
    if not result.passed:
        router.raise_alert(gate_alert(result, blocking, batch, playbook_base_url, run_url))
        return True
    for kind in CHECK_KINDS:
        key = derive_dedupe_key(kind.value, batch.tenant.name, batch.dataset.name, result.name, batch.batch_id)
        router.resolve(key, resolved_by=f"check passed in run {run_id}" if run_id else "check passed")
    return False
