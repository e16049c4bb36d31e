"""Handlers for lakeFS's branch and tag routes: list/create/get/delete, branch reset and hard reset.

Why this exists: the platform works on branches (one per run, merged into ``main``) and tags releases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..common import ApiError
from ..routing import Request, Response, json_response, paginate, route

if TYPE_CHECKING:  # type-only: the server imports the handlers
    from ..server import LakeFSEmulator


def _ref_listing(req: Request, refs: list[dict[str, str]]) -> Response:
    prefix = req.arg("prefix")
    items = [(ref["id"], ref) for ref in refs if ref["id"].startswith(prefix)]
    results, pagination = paginate(items, req.arg("after"), req.amount())
    return json_response(200, {"pagination": pagination, "results": results})


@route("GET", "/repositories/{repository}/branches")
def _list_branches(app: LakeFSEmulator, req: Request) -> Response:
    return _ref_listing(req, app.store.list_branches(req.params["repository"]))


@route("POST", "/repositories/{repository}/branches")
def _create_branch(app: LakeFSEmulator, req: Request) -> Response:
    body = req.json_object(("name", "source"))
    commit_id = app.store.create_branch(req.params["repository"], body["name"], body["source"])
    return Response(201, commit_id.encode(), "text/html")


@route("GET", "/repositories/{repository}/branches/{branch}")
def _get_branch(app: LakeFSEmulator, req: Request) -> Response:
    return json_response(200, app.store.get_branch(req.params["repository"], req.params["branch"]))


@route("DELETE", "/repositories/{repository}/branches/{branch}")
def _delete_branch(app: LakeFSEmulator, req: Request) -> Response:
    app.store.delete_branch(req.params["repository"], req.params["branch"])
    return Response(204, content_type="")


@route("PUT", "/repositories/{repository}/branches/{branch}")
def _reset_branch(app: LakeFSEmulator, req: Request) -> Response:
    body = req.json_object(("type",))
    if body["type"] in ("object", "common_prefix") and not body.get("path"):
        raise ApiError(400, "path: required value")
    app.store.reset_branch(req.params["repository"], req.params["branch"], body["type"], body.get("path", ""))
    return Response(204, content_type="")


@route("PUT", "/repositories/{repository}/branches/{branch}/hard_reset")
def _hard_reset_branch(app: LakeFSEmulator, req: Request) -> Response:
    if not req.arg("ref"):
        raise ApiError(400, "ref: required value")
    app.store.hard_reset_branch(req.params["repository"], req.params["branch"], req.arg("ref"))
    return Response(204, content_type="")


@route("GET", "/repositories/{repository}/tags")
def _list_tags(app: LakeFSEmulator, req: Request) -> Response:
    return _ref_listing(req, app.store.list_tags(req.params["repository"]))


@route("POST", "/repositories/{repository}/tags")
def _create_tag(app: LakeFSEmulator, req: Request) -> Response:
    body = req.json_object(("id", "ref"))
    tag = app.store.create_tag(req.params["repository"], body["id"], body["ref"], bool(body.get("force")))
    return json_response(201, tag)


@route("GET", "/repositories/{repository}/tags/{tag}")
def _get_tag(app: LakeFSEmulator, req: Request) -> Response:
    return json_response(200, app.store.get_tag(req.params["repository"], req.params["tag"]))


@route("DELETE", "/repositories/{repository}/tags/{tag}")
def _delete_tag(app: LakeFSEmulator, req: Request) -> Response:
    app.store.delete_tag(req.params["repository"], req.params["tag"])
    return Response(204, content_type="")
