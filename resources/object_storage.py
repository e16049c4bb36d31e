"""S3-compatible object storage (the landing zone) as a Dagster resource: AWS S3, MinIO or moto on loopback."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import boto3
import dagster as dg
from botocore.config import Config


class ObjectStorageResource(dg.ConfigurableResource):
    """A boto3 S3 client for the landing bucket; leave ``endpoint_url`` empty for AWS."""

    landing_bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    manifest_grace_minutes: float = 60.0
    """A drop without ``manifest.json`` is started anyway once its newest file is this old."""
    read_timeout_seconds: float = 60.0
    """How long a read may wait for the next bytes before it fails (and the step is retried)."""

    @property
    def manifest_grace(self) -> timedelta:
        return timedelta(minutes=self.manifest_grace_minutes)

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url or None,
            region_name=self.region,
            aws_access_key_id=self.access_key_id or None,
            aws_secret_access_key=self.secret_access_key or None,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10,
                          read_timeout=self.read_timeout_seconds),
        )
