"""Handlers for lakeFS's action-run routes: list/get runs, their hook runs and a hook run's output.

Why this exists: the platform (and its tests) check which hooks ran on a commit or merge and why a
gate failed, by reading the runs the emulator recorded exactly as lakeFS exposes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..actions import action_run_document, hook_run_document
from ..routing import Request, Response, json_response, paginate, route

if TYPE_CHECKING:  # type-only: the server imports the handlers
    from ..server import LakeFSEmulator


@route("GET", "/repositories/{repository}/actions/runs")
def _list_action_runs(app: LakeFSEmulator, req: Request) -> Response:
    runs = app.store.list_runs(req.params["repository"], req.arg("branch"), req.arg("commit"))
    items = [(run["run_id"], action_run_document(run)) for run in runs]
    results, pagination = paginate(items, req.arg("after"), req.amount())
    return json_response(200, {"pagination": pagination, "results": results})


@route("GET", "/repositories/{repository}/actions/runs/{run_id}")
def _get_action_run(app: LakeFSEmulator, req: Request) -> Response:
    return json_response(200, action_run_document(app.store.get_run(req.params["repository"], req.params["run_id"])))


@route("GET", "/repositories/{repository}/actions/runs/{run_id}/hooks")
def _list_run_hooks(app: LakeFSEmulator, req: Request) -> Response:
    hooks = app.store.list_hook_runs(req.params["repository"], req.params["run_id"])
    items = [(hook["hook_run_id"], hook_run_document(hook)) for hook in hooks]
    results, pagination = paginate(items, req.arg("after"), req.amount())
    return json_response(200, {"pagination": pagination, "results": results})


@route("GET", "/repositories/{repository}/actions/runs/{run_id}/hooks/{hook_run_id}/output")
def _get_hook_output(app: LakeFSEmulator, req: Request) -> Response:
    output = app.store.hook_output(req.params["repository"], req.params["run_id"], req.params["hook_run_id"])
    return Response(200, output.encode(), "application/octet-stream")
