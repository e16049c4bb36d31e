"""Shared fixtures: real services on loopback (moto S3 process, lakeFS emulator, PostgreSQL).

Integration tests never replace these with in-process mocks; unit tests use small fakes instead.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import yaml

from dagster_project.devservices.lakefs_emulator import RunningEmulator, start_emulator
from dagster_project.devservices.local import s3_client
from dagster_project.devservices.s3 import RunningS3, start_s3
from dagster_project.devservices.sample_data import ensure_bucket
from dagster_project.settings import EXAMPLE_TENANTS_FILE, Settings
from dagster_project.tenants import TenantsConfig, load_tenants

REPO_ROOT = Path(__file__).resolve().parents[1]
LAKEFS_KEY = "AKIATESTTRAINYARD"
LAKEFS_SECRET = "test-lakefs-secret"
PG_USER = os.environ.get("TRAINYARD_TEST_PG_USER", "postgres")
PG_PASSWORD = os.environ.get("TRAINYARD_TEST_PG_PASSWORD", "postgres")
PG_HOST = os.environ.get("TRAINYARD_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TRAINYARD_TEST_PG_PORT", "5432"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[RunningS3]:
    with start_s3("127.0.0.1", free_port()) as server:
        yield server


@pytest.fixture
def lakefs_server(tmp_path: Path) -> Iterator[RunningEmulator]:
    with start_emulator(tmp_path / "lakefs", LAKEFS_KEY, LAKEFS_SECRET) as server:
        yield server


def write_tenants(path: Path, mutate=None) -> Path:
    """The example tenants file, optionally changed by ``mutate(raw_dict)``, written to ``path``."""
    raw = yaml.safe_load(EXAMPLE_TENANTS_FILE.read_text())
    if mutate is not None:
        mutate(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def settings(tmp_path: Path, s3_server: RunningS3, lakefs_server: RunningEmulator,
             monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings pointing at this test's services, with a landing bucket of its own."""
    env = {
        "TRAINYARD_HOME": str(tmp_path / "home"),
        "TRAINYARD_S3_ENDPOINT_URL": s3_server.url,
        "TRAINYARD_S3_ACCESS_KEY_ID": "test",
        "TRAINYARD_S3_SECRET_ACCESS_KEY": "test-secret",
        "TRAINYARD_LANDING_BUCKET": f"landing-{uuid.uuid4().hex[:12]}",
        "TRAINYARD_LAKEFS_URL": lakefs_server.url,
        "TRAINYARD_LAKEFS_ACCESS_KEY_ID": LAKEFS_KEY,
        "TRAINYARD_LAKEFS_SECRET_ACCESS_KEY": LAKEFS_SECRET,
        "TRAINYARD_TENANTS_FILE": str(EXAMPLE_TENANTS_FILE),
        "TRAINYARD_GATEKEEPER_URL": "",  # tests that exercise the gatekeeper start their own
        # The code location reads secrets as dg.EnvVar only: every one of them is set, as in a deployment.
        "TRAINYARD_DATABASE_URL": f"sqlite:///{tmp_path / 'trainyard.db'}",
        "TRAINYARD_SLACK_BOT_TOKEN": "xoxb-test",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    current = Settings()
    ensure_bucket(s3_client(current), current.landing_bucket)
    return current


@pytest.fixture
def s3(settings: Settings):
    return s3_client(settings)


@pytest.fixture
def tenants() -> TenantsConfig:
    return load_tenants(EXAMPLE_TENANTS_FILE)


def _pg_connect(database: str = "postgres"):
    return psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD, dbname=database)


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh, empty database on the real PostgreSQL server for each test, dropped afterwards."""
    name = f"trainyard_test_{uuid.uuid4().hex[:10]}"
    admin = _pg_connect()
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def postgres_connection(postgres_database: str):
    connection = _pg_connect(postgres_database)
    connection.autocommit = True
    yield connection
    connection.close()
