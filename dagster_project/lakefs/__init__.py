"""lakeFS as Trainyard uses it: a typed port (:mod:`.port`), the lakefs-sdk adapter (:mod:`.sdk`), an in-memory
fake (:mod:`.memory`) and the ``trainyard.*`` commit metadata (:mod:`.metadata`).

Gates, publishing, approvals and versions are written against the port, so they are unit-tested on the fake with
no server; the HTTP emulator stays for integration and contract tests, and a real lakeFS is a URL away.

The adapter's names are resolved on first use (module ``__getattr__``): importing lakefs-sdk takes ~0.7 s, and
every process that loads the code location (the daemon, each sensor tick's code server, each run worker) would
pay it before doing anything, although only steps and sensors that talk to lakeFS need it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from dagster_project.lakefs.memory import InMemoryRepository
from dagster_project.lakefs.port import Commit, LakeFSError, LakeFSPort, MergeConflict, RefNotFound, Tag

if TYPE_CHECKING:
    from dagster_project.lakefs.sdk import LakeFSRepository, api_client, settings_client

_LAZY = {"LakeFSRepository": "dagster_project.lakefs.sdk", "api_client": "dagster_project.lakefs.sdk",
         "settings_client": "dagster_project.lakefs.sdk"}

__all__ = ["Commit", "InMemoryRepository", "LakeFSError", "LakeFSPort", "LakeFSRepository", "MergeConflict",
           "RefNotFound", "Tag", "api_client", "settings_client"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value  # resolved once
    return value
