"""Constants, ref/name validation patterns and the error type shared by every part of the lakeFS emulator.

Why this exists: the store, the actions (hooks) runner, the HTTP layer and the handlers all raise
``ApiError`` (lakeFS's ``Error`` document with an HTTP status) and share lakeFS's limits and validation
rules; keeping them in one leaf module lets those modules depend on it without depending on each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

API_PREFIX = "/api/v1"
LAKEFS_VERSION = "1.84.0"
DEFAULT_AMOUNT = 100
MAX_AMOUNT = 1000
EMPTY_TREE: dict[str, dict[str, Any]] = {}

# Validation rules copied from lakeFS (pkg/validator and graveler/validate.go).
BRANCH_RE = re.compile(r"^\w[-\w]*$", re.ASCII)
REPOSITORY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")
NAMESPACE_RE = re.compile(r"^(s3|gs|https?|mem|local|transient)://.*$")
REF_MODIFIERS_RE = re.compile(r"^(?P<base>.+?)(?P<mods>(?:[~^]\d*)+)$")
HEX_RE = re.compile(r"^[0-9a-f]+$")

Tree = dict[str, dict[str, Any]]


class ApiError(Exception):
    """An error that maps to an HTTP status and the spec's ``Error`` document."""

    def __init__(self, status: int, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}


@dataclass
class ResolvedRef:
    """A ref resolved to a commit; ``branch`` is set when reads must include the branch's staging."""

    commit_id: str
    branch: str | None = None
