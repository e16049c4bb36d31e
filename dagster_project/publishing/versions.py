"""Published dataset versions: what training can pin, and what changed between two of them.

Every merge into ``main`` is tagged ``<dataset>/v<N>``; the tag's commit carries the batch id and its record
counts in the commit metadata. A training job pins the commit id (tags can be moved by an admin, commits never
change). Diffs compare the ``published`` records of two refs by ``record_id``: added, removed, and relabelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from dagster_project import layout
from dagster_project.lakefs import LakeFSPort
from dagster_project.lakefs.metadata import CommitMetadata


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


def list_versions(repo: LakeFSPort, dataset: str) -> list[Version]:
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


def next_version(repo: LakeFSPort, dataset: str) -> int:
    tags = repo.iter_tags(prefix=layout.version_tag_prefix(dataset))
    numbers = (layout.parse_version_tag(dataset, t.id) for t in tags)
    return max((n for n in numbers if n is not None), default=0) + 1


def find_published_version(repo: LakeFSPort, dataset: str, batch_id: str) -> Version | None:
    """The version that published this batch, if any."""
    return next((v for v in list_versions(repo, dataset) if v.batch_id == batch_id), None)


def resolve_version(dataset: str, ref: str) -> str:
    """``v3``, ``<dataset>/v3``, a branch or a commit id -> a ref lakeFS understands."""
    if ref.startswith("v") and ref[1:].isdigit():
        return layout.version_tag(dataset, int(ref[1:]))
    return ref


def published_records(repo: LakeFSPort, dataset: str, ref: str) -> pd.DataFrame:
    paths = [p for p in repo.list_paths(ref, layout.published_prefix(dataset)) if p.endswith(".parquet")]
    frames = [repo.require_frame(ref, p)[["record_id", "label"]] for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["record_id", "label"])


def diff_published(repo: LakeFSPort, dataset: str, left: str, right: str) -> VersionDiff:
    left_ref, right_ref = resolve_version(dataset, left), resolve_version(dataset, right)
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
