"""Alerts about batch runs themselves, rather than about their data: a run that failed, a run that stalled.

Why a stalled-run alert: a run whose worker is killed mid-step (out of memory, a node lost, ``kill -9``) never
reports a failure -- it stays STARTED, and with one run per batch at a time the next run of that batch queues
behind it forever. Dagster's run monitoring ends such runs after ``max_runtime_seconds``; on-call should hear
long before that, when the run stops making progress (no new event for a while).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from dagster_project import layout
from dagster_project.alerts.model import Alert, AlertKind, derive_dedupe_key, playbook_url


def _where(dataset: str, batch_id: str | None) -> dict[str, str | None]:
    return {"batch_id": batch_id, "branch": layout.batch_branch(dataset, batch_id) if batch_id else None}


def run_failed_alert(*, tenant: str, dataset: str, batch_id: str | None, job: str, error: str, channel: str,
                     playbook_base_url: str, run_url: str | None) -> Alert:
    return Alert(
        kind=AlertKind.RUN_FAILED, tenant=tenant, dataset=dataset, **_where(dataset, batch_id),
        title=f"batch run failed: {tenant}/{dataset}" + (f" batch {batch_id}" if batch_id else ""),
        metric="run", details={"error": (error or "run failed")[:1500], "job": job},
        playbook_url=playbook_url(AlertKind.RUN_FAILED, playbook_base_url), run_url=run_url, channel=channel)


def stalled_key(tenant: str, dataset: str, batch_id: str | None, run_id: str) -> str:
    """One incident per stalled run (a later run of the same batch is a new incident)."""
    return derive_dedupe_key(AlertKind.RUN_STALLED.value, tenant, dataset, f"run:{run_id}", batch_id)


def is_stalled(last_progress: datetime, now: datetime, after: timedelta) -> bool:
    return now - last_progress >= after


def run_stalled_alert(*, tenant: str, dataset: str, batch_id: str | None, run_id: str, job: str,
                      last_progress: datetime, now: datetime, channel: str, playbook_base_url: str,
                      run_url: str | None) -> Alert:
    quiet = int((now - last_progress).total_seconds() // 60)
    return Alert(
        kind=AlertKind.RUN_STALLED, tenant=tenant, dataset=dataset, **_where(dataset, batch_id),
        title=f"batch run stalled: {tenant}/{dataset}" + (f" batch {batch_id}" if batch_id else ""),
        metric="minutes_without_progress", value=float(quiet),
        details={"run_id": run_id, "job": job, "last_progress": last_progress.isoformat()},
        dedupe_key=stalled_key(tenant, dataset, batch_id, run_id),
        playbook_url=playbook_url(AlertKind.RUN_STALLED, playbook_base_url), run_url=run_url, channel=channel)
