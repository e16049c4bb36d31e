"""Fixtures shared by the unit tests, and the rule that makes them unit tests: no network at all.

Every unit test runs with IP sockets refused, so a test that quietly needs a server (or a fake that quietly dials
one) fails here, on any machine, instead of passing only where the services happen to run.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import boto3
import dagster as dg
import pytest
from moto import mock_aws

from dagster_project import layout
from dagster_project.definitions import build_definitions
from dagster_project.devservices.sample_data import ensure_bucket
from dagster_project.settings import EXAMPLE_TENANTS_FILE, SECRET_ENV_VARS, Settings
from dagster_project.tenants import TenantsConfig, load_tenants
from resources.lakefs import InMemoryLakeFSResource
from resources.object_storage import ObjectStorageResource


@pytest.fixture(scope="session")
def example_config() -> TenantsConfig:
    """The example tenants file shipped with the package, loaded once."""
    return load_tenants(EXAMPLE_TENANTS_FILE)


@pytest.fixture
def pipeline(tmp_path):
    """A batch pipeline with no services (see :mod:`tests.unit.harness`)."""
    from tests.unit.harness import harness

    with harness(tmp_path) as h:
        yield h


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, _refusing_ip(getattr(socket.socket, name)))


def _refusing_ip(original):
    def refuse(sock: socket.socket, address, *args, **kwargs):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise ConnectionRefusedError(f"unit tests use no network; this test tried to reach {address!r}")
        return original(sock, address, *args, **kwargs)

    return refuse


BUCKET = "unit-code-location"


@pytest.fixture
def location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The code location on in-memory lakeFS, moto in process and SQLite: (settings, defs, s3, lakefs, instance)."""
    for name, value in {"TRAINYARD_HOME": str(tmp_path / "home"), "TRAINYARD_LANDING_BUCKET": BUCKET,
                        "TRAINYARD_GATEKEEPER_URL": ""}.items():
        monkeypatch.setenv(name, value)
    secrets = {"database_url": f"sqlite:///{tmp_path / 'platform.db'}", "slack_bot_token": "xoxb-unit"}
    for name, env in SECRET_ENV_VARS.items():
        monkeypatch.setenv(env, secrets.get(name, "unit-secret"))
    settings = Settings()
    lakefs = InMemoryLakeFSResource(namespace=uuid.uuid4().hex)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        ensure_bucket(s3, BUCKET)
        defs = build_definitions(settings, resources={
            "lakefs": lakefs, "landing": ObjectStorageResource(
                landing_bucket=BUCKET, access_key_id="unit", secret_access_key="unit-secret",
                manifest_grace_minutes=0)})  # drops without a manifest are not held back
        yield settings, defs, s3, lakefs, dg.DagsterInstance.ephemeral()


def sense_and_run(defs: dg.Definitions, instance: dg.DagsterInstance, tenant: str, dataset: str):
    sensor = defs.resolve_sensor_def(layout.landing_sensor_name(tenant, dataset))
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        sensed = sensor(context)
    [request] = sensed.run_requests
    for partitions in sensed.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(partitions.partitions_def_name, list(partitions.partition_keys))
    job = defs.resolve_job_def(layout.job_name(tenant, dataset))
    return request, job.execute_in_process(instance=instance, partition_key=request.partition_key,
                                           tags=request.tags, raise_on_error=False)


def land_and_run(location, tenant_name: str, dataset_name: str, drop: str, records: int, gold_set: bool = True,
                 **plan):
    """Upload a drop (and the dataset's gold set), let the landing sensor register it, run its batch:
    (tenant, dataset, run request, execution result)."""
    from dagster_project.devservices.sample_data import build_drop, upload_drop, upload_gold_set
    from dagster_project.tenants import load_tenants

    settings, defs, s3, _, instance = location
    tenant = load_tenants(settings.tenants_file).tenant(tenant_name)
    dataset = tenant.dataset(dataset_name)
    upload_drop(s3, BUCKET, build_drop(tenant, dataset, drop, records, **plan))
    if gold_set:
        upload_gold_set(s3, BUCKET, tenant, dataset)
    request, result = sense_and_run(defs, instance, tenant_name, dataset_name)
    return tenant, dataset, request, result
