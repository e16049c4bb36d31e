"""Fixtures shared by the unit tests, and the rule that makes them unit tests: no network at all.

Every unit test runs with IP sockets refused, so a test that quietly needs a server (or a fake that quietly dials
one) fails here, on any machine, instead of passing only where the services happen to run.
"""

from __future__ import annotations

import socket

import pytest

from dagster_project.settings import EXAMPLE_TENANTS_FILE
from dagster_project.tenants import TenantsConfig, load_tenants


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
