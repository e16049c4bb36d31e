"""The embedded local stack on loopback, as configured by Settings: S3 (moto server), lakeFS (the emulator), a
Slack Web API receiver that records the alerts on-call would get, and the Trainyard gatekeeper lakeFS calls
before merges into main (a production service, :mod:`dagster_project.services.gatekeeper`, started here with the
local settings).

Used by ``trainyard services``, ``trainyard demo`` and ``trainyard dev``. Ports and credentials come from the
same ``TRAINYARD_*`` settings the code location reads, so the daemon, the run workers and the CLI all agree.
"""

from __future__ import annotations

import os
import socket
from contextlib import ExitStack
from typing import Any
from urllib.parse import urlsplit

import boto3

from dagster_project.devservices.lakefs_emulator import RunningEmulator, start_emulator
from dagster_project.devservices.s3 import RunningS3, start_s3
from dagster_project.devservices.sample_data import ensure_bucket
from dagster_project.devservices.slack_receiver import RunningSlackReceiver, start_slack_receiver
from dagster_project.publishing.gatekeeper import SECRET_ENV
from dagster_project.services.gatekeeper import RunningGatekeeper, start_gatekeeper_from_settings
from dagster_project.settings import Settings


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"{url}: the embedded services need an explicit host and port")
    return parts.hostname, parts.port


def free_loopback_port() -> int:
    """A TCP port nothing listens on right now, for services that must not collide with a running ``make dev``."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def s3_client(settings: Settings) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url or None,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key.get_secret_value(),
    )


class LocalServices:
    """Start moto S3, the lakeFS emulator and the Slack receiver; stop them on exit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stack = ExitStack()
        self.s3: RunningS3 | None = None
        self.lakefs: RunningEmulator | None = None
        self.slack: RunningSlackReceiver | None = None
        self.gatekeeper: RunningGatekeeper | None = None

    def __enter__(self) -> LocalServices:
        settings = self.settings
        if not settings.s3_endpoint_url:
            raise ValueError("TRAINYARD_S3_ENDPOINT_URL must point at loopback to run the embedded S3")
        try:
            s3_host, s3_port = _host_port(settings.s3_endpoint_url)
            self.s3 = self._stack.enter_context(start_s3(s3_host, s3_port, settings.home.resolve() / "s3"))
            lakefs_host, lakefs_port = _host_port(settings.lakefs_url)
            # The emulator, like a lakeFS server, hands LAKEFSACTION_* variables to action files.
            os.environ[SECRET_ENV] = settings.gatekeeper_secret.get_secret_value()
            self.lakefs = self._stack.enter_context(start_emulator(
                settings.home.resolve() / "lakefs", settings.lakefs_access_key_id,
                settings.lakefs_secret_access_key.get_secret_value(), lakefs_host, lakefs_port))
            slack_host, slack_port = _host_port(settings.slack_base_url)
            self.slack = self._stack.enter_context(start_slack_receiver(
                slack_host, slack_port, token=settings.slack_bot_token.get_secret_value()))
            if settings.gatekeeper_url:
                self.gatekeeper = self._stack.enter_context(start_gatekeeper_from_settings(settings))
            ensure_bucket(s3_client(settings), settings.landing_bucket)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
