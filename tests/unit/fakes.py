"""Small in-memory fakes shared by the unit tests (no network, no services)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

from dagster_project.layout import MANIFEST_NAME
from dagster_project.stages.landing import Drop, LandingFile

BUCKET = "landing"
DROP_PREFIX = "acme/reviews/incoming/drop-1/"
INGESTED_AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
VALID_MANIFEST: dict[str, Any] = {
    "source": "acme CRM export",
    "license": "client-owned",
    "consent_basis": "contract",
    "collected_at": "2026-11-01T08:00:00Z",
}


class FakeS3:
    """Just enough of a boto3 S3 client for ``read_manifest`` and ``ingest_drop``."""

    def __init__(self, objects: dict[str, bytes] | None = None) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        for key, body in (objects or {}).items():
            self.put(BUCKET, key, body)
        self.reads: list[str] = []

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.objects[(bucket, key)] = body

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 - boto3's spelling
        self.reads.append(Key)
        return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}


def make_drop(
    files: dict[str, bytes],
    manifest: dict[str, Any] | bytes | None = VALID_MANIFEST,
    prefix: str = DROP_PREFIX,
    name: str = "drop-1",
) -> tuple[FakeS3, Drop]:
    """A fake S3 holding ``files`` (names relative to the drop) and the Drop object a sensor would list."""
    s3 = FakeS3()
    landing = [LandingFile(prefix + file_name, len(body), INGESTED_AT) for file_name, body in sorted(files.items())]
    for file_name, body in files.items():
        s3.put(BUCKET, prefix + file_name, body)
    manifest_file = None
    if manifest is not None:
        body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode("utf-8")
        s3.put(BUCKET, prefix + MANIFEST_NAME, body)
        manifest_file = LandingFile(prefix + MANIFEST_NAME, len(body), INGESTED_AT)
    return s3, Drop(bucket=BUCKET, prefix=prefix, name=name, data_files=landing, manifest_file=manifest_file)


def uri(file_name: str, prefix: str = DROP_PREFIX) -> str:
    return f"s3://{BUCKET}/{prefix}{file_name}"
