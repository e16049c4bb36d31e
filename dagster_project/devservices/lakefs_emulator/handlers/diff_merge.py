"""Handlers for lakeFS's diff and merge routes: uncommitted diff, ref diffs, merge and merge base.

Why this exists: the platform inspects what a branch changes and publishes by merging into ``main``
(where the pre-merge gate runs), so these routes follow lakeFS's diff types and merge options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..routing import Request, Response, group_by_delimiter, json_response, paginate, route
from ..store import MergeOptions
from .commits import _string_map

if TYPE_CHECKING:  # type-only: the server imports the handlers
    from ..server import LakeFSEmulator


def _diff_response(req: Request, changes: list[tuple[str, str, dict[str, Any]]]) -> Response:
    items = [
        (path, {"type": kind, "path": path, "path_type": "object", "size_bytes": entry["size_bytes"]})
        for path, kind, entry in changes
    ]

    def prefix_entry(path: str) -> dict[str, Any]:
        return {"type": "prefix_changed", "path": path, "path_type": "common_prefix"}

    grouped = group_by_delimiter(items, req.arg("prefix"), req.arg("delimiter"), prefix_entry)
    results, pagination = paginate(grouped, req.arg("after"), req.amount())
    return json_response(200, {"pagination": pagination, "results": results})


@route("GET", "/repositories/{repository}/branches/{branch}/diff")
def _diff_branch(app: LakeFSEmulator, req: Request) -> Response:
    return _diff_response(req, app.store.diff_branch(req.params["repository"], req.params["branch"]))


@route("GET", "/repositories/{repository}/refs/{leftRef}/diff/{rightRef}")
def _diff_refs(app: LakeFSEmulator, req: Request) -> Response:
    changes = app.store.diff_refs(
        req.params["repository"], req.params["leftRef"], req.params["rightRef"], req.arg("type", "three_dot")
    )
    return _diff_response(req, changes)


@route("POST", "/repositories/{repository}/refs/{sourceRef}/merge/{destinationBranch}")
def _merge(app: LakeFSEmulator, req: Request) -> Response:
    body = req.json_object() if req.body.strip() else {}
    options = MergeOptions(
        message=body.get("message") or "",
        metadata=_string_map(body.get("metadata"), "metadata"),
        strategy=body.get("strategy") or "",
        force=bool(body.get("force")),
        allow_empty=bool(body.get("allow_empty")),
        squash_merge=bool(body.get("squash_merge")),
    )
    reference = app.store.merge(
        req.params["repository"], req.params["sourceRef"], req.params["destinationBranch"], req.user, options
    )
    return json_response(200, {"reference": reference})


@route("GET", "/repositories/{repository}/refs/{sourceRef}/merge/{destinationBranch}")
def _find_merge_base(app: LakeFSEmulator, req: Request) -> Response:
    result = app.store.merge_base(
        req.params["repository"], req.params["sourceRef"], req.params["destinationBranch"]
    )
    return json_response(200, result)
