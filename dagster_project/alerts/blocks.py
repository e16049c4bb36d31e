"""How an alert reads in Slack: a plain-text fallback that carries the essentials, and Block Kit blocks.

Why apart from delivery: what on-call reads (title, where, value against threshold, worst offenders, run and
playbook links) is tested and reviewed on its own, and the same rendering serves alerts, repeats and recoveries.
Values that come from data are escaped for Slack mrkdwn and every text is cut to Slack's limits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dagster_project.alerts.model import Alert, AlertKind, Severity
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
    """At most ``limit`` characters, never cutting an ``&amp;``-style entity in half."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:] and len(cut) - amp < 6:
        cut = cut[:amp]
    return cut + "…"


def _clip(text: str, limit: int) -> str:
    """Data for mrkdwn: escaped first, then cut, so the escaped text still fits Slack's limit."""
    return _truncate(_escape(text), limit)


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


def _value(value: Any) -> str:
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, list | tuple):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items())
    return str(value)


def _readable(item: Any) -> str:
    """``record 3f2a… · 2 matches · kinds iban, email``, never a Python repr."""
    if not isinstance(item, dict):
        return _value(item)
    parts = []
    for key, value in item.items():
        label = key.replace("_", " ")
        if key.endswith("_id") and isinstance(value, str):
            parts.append(f"{label.removesuffix(' id')} `{_truncate(value, 40)}`")
        else:
            parts.append(f"{label} {_value(value)}")
    return " · ".join(parts)


def _offender_lines(details: dict[str, Any]) -> list[str]:
    """Lists of worst offenders as bullets; summary entries (a dict of counts, e.g. findings by kind) as one line."""
    lines: list[str] = []
    for key, items in details.items():
        if not isinstance(items, list | tuple) or not items:
            continue
        summaries = [i for i in items if isinstance(i, dict) and len(i) == 1 and isinstance(
            next(iter(i.values())), dict | str)]
        offenders = [i for i in items if not any(i is s for s in summaries)]
        for summary in summaries:
            (name, value), = summary.items()
            lines.append(f"*{_escape(name.replace('_', ' ').capitalize())}:* {_clip(_value(value), 400)}")
        if offenders:
            shown = offenders[:MAX_OFFENDERS]
            lines.append(f"*{_escape(key.replace('_', ' ').capitalize())}* ({len(shown)} shown"
                         + (f" of the {len(offenders)} listed" if len(offenders) > len(shown) else "") + ")")
            lines += [f"• {_clip(_readable(item), 200)}" for item in shown]
    return lines


def _where(alert: Alert) -> str:
    parts = [f"{alert.tenant}/{alert.dataset}"]
    if alert.batch_id:
        parts.append(f"batch {alert.batch_id}")
    if alert.branch:
        parts.append(f"branch {alert.branch}")
    return ", ".join(parts)


def _opens_in_slack(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("https://", "http://"))


def _links(alert: Alert) -> list[str]:
    """The Slack links every message about an alert carries: the Dagster run (if any) and the playbook."""
    links = [f"<{alert.run_url}|Dagster run>"] if alert.run_url else []
    playbook = f"<{alert.playbook_url}|Playbook: {alert.kind.value}>" if _opens_in_slack(alert.playbook_url) else \
        f"Playbook: `{alert.playbook_url}` (set TRAINYARD_PLAYBOOK_BASE_URL to a web address)"
    return [*links, playbook]


def _buttons(alert: Alert, incident_id: int | None, acknowledge: bool = False) -> dict[str, Any] | None:
    """URL buttons for what opens in a browser (Slack rejects a button whose URL is not http(s)), and
    *Acknowledge* where the Trainyard service receives Slack's interactions."""
    elements = []
    if acknowledge and incident_id:
        elements.append({"type": "button", "text": {"type": "plain_text", "text": "Acknowledge"},
                         "action_id": "acknowledge", "value": str(incident_id)})
    if _opens_in_slack(alert.run_url):
        elements.append({"type": "button", "text": {"type": "plain_text", "text": "View run"}, "url": alert.run_url,
                         "action_id": "view_run", **({"style": "primary"} if alert.severity != Severity.INFO else {})})
    if _opens_in_slack(alert.playbook_url):
        elements.append({"type": "button", "text": {"type": "plain_text", "text": "Playbook"},
                         "url": alert.playbook_url, "action_id": "playbook"})
    return {"type": "actions", "block_id": f"links-{incident_id or 0}", "elements": elements} if elements else None


def _mention_text(mentions: tuple[str, ...]) -> str:
    return " ".join(f"<!subteam^{m}>" if m.startswith("S") else f"<@{m}>" for m in mentions)


def _ack_hint(incident_id: int | None) -> str | None:
    return f"Take it on: `trainyard ack {incident_id} --as <your email>`" if incident_id else None


def format_blocks(alert: Alert, occurrences: int = 1, mentions: tuple[str, ...] = (),
                  incident_id: int | None = None, acknowledge: bool = False) -> tuple[str, list[dict[str, Any]]]:
    """The Slack message for an alert: (plain-text fallback, Block Kit blocks).

    The fallback is what notifications, screen readers and clients without blocks show, so it carries the
    essentials on its own: title, where, metric, value vs threshold, branch, run and playbook links.
    """
    if alert.kind is AlertKind.APPROVAL_REQUESTED:
        return format_approval(alert, mentions, incident_id)
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
    ]
    summary = [str(alert.details[k]) for k in ("check", "error") if isinstance(alert.details.get(k), str)]
    if summary or mentions:
        text = "\n".join(_clip(s, 1500) for s in summary)
        if mentions:
            text = f"{_mention_text(mentions)} {text}".strip()
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _truncate(text, SECTION_TEXT_LIMIT)}})
    blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": _truncate(f, 1900)} for f in fields[:10]]})
    if occurrences > 1:
        blocks.append({"type": "section", "text": {
            "type": "mrkdwn", "text": f":repeat: Repeated {occurrences} times (repeats are counted, not re-posted)."}})
    offenders = _offender_lines(alert.details)
    if offenders:
        blocks.append({"type": "section",
                       "text": {"type": "mrkdwn", "text": _truncate("\n".join(offenders), SECTION_TEXT_LIMIT)}})
    extra = [f"{key.replace('_', ' ')}: {_value(value)}" for key, value in alert.details.items()
             if key not in ("check", "error") and not isinstance(value, list | tuple | dict)]
    if extra:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": _clip("\n".join(extra), 1900)}})
    buttons = _buttons(alert, incident_id, acknowledge)
    if buttons:
        blocks.append(buttons)
    context = [" · ".join(_links(alert)),
               f"{alert.kind.value} · {alert.occurred_at.strftime('%Y-%m-%d %H:%M:%S UTC')}"
               + (f" · incident {incident_id}" if incident_id else "")]
    hint = _ack_hint(incident_id)
    if hint:
        context.append(hint)
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
    if mentions:
        text = f"{_mention_text(mentions)} {text}"
    return text, blocks


def format_approval(alert: Alert, mentions: tuple[str, ...] = (),
                    incident_id: int | None = None) -> tuple[str, list[dict[str, Any]]]:
    """An approval request reads as a request to the data owners, not as an alert: what the batch changes on
    ``main``, its gates, and the two commands, in code blocks to copy."""
    d = alert.details
    gates = [str(g) for g in d.get("gates", [])]
    passed = sum(1 for g in gates if g.rstrip().endswith("passed"))
    lines = [f"{_mention_text(mentions)} " if mentions else "",
             f"*{_escape(str(d.get('diff_vs_main', '')))}* compared with `main`."]
    changes = [str(c) for c in d.get("label_changes", [])]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                    "text": _truncate(f":inbox_tray: {alert.title}", HEADER_LIMIT)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _truncate("".join(lines), SECTION_TEXT_LIMIT)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _truncate(
            "*Label distribution*\n" + "\n".join(f"• {_escape(c)}" for c in changes), SECTION_TEXT_LIMIT)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _truncate(
            f"*Gates: {passed} of {len(gates)} passed*\n" + "\n".join(
                f"{':white_check_mark:' if g.rstrip().endswith('passed') else ':x:'} {_escape(g)}" for g in gates),
            SECTION_TEXT_LIMIT)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _truncate(
            "*To approve* (binds to the commit you reviewed):\n```" + _escape(str(d.get("approve", ""))) + "```\n"
            "*To reject*:\n```" + _escape(str(d.get("reject", ""))) + "```", SECTION_TEXT_LIMIT)}},
    ]
    buttons = _buttons(alert, incident_id)
    if buttons:
        blocks.append(buttons)
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(
        [*_links(alert), f"candidate commit `{_escape(str(d.get('commit', '')))}`"])}]})
    text = (f"{_mention_text(mentions) + ' ' if mentions else ''}{alert.title}: {d.get('diff_vs_main', '')}. "
            f"Approve: {d.get('approve', '')}. Reject: {d.get('reject', '')}")
    return text, blocks


def format_acknowledgement(alert: Alert, actor: str, at: datetime | None, note: str = "") -> tuple[str, list]:
    when = f" at {as_utc(at).strftime('%Y-%m-%d %H:%M:%S UTC')}" if at else ""
    text = f":eyes: {actor} acknowledged {alert.title}{when}" + (f": {note}" if note else "")
    return text, [{"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, 2900)}}]


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


def render(message: OutboxMessage, mentions: tuple[str, ...] = (),
           acknowledge: bool = False) -> tuple[str, list[dict[str, Any]]]:
    """The text and blocks an outbox message is posted with; ``mentions`` are the Slack ids to notify."""
    alert = message.alert
    occurrences = int(message.payload.get("occurrences", 1))
    if message.message_type is MessageType.ACKNOWLEDGEMENT:
        at = message.payload.get("acknowledged_at")
        return format_acknowledgement(alert, str(message.payload.get("acknowledged_by")),
                                      datetime.fromisoformat(at) if at else None, str(message.payload.get("note", "")))
    if message.message_type is MessageType.RECOVERY:
        resolved_at = message.payload.get("resolved_at")
        return format_recovery(alert, message.payload.get("resolved_by"),
                               datetime.fromisoformat(resolved_at) if resolved_at else None, occurrences)
    return format_blocks(alert, occurrences, mentions, message.payload.get("incident_id"), acknowledge)

