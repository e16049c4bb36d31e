"""How an alert reads in Slack: a plain-text fallback that carries the essentials, and Block Kit blocks.

Why apart from delivery: what on-call reads (title, where, value against threshold, worst offenders, run and
playbook links) is tested and reviewed on its own, and the same rendering serves alerts, repeats and recoveries.
Values that come from data are escaped for Slack mrkdwn and every text is cut to Slack's limits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dagster_project.alerts.model import Alert, Severity
from dagster_project.alerts.outbox import MessageType, OutboxMessage
from dagster_project.clock import as_utc
from dagster_project.quality.result import Comparison

SEVERITY_EMOJI: dict[Severity, str] = {
    Severity.CRITICAL: ":rotating_light:",
    Severity.ERROR: ":red_circle:",
    Severity.WARNING: ":warning:",
    Severity.INFO: ":information_source:",
}
RESOLVED_EMOJI = ":white_check_mark:"
HEADER_LIMIT = 150
SECTION_TEXT_LIMIT = 2900
MAX_OFFENDERS = 5


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".4g")


def _escape(text: str) -> str:
    """Slack mrkdwn control characters (``&``, ``<``, ``>``) in values that come from data."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_deviation(alert: Alert) -> str | None:
    """"by how much": e.g. ``0.71 (required >= 0.85; 0.14 short)``."""
    if alert.value is None:
        return None
    text = _number(alert.value)
    if alert.threshold is None or alert.comparison is None:
        return text
    gap = alert.value - alert.threshold
    if alert.comparison is Comparison.AT_LEAST and gap < 0 or alert.comparison is Comparison.AT_MOST and gap > 0:
        word = "short" if gap < 0 else "over"
        return f"{text} (required {alert.comparison} {_number(alert.threshold)}; {_number(abs(gap))} {word})"
    return f"{text} (required {alert.comparison} {_number(alert.threshold)})"


def _offender_lines(details: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, items in details.items():
        if not isinstance(items, list | tuple) or not items:
            continue
        lines.append(f"*{_escape(key.replace('_', ' ').capitalize())}* (top {min(len(items), MAX_OFFENDERS)} "
                     f"of {len(items)})")
        for item in items[:MAX_OFFENDERS]:
            if isinstance(item, dict):
                rendered = ", ".join(f"{k}={_number(v) if isinstance(v, float) else v}" for k, v in item.items())
            else:
                rendered = str(item)
            lines.append(f"• {_escape(_truncate(rendered, 200))}")
    return lines


def _scalar_details(details: dict[str, Any]) -> list[str]:
    return [f"{key}: {_number(value) if isinstance(value, float) else value}"
            for key, value in details.items() if not isinstance(value, list | tuple | dict)]


def _where(alert: Alert) -> str:
    parts = [f"{alert.tenant}/{alert.dataset}"]
    if alert.batch_id:
        parts.append(f"batch {alert.batch_id}")
    if alert.branch:
        parts.append(f"branch {alert.branch}")
    return ", ".join(parts)


def _links(alert: Alert) -> list[str]:
    """The Slack links every message about an alert carries: the Dagster run (if any) and the playbook."""
    links = [f"<{alert.run_url}|Dagster run>"] if alert.run_url else []
    return [*links, f"<{alert.playbook_url}|Playbook: {alert.kind.value}>"]


def format_blocks(alert: Alert, occurrences: int = 1) -> tuple[str, list[dict[str, Any]]]:
    """The Slack message for an alert: (plain-text fallback, Block Kit blocks).

    The fallback is what notifications, screen readers and clients without blocks show, so it carries the
    essentials on its own: title, where, metric, value vs threshold, branch, run and playbook links.
    """
    severity = Severity(alert.severity)
    deviation = describe_deviation(alert)
    fields = [f"*Tenant / dataset*\n{_escape(alert.tenant)} / {_escape(alert.dataset)}",
              f"*Batch*\n`{_escape(alert.batch_id)}`" if alert.batch_id else "*Batch*\nn/a",
              f"*Branch*\n`{_escape(alert.branch)}`" if alert.branch else "*Branch*\nn/a"]
    if alert.metric:
        fields.append(f"*Metric*\n{_escape(alert.metric)}")
    if deviation is not None:
        fields.append(f"*Value vs threshold*\n{_escape(deviation)}")
    fields.append(f"*Severity*\n{severity.value}")
    blocks: list[dict[str, Any]] = [
        {"type": "header",
         "text": {"type": "plain_text", "emoji": True,
                  "text": _truncate(f"{SEVERITY_EMOJI[severity]} {alert.title}", HEADER_LIMIT)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _truncate(f, 1900)} for f in fields[:10]]},
    ]
    if occurrences > 1:
        blocks.append({"type": "section", "text": {
            "type": "mrkdwn", "text": f":repeat: Repeated {occurrences} times (repeats are counted, not re-posted)."}})
    offenders = _offender_lines(alert.details)
    if offenders:
        blocks.append({"type": "section",
                       "text": {"type": "mrkdwn", "text": _truncate("\n".join(offenders), SECTION_TEXT_LIMIT)}})
    links = _links(alert)
    extra = _scalar_details(alert.details)
    context = [" · ".join(links), f"{alert.kind.value} · {alert.occurred_at.strftime('%Y-%m-%d %H:%M:%S UTC')}"]
    if extra:
        context.append(_escape(_truncate(" · ".join(extra), 1900)))
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": c} for c in context]})

    text = f"[{severity.value.upper()}] {alert.title} ({_where(alert)})"
    if alert.metric:
        text += f": {alert.metric} = {deviation if deviation is not None else 'n/a'}"
        if alert.threshold is not None and alert.comparison is None:
            text += f", threshold {_number(alert.threshold)}"
    if occurrences > 1:
        text += f". Repeated {occurrences} times"
    if alert.run_url:
        text += f". Run: {alert.run_url}"
    text += f". Playbook: {alert.playbook_url}"
    return text, blocks


def format_recovery(alert: Alert, resolved_by: str | None = None, resolved_at: datetime | None = None,
                    occurrences: int = 1) -> tuple[str, list[dict[str, Any]]]:
    """The "resolved" message for an incident opened by ``alert``: (plain-text fallback, blocks)."""
    who = f" by {resolved_by}" if resolved_by else ""
    when = f" at {as_utc(resolved_at).strftime('%Y-%m-%d %H:%M:%S UTC')}" if resolved_at else ""
    text = f"[RESOLVED] {alert.title} ({_where(alert)}) resolved{who}{when}"
    if occurrences > 1:
        text += f" after {occurrences} occurrences"
    text += f". Playbook: {alert.playbook_url}"
    summary = f"Resolved{_escape(who)}{when}."
    if occurrences > 1:
        summary += f" The alert fired {occurrences} times while open."
    if alert.metric:
        summary += f"\nWas: {_escape(alert.metric)} = {_escape(describe_deviation(alert) or 'n/a')}"
    links = _links(alert)
    blocks: list[dict[str, Any]] = [
        {"type": "header",
         "text": {"type": "plain_text", "emoji": True,
                  "text": _truncate(f"{RESOLVED_EMOJI} Resolved: {alert.title}", HEADER_LIMIT)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": summary},
         "fields": [{"type": "mrkdwn", "text": f"*Tenant / dataset*\n{_escape(alert.tenant)} / "
                                               f"{_escape(alert.dataset)}"},
                    {"type": "mrkdwn", "text": f"*Batch*\n{_escape(alert.batch_id or 'n/a')}"},
                    {"type": "mrkdwn", "text": f"*Branch*\n{_escape(alert.branch or 'n/a')}"}]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(links)}]},
    ]
    return text, blocks


def render(message: OutboxMessage) -> tuple[str, list[dict[str, Any]]]:
    """The text and blocks an outbox message is posted with."""
    alert = message.alert
    occurrences = int(message.payload.get("occurrences", 1))
    if message.message_type is MessageType.RECOVERY:
        resolved_at = message.payload.get("resolved_at")
        return format_recovery(alert, message.payload.get("resolved_by"),
                               datetime.fromisoformat(resolved_at) if resolved_at else None, occurrences)
    return format_blocks(alert, occurrences)

