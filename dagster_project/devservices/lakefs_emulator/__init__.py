"""A local lakeFS API emulator: a real HTTP server that follows the lakeFS v1 OpenAPI spec.

Why this exists: no lakeFS server can be installed on the machines Trainyard is developed and tested
on, yet the platform versions its data with lakeFS.  The platform talks to lakeFS exclusively through
the official ``lakefs_sdk`` client, so this emulator serves the same ``/api/v1`` routes, status codes
and JSON documents as lakeFS; pointing the platform at a real lakeFS is only a URL change.

Model (as in lakeFS): a commit is an immutable snapshot of ``path -> object`` (stored once as a
content-addressed "meta range"); a branch is a head commit plus a staging area of uncommitted
changes; tags point at commits.  Metadata lives in sqlite, object bytes in content-addressed blob
files, both under ``data_dir``, so a restart with the same ``data_dir`` keeps everything.

Implemented: healthcheck, config (version/storage, no presign, no import), repositories, branches
(create/get/list/delete, reset of uncommitted changes, hard reset), objects (upload as multipart or
octet-stream, get with Range, head, stat, ls with delimiter, delete, bulk delete), commits (create,
get, log with filters), diffs (uncommitted, two-dot and three-dot), merges (three-way, conflict
detection, dest-wins/source-wins, squash), merge base, tags, branch protection rules, HTTP basic auth,
actions (hooks) and their runs (below).
Ref expressions: branch, tag, full or unique-prefix commit id, ``@`` (committed only), ``~N``, ``^N``.

Actions (hooks), with lakeFS's semantics: every object directly under ``_lakefs_actions/`` is parsed and
validated as an action file (``name``, ``on: {event: {branches: [globs]}}``, ``hooks``); a file that does
not parse or validate aborts the operation with 412 naming the file.  ``pre-commit`` actions are read from
the committed branch's staging view (committed + staged files); ``pre-merge`` actions from the merge
*source* commit (the documented gotcha: a source that deletes its action file disables the gate), both
matched against the branch being written (the committed branch / merge destination).  ``webhook`` hooks
POST lakeFS's event JSON (``event_type``, ``event_time``, ``action_name``, ``hook_id``, ``repository_id``,
``branch_id``, ``source_ref``, ``commit_id``, ``commit_message``, ``committer``, ``commit_metadata``,
``merge_source``; empty optional fields are omitted like Go's ``omitempty``) with the configured
``headers`` and ``query_params`` (``{{ ENV.NAME }}`` references resolved) and ``timeout`` (Go duration,
default 1m).  A non-2xx answer, connection error or timeout aborts a pre-* operation with 412 and
changes nothing.  ``post-commit``/``post-merge`` run after success; their failures are only recorded.
Runs, hook runs and hook logs are stored in sqlite and served by the ``actions/runs`` routes; run ids
decrease with time like lakeFS's, so listings are newest first.  Hooks run outside the store lock (a
webhook may call back into the API); commits and merges into one branch are serialised meanwhile, and
writes that arrive during pre-commit hooks stay staged for the next commit, as with lakeFS's sealed
staging tokens.  Differences from lakeFS: hooks run one at a time in file order (lakeFS runs different
action files concurrently) and the first failure skips every remaining hook; post-* hooks run
synchronously before the response (lakeFS runs them in the background); ``lua`` and ``airflow`` hooks pass
validation but fail when run; the hook ``if`` condition is ignored; branch/tag create/delete events are
accepted in action files but never fired.

Answered with 501: bare, read-only and sample-data repositories, ``source_metarange`` commits.
Not implemented (routes are not registered, so they answer 404): users/groups/policies/credentials
management, login/tokens, presigned URLs and multipart uploads, imports, staging/link APIs,
cherry-pick, revert, garbage collection, pull requests, repository metadata, dump/restore, object copy
and user-metadata updates.

Package layout (one module per part of the emulated API; the package re-exports the old module's names):
``common`` (constants, validation patterns, ``ApiError``), ``store`` (sqlite/blob state, trees, diff and
merge), ``actions`` (action files, webhooks, hook runner), ``routing`` (requests, responses, pagination,
route table), ``handlers`` (one module per group of lakeFS routes, registered with ``@route`` on import)
and ``server`` (the application, HTTP server, ``start_emulator`` and ``serve``).
"""

from __future__ import annotations

# Importing the handlers registers every route (``served_routes()`` must list them all).
from . import handlers
from .actions import (
    ACTION_NAME_RE,
    ACTION_RUN_COLUMNS,
    ACTIONS_PREFIX,
    ENV_REF_RE,
    GO_DURATION_RE,
    GO_DURATION_UNITS,
    HOOK_ID_RE,
    HOOK_RUN_COLUMNS,
    HOOK_TYPES,
    RUN_ID_EPOCH_NS,
    SUPPORTED_EVENTS,
    WEBHOOK_DEFAULT_TIMEOUT,
    ZERO_TIME,
    Action,
    ActionError,
    ActionRunner,
    HookRecord,
    SecureString,
    UnsupportedHook,
    Webhook,
    action_run_document,
    event_payload,
    hook_run_document,
    parse_action,
    parse_go_duration,
)
from .common import (
    API_PREFIX,
    BRANCH_RE,
    DEFAULT_AMOUNT,
    EMPTY_TREE,
    HEX_RE,
    LAKEFS_VERSION,
    MAX_AMOUNT,
    NAMESPACE_RE,
    REF_MODIFIERS_RE,
    REPOSITORY_RE,
    ApiError,
    ResolvedRef,
    Tree,
)
from .routing import (
    ROUTES,
    Handler,
    Request,
    Response,
    error_response,
    group_by_delimiter,
    json_response,
    match_route,
    paginate,
    route,
    served_routes,
)
from .server import LakeFSEmulator, RunningEmulator, serve, start_emulator
from .store import SCHEMA, LogQuery, MergeOptions, Store, diff_trees, merge_trees, object_stats, protection_etag

__all__ = [
    "ACTIONS_PREFIX",
    "ACTION_NAME_RE",
    "ACTION_RUN_COLUMNS",
    "API_PREFIX",
    "Action",
    "ActionError",
    "ActionRunner",
    "ApiError",
    "BRANCH_RE",
    "DEFAULT_AMOUNT",
    "EMPTY_TREE",
    "ENV_REF_RE",
    "GO_DURATION_RE",
    "GO_DURATION_UNITS",
    "HEX_RE",
    "HOOK_ID_RE",
    "HOOK_RUN_COLUMNS",
    "HOOK_TYPES",
    "Handler",
    "HookRecord",
    "LAKEFS_VERSION",
    "LakeFSEmulator",
    "LogQuery",
    "MAX_AMOUNT",
    "MergeOptions",
    "NAMESPACE_RE",
    "REF_MODIFIERS_RE",
    "REPOSITORY_RE",
    "ROUTES",
    "RUN_ID_EPOCH_NS",
    "Request",
    "ResolvedRef",
    "Response",
    "RunningEmulator",
    "SCHEMA",
    "SUPPORTED_EVENTS",
    "SecureString",
    "Store",
    "Tree",
    "UnsupportedHook",
    "WEBHOOK_DEFAULT_TIMEOUT",
    "Webhook",
    "ZERO_TIME",
    "action_run_document",
    "diff_trees",
    "error_response",
    "event_payload",
    "group_by_delimiter",
    "handlers",
    "hook_run_document",
    "json_response",
    "match_route",
    "merge_trees",
    "object_stats",
    "paginate",
    "parse_action",
    "parse_go_duration",
    "protection_etag",
    "route",
    "serve",
    "served_routes",
    "start_emulator",
]
