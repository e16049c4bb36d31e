"""The gatekeeper's decision: lakeFS calls it as a ``pre-merge`` webhook for ``main`` and it refuses every merge
that is not a gated, approved Trainyard batch. (The HTTP service that answers lakeFS is
:mod:`dagster_project.services.gatekeeper`.)

Why: branch protection in lakeFS does not block merges, so a person with write access could merge a failing or
unapproved batch into ``main`` from the lakeFS UI. With ``_lakefs_actions/trainyard-gate.yaml`` on ``main`` (and
so on every batch branch created from it), lakeFS asks this endpoint before any merge into ``main``; a non-2xx
answer makes lakeFS refuse the merge with 412 and leave ``main`` unchanged. The endpoint answers 2xx only when
the source commit is a Trainyard publish candidate whose recorded gates all passed and, for datasets with the
``owner`` policy, whose exact commit has enough data-owner approvals. Any merge whose diff touches
``_lakefs_actions/`` is refused: lakeFS reads actions from the *source* commit, so a branch could otherwise
switch its own gate off. (A branch that deletes the hook file is not gated by lakeFS at all; deny writes to
``_lakefs_actions/*`` to everyone but admins with a lakeFS RBAC policy, and Trainyard's own merge path checks the
diff itself.) Requests must carry the shared secret header.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dagster_project import layout
from dagster_project.gates import blocking_gate_names
from dagster_project.lakefs import LakeFSPort
from dagster_project.lakefs.metadata import PUBLISHED_STAGE, CommitMetadata, MalformedMetadata
from dagster_project.publishing.approvals import ApprovalStore
from dagster_project.tenants import TenantsConfig

SECRET_HEADER = "X-Trainyard-Gatekeeper-Secret"
ACTION_PATH = "_lakefs_actions/trainyard-gate.yaml"
ACTIONS_PREFIX = "_lakefs_actions/"
INSTALL_STAGE = "install-gatekeeper"
SECRET_ENV = "LAKEFSACTION_TRAINYARD_GATEKEEPER_SECRET"
"""lakeFS exposes environment variables prefixed ``LAKEFSACTION_`` to action files as ``{{ ENV.NAME }}``: the
shared secret is set on the lakeFS server, never written into the repository or shown in hook logs."""


@dataclass(frozen=True)
class MergeDecision:
    allowed: bool
    reason: str


def gate_action_yaml(webhook_url: str, timeout_seconds: int = 30) -> str:
    """The lakeFS action file that makes every merge into main ask the gatekeeper first (secret from lakeFS's env)."""
    return (
        "# Installed by Trainyard: every merge into main must pass the Trainyard gatekeeper.\n"
        "name: trainyard gatekeeper\n"
        "description: refuse merges into main unless the batch's gates passed and its data owners approved\n"
        "on:\n"
        "  pre-merge:\n"
        "    branches: [main]\n"
        "hooks:\n"
        "  - id: trainyard_gatekeeper\n"
        "    type: webhook\n"
        "    description: Trainyard gatekeeper\n"
        "    properties:\n"
        f"      url: {json.dumps(webhook_url)}\n"
        f"      timeout: {timeout_seconds}s\n"
        "      headers:\n"
        f"        {SECRET_HEADER}: \"{{{{ ENV.{SECRET_ENV} }}}}\"\n"
    )


def touches_actions(repo: LakeFSPort, source: str, destination: str = layout.MAIN_BRANCH) -> list[str]:
    """Paths under ``_lakefs_actions/`` that merging ``source`` into ``destination`` would change."""
    return [path for path in repo.diff_paths(destination, source) if path.startswith(ACTIONS_PREFIX)]


def evaluate_merge(payload: dict[str, Any], repo_for: Callable[[str], LakeFSPort], tenants: TenantsConfig,
                   store: ApprovalStore) -> MergeDecision:
    """Decide a lakeFS pre-merge event (payload as lakeFS sends it)."""
    if payload.get("event_type") != "pre-merge":
        return MergeDecision(False, f"unexpected event {payload.get('event_type')!r}")
    if payload.get("branch_id") != layout.MAIN_BRANCH:
        return MergeDecision(True, "not a merge into main")
    repository = str(payload.get("repository_id", ""))
    tenant = next((t for t in tenants.tenants if t.lakefs_repository == repository), None)
    if tenant is None:
        return MergeDecision(False, f"repository {repository!r} belongs to no configured tenant")
    repo = repo_for(repository)
    source_ref = str(payload.get("source_ref") or payload.get("merge_source") or "")
    commit_id = str(payload.get("commit_id") or "") or repo.get_commit(source_ref).id
    touched = touches_actions(repo, commit_id)
    if touched:
        return MergeDecision(False, f"the merge changes {', '.join(touched)}: action files may only change on main "
                                    "through an admin, never through a batch")
    try:
        metadata = CommitMetadata.from_lakefs(repo.get_commit(commit_id).metadata)
    except MalformedMetadata as exc:
        return MergeDecision(False, f"commit {commit_id[:12]} is not a Trainyard publish candidate: {exc}")
    dataset_name, batch_id = (metadata.dataset, metadata.batch_id) if metadata else (None, None)
    if metadata is None or metadata.stage != PUBLISHED_STAGE or not dataset_name or not batch_id:
        return MergeDecision(False, f"commit {commit_id[:12]} is not a Trainyard publish candidate: only batches "
                                    "that passed every gate can be merged into main")
    try:
        dataset = tenant.dataset(dataset_name)
    except KeyError:
        return MergeDecision(False, f"dataset {dataset_name!r} is not configured for tenant {tenant.name}")
    recorded = store.candidate(commit_id)
    if recorded is None or (recorded.tenant, recorded.dataset, recorded.batch_id) != (
            tenant.name, dataset_name, batch_id):
        return MergeDecision(False, f"commit {commit_id[:12]} was not committed by Trainyard as the publish candidate "
                                    f"of batch {batch_id} (commit metadata alone is not trusted)")
    failed = recorded.failed_or_missing(blocking_gate_names())
    if failed:
        return MergeDecision(False, f"batch {batch_id}: gates failed or missing on commit {commit_id[:12]}: "
                                    f"{', '.join(failed)}")
    if dataset.publish.policy == "auto":
        rejection = store.rejection(tenant.name, dataset_name, batch_id)
        if rejection is not None:
            return MergeDecision(False, f"batch {batch_id} was rejected by {rejection.actor}: {rejection.reason}")
        return MergeDecision(True, f"batch {batch_id}: every gate passed; publish policy auto")
    state = store.state(tenant, dataset, batch_id, commit_id)
    if state.approved:
        return MergeDecision(True, f"batch {batch_id}: approved by {', '.join(state.approvers)} on {commit_id[:12]}")
    why = "rejected by " + ", ".join(state.rejected_by) if state.rejected else (
        f"{len(state.approvers)}/{state.required} data-owner approvals on commit {commit_id[:12]}"
        + (f" (stale approvals on earlier commits: {', '.join(state.stale)})" if state.stale else ""))
    return MergeDecision(False, f"batch {batch_id}: {why}")


def install_gate(repo: LakeFSPort, webhook_url: str) -> bool:
    """Put the gatekeeper action on ``main`` and protect ``main`` against direct writes; True if anything changed.

    The action file is committed directly to ``main`` (the one direct write Trainyard makes, done with the
    protection lifted for that commit), so every batch branch created from ``main`` afterwards carries it.
    """
    wanted = gate_action_yaml(webhook_url).encode("utf-8")
    protected = layout.MAIN_BRANCH in repo.protected_patterns()
    if repo.get_bytes(layout.MAIN_BRANCH, ACTION_PATH) == wanted and protected:
        return False
    if protected:
        repo.unprotect(layout.MAIN_BRANCH)
    try:
        repo.put_bytes(layout.MAIN_BRANCH, ACTION_PATH, wanted)
        repo.commit(layout.MAIN_BRANCH, "Install the Trainyard gatekeeper (pre-merge webhook for main)",
                    CommitMetadata(stage=INSTALL_STAGE).to_lakefs())
    finally:
        repo.protect(layout.MAIN_BRANCH)
    return True


def gatekeeper_decider(tenants: TenantsConfig, repo_for: Callable[[str], LakeFSPort],
                       store: ApprovalStore) -> Callable[[dict], MergeDecision]:
    return lambda payload: evaluate_merge(payload, repo_for, tenants, store)
