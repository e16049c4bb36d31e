"""Handlers for lakeFS's commit routes: commit a branch, get a commit and the commit log with its filters.

Why this exists: the platform commits each run's outputs and reads history (log by object/prefix,
``since``, ``stop_at``, first parent) through these routes.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..common import ApiError
from ..routing import Request, Response, json_response, route
from ..store import LogQuery

if TYPE_CHECKING:  # type-only: the server imports the handlers
    from ..server import LakeFSEmulator


def _string_map(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ApiError(400, f"{name}: must be a map of strings")
    return value


@route("POST", "/repositories/{repository}/branches/{branch}/commits")
def _commit(app: LakeFSEmulator, req: Request) -> Response:
    if req.arg("source_metarange"):
        raise ApiError(501, "source_metarange is not supported by the emulator")
    body = req.json_object(("message",))
    date = body.get("date")
    if date is not None and not isinstance(date, int):
        raise ApiError(400, "date: must be an integer")
    commit = app.store.commit(
        req.params["repository"],
        req.params["branch"],
        req.user,
        body["message"],
        _string_map(body.get("metadata"), "metadata"),
        bool(body.get("allow_empty")),
        date,
    )
    return json_response(201, commit)


@route("GET", "/repositories/{repository}/commits/{commitId}")
def _get_commit(app: LakeFSEmulator, req: Request) -> Response:
    return json_response(200, app.store.get_commit(req.params["repository"], req.params["commitId"]))


def _parse_since(value: str) -> int | None:
    if not value:
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError as err:
        raise ApiError(400, "since: invalid date-time") from err


@route("GET", "/repositories/{repository}/refs/{ref}/commits")
def _log_commits(app: LakeFSEmulator, req: Request) -> Response:
    query = LogQuery(
        after=req.arg("after"),
        amount=req.amount(),
        objects=req.query.get("objects", []),
        prefixes=req.query.get("prefixes", []),
        limit=req.flag("limit"),
        first_parent=req.flag("first_parent"),
        since=_parse_since(req.arg("since")),
        stop_at=req.arg("stop_at"),
    )
    commits, has_more = app.store.log(req.params["repository"], req.params["ref"], query)
    pagination = {
        "has_more": has_more,
        "next_offset": commits[-1]["id"] if has_more and commits else "",
        "results": len(commits),
        "max_per_page": query.amount,
    }
    return json_response(200, {"pagination": pagination, "results": commits})
