"""The landing zone: client drops in object storage, their manifests, and when a drop is complete.

A drop is a folder ``<landing prefix>/<dataset>/incoming/<drop>/`` holding data files (JSONL, CSV, Parquet)
and a ``manifest.json`` saying where the data came from and on what legal basis. Clients upload the manifest
last, so its presence marks the drop complete. A drop whose manifest never arrives is not ignored: after a
grace period it is ingested with every record quarantined (license and consent unknown), so nothing that
landed can silently disappear.

Objects that no batch will read are named too (:class:`NotIngested`): a file directly under ``incoming/`` or in
a folder whose name cannot be a drop (``..``, empty or control characters), a file newer than its drop's
manifest and a file that arrived after its drop was registered as a batch. The landing sensor alerts on them;
inside a drop, what is not read is quarantined by the batch with its reason (``Drop.held_back``).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from dagster_project.alerts.model import Alert, AlertKind, playbook_url
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

    @property
    def version(self) -> str:
        """Which upload of the key this is, as far as a listing tells (S3 times have whole seconds)."""
        return f"{self.last_modified.isoformat()}/{self.size}"


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

    def objects(self) -> list[LandingFile]:
        """Every object under the drop: data files, held-back files and the manifest."""
        manifest = [self.manifest_file] if self.manifest_file else []
        return [*self.data_files, *(f for f, _ in self.held_back), *manifest]

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


class SourceUnavailable(RuntimeError):
    """Reading the landing zone failed (network, storage): a dependency's fault, never the data's. The step is
    retried with backoff and then fails loudly; nothing of the drop is quarantined because of it."""


_UNAVAILABLE_CODES = {"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "ServiceUnavailable",
                      "InternalError"}


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):  # an answer: only S3's own trouble is a dependency failing, 4xx are not
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or exc.response.get("Error", {}).get("Code") in _UNAVAILABLE_CODES
    # No answer: refused, reset, timed out, cut mid-body (urllib3's own errors, e.g. a TLS failure mid-download,
    # reach us unwrapped by botocore).
    return isinstance(exc, BotoCoreError | OSError | urllib3.exceptions.HTTPError)


@contextmanager
def landing_access(what: str) -> Iterator[None]:
    """Turn a transport failure while reading the landing zone into :class:`SourceUnavailable` naming ``what``.

    The one place that decides "the network, not the client": listing drops, opening an object and reading its
    body all go through it, so no parser can mistake a timeout for a corrupt file."""
    try:
        yield
    except SourceUnavailable:
        raise
    except Exception as exc:
        if _is_unavailable(exc):
            raise SourceUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc
        raise


class _GuardedBody:
    """An object's streaming body whose failed reads are :class:`SourceUnavailable`."""

    def __init__(self, body: Any, uri: str) -> None:
        self._body, self._uri = body, uri

    def read(self, size: int = -1) -> bytes:
        with landing_access(f"{self._uri}: reading the file failed"):
            return self._body.read(size)


def open_object(s3: Any, bucket: str, key: str) -> _GuardedBody:
    """The body of a landing object, for streaming reads (see :func:`landing_access`)."""
    uri = f"s3://{bucket}/{key}"
    with landing_access(f"{uri}: opening the file failed"):
        return _GuardedBody(s3.get_object(Bucket=bucket, Key=key)["Body"], uri)


@dataclass(frozen=True)
class NotIngested:
    """An object under ``incoming/`` that no batch reads, and why: the operator is told to send it in a new drop."""

    file: LandingFile
    reason: str
    drop: str | None = None
    """The drop it sits in, if any (a late arrival); ``None`` for an object outside every drop."""


@dataclass
class Landing:
    """Everything under a dataset's ``incoming/`` prefix: the drops, and the objects outside any drop."""

    drops: list[Drop]
    outside: list[NotIngested]


IGNORED_NAME = "ignored file name (starts with '_' or '.'): not read as data"
OUTSIDE_DROP = ("not in a drop folder: each drop is a folder under incoming/ holding its files and a "
                "manifest.json; send this file in one")
IGNORED_FOLDER = "ignored folder name (starts with '_' or '.'): not read as a drop"
REGISTERED_BEFORE = ("arrived after its drop was registered as batch {batch_id}: not part of that batch; send it "
                     "in a new drop (a new folder with its own manifest)")


def invalid_folder(directory: str) -> str | None:
    """Why a folder path (relative to ``incoming/``) cannot name a drop, or ``None`` when it can.

    Spaces and any printable Unicode are fine (the batch id is a slug of the name, with a hash); an empty
    segment (``a//b``), ``.`` or ``..`` (which tools resolve to another folder) and control or format
    characters (invisible in every listing) are not."""
    for segment in directory.split("/"):
        if segment in ("", ".", ".."):
            return f"folder name {directory!r} has an empty, '.' or '..' segment"
        if any(unicodedata.category(ch)[0] == "C" for ch in segment):
            return f"folder name {directory!r} contains control or invisible characters"
    return None
EMPTY_FILE = "empty file: nothing to read"
ARRIVED_LATE = ("arrived after the drop's manifest.json: not part of this drop; send it in a new drop "
                "(a new folder with its own manifest)")


def _sort_out(drop: Drop) -> None:
    """Move what is not ingested to ``held_back`` with its reason: names that mark no data, empty files, and files
    that arrived after the manifest (the manifest marks a drop complete; later files belong to no drop yet)."""
    manifest_time = drop.manifest_file.last_modified if drop.manifest_file else None
    kept: list[LandingFile] = []
    for landing_file in sorted(drop.data_files, key=lambda f: f.key):
        inside = landing_file.key[len(drop.prefix):].split("/")  # hidden subfolders hold no data either
        if not all(is_data_file(part) for part in inside):
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


def scan_incoming(s3: Any, bucket: str, landing_prefix: str, dataset: str) -> Landing:
    """Every object under the dataset's incoming prefix: in a drop (sorted by name), or outside all of them."""
    base = incoming_prefix(landing_prefix, dataset)
    objects: list[tuple[str, LandingFile]] = []
    outside: list[NotIngested] = []
    with landing_access(f"listing s3://{bucket}/{base} failed"):
        listing = [obj for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base)
                   for obj in page.get("Contents", [])]
    for obj in listing:
        landing_file = LandingFile(obj["Key"], int(obj["Size"]), obj["LastModified"].astimezone(UTC))
        relative = obj["Key"][len(base):]
        directory = relative.rsplit("/", 1)[0] if "/" in relative else None
        why = (OUTSIDE_DROP if directory is None else invalid_folder(directory)
               or (IGNORED_FOLDER if not is_data_file(directory.split("/")[0]) else None))
        if why is None:
            objects.append((relative, landing_file))
        elif relative:  # the folder marker ``incoming/`` itself holds nothing
            outside.append(NotIngested(landing_file, why))
    manifest_dirs = {r.rsplit("/", 1)[0] for r, _ in objects if r.rsplit("/", 1)[1] == MANIFEST_NAME
                     and all(is_data_file(part) for part in r.split("/"))}
    drops: dict[str, Drop] = {}
    for relative, landing_file in objects:
        directory, file_name = relative.rsplit("/", 1)
        drop_name = _drop_of(directory, manifest_dirs)
        drop = drops.setdefault(drop_name, Drop(bucket=bucket, prefix=f"{base}{drop_name}/", name=drop_name))
        if file_name == MANIFEST_NAME and directory == drop_name:
            drop.manifest_file = landing_file
        else:
            drop.data_files.append(landing_file)
    for drop in drops.values():
        _sort_out(drop)
    return Landing(sorted(drops.values(), key=lambda d: d.name), sorted(outside, key=lambda n: n.file.key))


def list_drops(s3: Any, bucket: str, landing_prefix: str, dataset: str) -> list[Drop]:
    """All drops currently under the dataset's incoming prefix, sorted by name."""
    return scan_incoming(s3, bucket, landing_prefix, dataset).drops


def arrived_after(drop: Drop, registered_at: datetime) -> list[NotIngested]:
    """The drop's objects that are newer than its batch: the batch never read them (a corrected file, a
    forgotten part, a new manifest), and no later batch will -- the client must send them in a new drop."""
    reason = REGISTERED_BEFORE.format(batch_id=drop.batch_id)
    return sorted((NotIngested(f, reason, drop.name) for f in drop.objects()
                   if _after(f, registered_at, drop.manifest_file)),
                  key=lambda n: n.file.key)


def _after(landing_file: LandingFile, registered_at: datetime, manifest: LandingFile | None) -> bool:
    """Whether an object is newer than its batch, given that S3 listings give whole seconds: in the second the
    batch was registered, a file newer than the manifest counts as late too (the batch reads it, if at all, only
    as 'arrived after the manifest', which says the same); one in the manifest's own second was part of the drop."""
    if landing_file.last_modified > registered_at:
        return True
    same_second = landing_file.last_modified >= registered_at.replace(microsecond=0)
    return same_second and manifest is not None and landing_file.last_modified > manifest.last_modified


def late_for_manifest(drop: Drop) -> list[NotIngested]:
    """The drop's files newer than its manifest: its batch quarantines them, and the client must resend them."""
    return [NotIngested(f, reason, drop.name) for f, reason in drop.held_back if reason == ARRIVED_LATE]


def not_ingested_alert(tenant: str, dataset: str, channel: str, objects: list[NotIngested], uri_base: str,
                       playbook_base_url: str) -> Alert:
    """One message for the objects newly found outside every batch, each with its reason (the first 20 shown)."""
    identity = "\n".join(f"{n.file.key}@{n.file.version}" for n in objects)
    late = sorted({n.drop for n in objects if n.drop is not None})
    return Alert(
        kind=AlertKind.OBJECT_NOT_INGESTED, tenant=tenant, dataset=dataset,
        title=f"{len(objects)} object(s) under {uri_base} will not be ingested by any batch",
        metric="objects_not_ingested", value=len(objects),
        details={"objects": [f"{n.file.key} ({n.file.size} bytes): {n.reason}" for n in objects[:20]],
                 "drops_with_late_files": late,
                 "what_to_do": "ask the client to send these files in a new drop (a new folder under incoming/ "
                               "with its own manifest.json); nothing of them reached a batch or main"},
        dedupe_key=(f"{AlertKind.OBJECT_NOT_INGESTED.value}:{tenant}:{dataset}:"
                    f"{hashlib.sha256(identity.encode()).hexdigest()[:16]}"),
        playbook_url=playbook_url(AlertKind.OBJECT_NOT_INGESTED, playbook_base_url), channel=channel)


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
    body = open_object(s3, drop.bucket, drop.manifest_file.key).read()  # a failed read is no invalid manifest
    try:
        return Manifest.model_validate(parse_json(body.decode("utf-8-sig"))), None
    except (JsonRejected, UnicodeDecodeError) as exc:
        return None, f"{MANIFEST_NAME} in {drop.uri} is not valid JSON: {str(exc).removeprefix('invalid JSON: ')}"
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return None, f"{MANIFEST_NAME} in {drop.uri} is invalid: {problems}"
