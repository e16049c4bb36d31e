"""The landing zone: client drops in object storage, their manifests, and when a drop is complete.

A drop is a folder ``<landing prefix>/<dataset>/incoming/<drop>/`` holding data files (JSONL, CSV, Parquet)
and a ``manifest.json`` saying where the data came from and on what legal basis. Clients upload the manifest
last, so its presence marks the drop complete. A drop whose manifest never arrives is not ignored: after a
grace period it is ingested with every record quarantined (license and consent unknown), so nothing that
landed can silently disappear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from dagster_project.layout import MANIFEST_NAME, batch_id_for_drop, incoming_prefix
from dagster_project.stages.json_limits import JsonRejected, parse_json

UNDECLARED = frozenset({"", "unknown", "n/a", "na", "none", "null", "tbd", "-", "?"})
"""Values that leave a manifest field undeclared."""


class Manifest(BaseModel):
    """What a client declares about a drop. Extra keys are kept for lineage."""

    model_config = ConfigDict(extra="allow")

    source: str
    license: str
    consent_basis: str
    collected_at: datetime
    contains_pii: bool = False

    @field_validator("source", "license", "consent_basis")
    @classmethod
    def _declared(cls, value: str, info: ValidationInfo) -> str:
        """A license or consent basis that says nothing is no license: such a drop must not reach main."""
        if value.strip().casefold() in UNDECLARED:
            raise ValueError(f"{info.field_name} must be declared, got {value!r}")
        return value.strip()


@dataclass(frozen=True)
class LandingFile:
    key: str
    size: int
    last_modified: datetime


@dataclass
class Drop:
    """One client drop in the landing bucket."""

    bucket: str
    prefix: str
    name: str
    data_files: list[LandingFile] = field(default_factory=list)
    manifest_file: LandingFile | None = None
    held_back: list[tuple[LandingFile, str]] = field(default_factory=list)
    """Objects under the drop that are not ingested, each with the reason (every object is accounted for)."""

    @property
    def batch_id(self) -> str:
        return batch_id_for_drop(self.name)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def last_modified(self) -> datetime:
        files = [*self.data_files, *([self.manifest_file] if self.manifest_file else [])]
        return max(f.last_modified for f in files)

    def is_ready(self, now: datetime, manifest_grace: timedelta) -> bool:
        """Complete (manifest present), or abandoned without a manifest for longer than the grace period."""
        if self.manifest_file is not None:
            return True
        return bool(self.data_files) and now - self.last_modified >= manifest_grace


def is_data_file(name: str) -> bool:
    """Markers such as ``_SUCCESS`` or ``.keep`` are not data; everything else is ingested or quarantined."""
    return not name.startswith(("_", "."))


IGNORED_NAME = "ignored file name (starts with '_' or '.'): not read as data"
EMPTY_FILE = "empty file: nothing to read"
ARRIVED_LATE = ("arrived after the drop's manifest.json: not part of this drop; send it in a new drop "
                "(a new folder with its own manifest)")


def _sort_out(drop: Drop) -> None:
    """Move what is not ingested to ``held_back`` with its reason: names that mark no data, empty files, and files
    that arrived after the manifest (the manifest marks a drop complete; later files belong to no drop yet)."""
    manifest_time = drop.manifest_file.last_modified if drop.manifest_file else None
    kept: list[LandingFile] = []
    for landing_file in sorted(drop.data_files, key=lambda f: f.key):
        name = landing_file.key.rsplit("/", 1)[-1]
        if not is_data_file(name):
            drop.held_back.append((landing_file, IGNORED_NAME))
        elif landing_file.size == 0:
            drop.held_back.append((landing_file, EMPTY_FILE))
        elif manifest_time is not None and landing_file.last_modified > manifest_time:
            drop.held_back.append((landing_file, ARRIVED_LATE))
        else:
            kept.append(landing_file)
    drop.data_files = kept


def _drop_of(directory: str, manifest_dirs: set[str]) -> str:
    """The drop a directory (relative to ``incoming/``) belongs to.

    A drop is the directory that holds ``manifest.json``, at any depth (``incoming/2026/11/01/``); files in its
    subdirectories are part of it. A directory under no manifest is its own top-level folder's drop -- unless the
    client nests drops under that folder, then it is the directory itself (it waits for its own manifest).
    """
    parts = directory.split("/")
    for depth in range(len(parts), 0, -1):
        if "/".join(parts[:depth]) in manifest_dirs:
            return "/".join(parts[:depth])
    nested = any(m.startswith(parts[0] + "/") for m in manifest_dirs)
    return directory if nested else parts[0]


def list_drops(s3: Any, bucket: str, landing_prefix: str, dataset: str) -> list[Drop]:
    """All drops currently under the dataset's incoming prefix, sorted by name."""
    base = incoming_prefix(landing_prefix, dataset)
    objects = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=base):
        for obj in page.get("Contents", []):
            relative = obj["Key"][len(base):]
            if "/" in relative:  # a file directly under incoming/ is in no drop folder
                objects.append((relative, obj))
    manifest_dirs = {r.rsplit("/", 1)[0] for r, _ in objects if r.rsplit("/", 1)[1] == MANIFEST_NAME}
    drops: dict[str, Drop] = {}
    for relative, obj in objects:
        directory, file_name = relative.rsplit("/", 1)
        drop_name = _drop_of(directory, manifest_dirs)
        drop = drops.setdefault(drop_name, Drop(bucket=bucket, prefix=f"{base}{drop_name}/", name=drop_name))
        landing_file = LandingFile(obj["Key"], int(obj["Size"]), obj["LastModified"].astimezone(UTC))
        if file_name == MANIFEST_NAME and directory == drop_name:
            drop.manifest_file = landing_file
        else:
            drop.data_files.append(landing_file)
    for drop in drops.values():
        _sort_out(drop)
    return sorted(drops.values(), key=lambda d: d.name)


def find_drop(s3: Any, bucket: str, landing_prefix: str, dataset: str, batch_id: str) -> Drop:
    """The drop a batch was created from (batch ids are derived from drop names)."""
    for drop in list_drops(s3, bucket, landing_prefix, dataset):
        if drop.batch_id == batch_id:
            return drop
    raise LookupError(
        f"no drop for batch '{batch_id}' under s3://{bucket}/{incoming_prefix(landing_prefix, dataset)}"
    )


def read_manifest(s3: Any, drop: Drop) -> tuple[Manifest | None, str | None]:
    """The drop's manifest, or ``None`` and the reason every record of the drop must be quarantined."""
    if drop.manifest_file is None:
        return None, f"drop {drop.uri} has no {MANIFEST_NAME}: license and consent basis unknown"
    body = s3.get_object(Bucket=drop.bucket, Key=drop.manifest_file.key)["Body"].read()
    try:
        return Manifest.model_validate(parse_json(body.decode("utf-8-sig"))), None
    except (JsonRejected, UnicodeDecodeError) as exc:
        return None, f"{MANIFEST_NAME} in {drop.uri} is not valid JSON: {str(exc).removeprefix('invalid JSON: ')}"
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return None, f"{MANIFEST_NAME} in {drop.uri} is invalid: {problems}"
