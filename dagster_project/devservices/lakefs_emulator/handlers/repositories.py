"""Handlers for lakeFS's repository routes: list/create/get/delete and branch protection settings.

Why this exists: the platform creates its repositories and protects ``main`` through these routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..common import ApiError
from ..routing import Request, Response, json_response, paginate, route
from ..store import protection_etag

if TYPE_CHECKING:  # type-only: the server imports the handlers
    from ..server import LakeFSEmulator


@route("GET", "/repositories")
def _list_repositories(app: LakeFSEmulator, req: Request) -> Response:
    prefix, search = req.arg("prefix"), req.arg("search")
    items = [
        (repo["id"], repo)
        for repo in app.store.list_repositories()
        if repo["id"].startswith(prefix) and search in repo["id"]
    ]
    results, pagination = paginate(items, req.arg("after"), req.amount())
    return json_response(200, {"pagination": pagination, "results": results})


@route("POST", "/repositories")
def _create_repository(app: LakeFSEmulator, req: Request) -> Response:
    if req.flag("bare"):
        raise ApiError(501, "bare repositories are not supported by the emulator")
    body = req.json_object(("name", "storage_namespace"))
    if body.get("sample_data"):
        raise ApiError(501, "sample data is not supported by the emulator")
    if body.get("read_only"):
        raise ApiError(501, "read-only repositories are not supported by the emulator")
    repo = app.store.create_repository(
        body["name"], body["storage_namespace"], body.get("default_branch") or "main", req.user
    )
    return json_response(201, repo)


@route("GET", "/repositories/{repository}")
def _get_repository(app: LakeFSEmulator, req: Request) -> Response:
    return json_response(200, app.store.get_repository(req.params["repository"]))


@route("DELETE", "/repositories/{repository}")
def _delete_repository(app: LakeFSEmulator, req: Request) -> Response:
    app.store.delete_repository(req.params["repository"])
    return Response(204, content_type="")


@route("GET", "/repositories/{repository}/settings/branch_protection")
def _get_branch_protection(app: LakeFSEmulator, req: Request) -> Response:
    rules = app.store.get_protection(req.params["repository"])
    return json_response(200, rules, {"ETag": protection_etag(rules)})


@route("PUT", "/repositories/{repository}/settings/branch_protection")
def _set_branch_protection(app: LakeFSEmulator, req: Request) -> Response:
    rules = req.json()
    valid = isinstance(rules, list) and all(
        isinstance(rule, dict) and isinstance(rule.get("pattern"), str) and rule["pattern"] for rule in rules
    )
    if not valid:
        raise ApiError(400, "body must be a list of {pattern} rules")
    app.store.set_protection(
        req.params["repository"], [{"pattern": r["pattern"]} for r in rules], req.headers.get("If-Match")
    )
    return Response(204, content_type="")
