"""Published dataset versions: what training can pin, and what changed between two of them.

Every merge into ``main`` is tagged ``<dataset>/v<N>``; the tag's commit carries the batch id and its record
counts in the commit metadata. A training job pins the commit id (tags can be moved by an admin, commits never
change). Diffs compare the ``published`` records of two refs by ``record_id``: added, removed, and relabelled.

Why two listings: anyone with write access to lakeFS can create a tag that looks like a version. The tags are
:func:`tagged_versions` (what lakeFS holds; used to number the next version and to find a batch's own merge
again); only :func:`trusted_versions` -- the tags Trainyard recorded in its database when it tagged a gated
merge, still on the recorded commit -- are versions for training, the CLI and the version sensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from dagster_project import layout
from dagster_project.alerts import Alert, AlertKind, playbook_url
from dagster_project.lakefs import LakeFSPort
from dagster_project.lakefs.metadata import CommitMetadata
from dagster_project.layout import Stage
from dagster_project.publishing.approvals import ApprovalStore
from dagster_project.tenants import TenantConfig


@dataclass(frozen=True)
class Version:
    tag: str
    number: int
    commit_id: str
    batch_id: str
    published_records: int
    created_at: datetime
    metadata: CommitMetadata | None = None


@dataclass(frozen=True)
class VersionDiff:
    left: str
    right: str
    added: int
    removed: int
    relabelled: int
    unchanged: int
    label_counts: pd.DataFrame
    """One row per label: count on the left, on the right, and the change."""

    def lines(self) -> list[str]:
        lines = [f"{self.left} -> {self.right}: +{self.added} records, -{self.removed} records, "
                 f"{self.relabelled} relabelled, {self.unchanged} unchanged",
                 f"  {'label':<24}{'left':>8}{'right':>8}{'change':>8}"]
        lines += [f"  {label:<24}{int(r.left):>8}{int(r.right):>8}{int(r.change):>+8}"
                  for label, r in self.label_counts.iterrows()]
        return lines


def tagged_versions(repo: LakeFSPort, dataset: str) -> list[Version]:
    versions = []
    for tag in repo.iter_tags(prefix=layout.version_tag_prefix(dataset)):
        number = layout.parse_version_tag(dataset, tag.id)
        if number is None:
            continue
        commit = repo.get_commit(tag.commit_id)
        meta = CommitMetadata.from_lakefs(commit.metadata)
        versions.append(Version(tag.id, number, tag.commit_id, (meta.batch_id if meta else None) or "-",
                                meta.count("published") if meta else 0,
                                datetime.fromtimestamp(commit.creation_date, UTC), meta))
    return sorted(versions, key=lambda v: v.number)


@dataclass(frozen=True)
class VersionCheck:
    trusted: list[Version]
    """Versions Trainyard tagged, on the commit it recorded."""
    foreign: list[Version]
    """Version-shaped tags Trainyard did not record (or that were moved): never a version, always an alert."""
    recorded: dict[str, str]
    """Tag -> commit id, as Trainyard recorded them."""


def trusted_versions(repo: LakeFSPort, tenant: str, dataset: str, store: ApprovalStore) -> VersionCheck:
    recorded = store.recorded_versions(tenant, dataset)
    tagged = tagged_versions(repo, dataset)
    return VersionCheck(trusted=[v for v in tagged if recorded.get(v.tag) == v.commit_id],
                        foreign=[v for v in tagged if recorded.get(v.tag) != v.commit_id], recorded=recorded)


def next_version(repo: LakeFSPort, dataset: str) -> int:
    tags = repo.iter_tags(prefix=layout.version_tag_prefix(dataset))
    numbers = (layout.parse_version_tag(dataset, t.id) for t in tags)
    return max((n for n in numbers if n is not None), default=0) + 1


def find_published_version(repo: LakeFSPort, dataset: str, batch_id: str) -> Version | None:
    """The version that published this batch, if any."""
    return next((v for v in tagged_versions(repo, dataset) if v.batch_id == batch_id), None)


def resolve_version(dataset: str, ref: str) -> str:
    """``v3``, ``<dataset>/v3``, a branch or a commit id -> a ref lakeFS understands."""
    if ref.startswith("v") and ref[1:].isdigit():
        return layout.version_tag(dataset, int(ref[1:]))
    return ref


def published_records(repo: LakeFSPort, dataset: str, ref: str) -> pd.DataFrame:
    paths = [p for p in repo.list_paths(ref, layout.published_prefix(dataset)) if p.endswith(".parquet")]
    frames = [repo.require_frame(ref, p)[["record_id", "label"]] for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["record_id", "label"])


class NothingPublished(ValueError):
    """A batch branch that holds no publish candidate: comparing it would say "+0 records" about a batch that
    never reached the published stage."""


def diff_published(repo: LakeFSPort, dataset: str, left: str, right: str) -> VersionDiff:
    left_ref, right_ref = resolve_version(dataset, left), resolve_version(dataset, right)
    for ref in (left_ref, right_ref):
        batch_id = layout.batch_id_of_branch(dataset, ref)
        if batch_id is not None and not repo.list_paths(ref, layout.stage_dir(dataset, Stage.PUBLISHED, batch_id)):
            raise NothingPublished(f"branch {ref} holds no publish candidate: batch {batch_id} did not reach the "
                                   "published stage (a gate blocked it, or it is still running), so nothing of it "
                                   "would reach main")
    a = published_records(repo, dataset, left_ref).set_index("record_id")["label"]
    b = published_records(repo, dataset, right_ref).set_index("record_id")["label"]
    common = a.index.intersection(b.index)
    relabelled = int((a[common] != b[common]).sum())
    counts = pd.DataFrame({"left": a.value_counts(), "right": b.value_counts()}).fillna(0).astype(int)
    counts["change"] = counts["right"] - counts["left"]
    return VersionDiff(left_ref, right_ref, added=len(b.index.difference(a.index)),
                       removed=len(a.index.difference(b.index)), relabelled=relabelled,
                       unchanged=len(common) - relabelled, label_counts=counts.sort_index())


def training_manifest(repo: LakeFSPort, dataset: str, version: Version) -> dict[str, object]:
    """What a training job needs to read a version reproducibly: the pinned commit and the exact files."""
    files = [p for p in repo.list_paths(version.commit_id, layout.published_prefix(dataset)) if p.endswith(".parquet")]
    lineage = version.metadata.model_dump(mode="json", exclude_defaults=True) if version.metadata else {}
    return {
        "repository": repo.name, "dataset": dataset, "version": version.tag, "commit_id": version.commit_id,
        "created_at": version.created_at.isoformat(), "batch_id": version.batch_id,
        "published_records_in_batch": version.published_records, "files": files,
        "read_with": {"lakefs_sdk": f"ObjectsApi.get_object('{repo.name}', '{version.commit_id}', <file>)",
                      "s3_gateway": f"s3://{repo.name}/{version.commit_id}/<file>"},
        "lineage": lineage,
    }


def export_key(landing_prefix: str, dataset: str, name: str) -> str:
    return f"{landing_prefix}/{dataset}/exports/versions/{name}.json"


def untrusted_version_alert(tenant: TenantConfig, dataset: str, version: Version, recorded_commit: str | None,
                            playbook_base_url: str) -> Alert:
    """On-call hears of a tag that looks like a version but is not one of Trainyard's (nothing exports it)."""
    moved = f"moved from the recorded commit {recorded_commit[:12]}" if recorded_commit else "never recorded"
    return Alert(
        kind=AlertKind.UNTRUSTED_VERSION, tenant=tenant.name, dataset=dataset, batch_id=None, branch=None,
        title=f"untrusted version tag {version.tag} in {tenant.lakefs_repository} ({moved})",
        metric="version_tag", details={"tag": version.tag, "commit": version.commit_id, "why": moved,
                                       "effect": "ignored: not listed, not exported, not readable as a version"},
        dedupe_key=f"untrusted_version:{tenant.name}:{dataset}:{version.tag}:{version.commit_id[:12]}",
        playbook_url=playbook_url(AlertKind.UNTRUSTED_VERSION, playbook_base_url), channel=tenant.slack_channel)
