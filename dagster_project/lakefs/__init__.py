"""lakeFS as Trainyard uses it: a typed port (:mod:`.port`), the lakefs-sdk adapter (:mod:`.sdk`), an in-memory
fake (:mod:`.memory`) and the ``trainyard.*`` commit metadata (:mod:`.metadata`).

Gates, publishing, approvals and versions are written against the port, so they are unit-tested on the fake with
no server; the HTTP emulator stays for integration and contract tests, and a real lakeFS is a URL away.
"""

from dagster_project.lakefs.memory import InMemoryRepository
from dagster_project.lakefs.port import Commit, LakeFSError, LakeFSPort, MergeConflict, RefNotFound, Tag
from dagster_project.lakefs.sdk import LakeFSRepository, api_client, settings_client

__all__ = ["Commit", "InMemoryRepository", "LakeFSError", "LakeFSPort", "LakeFSRepository", "MergeConflict",
           "RefNotFound", "Tag", "api_client", "settings_client"]
