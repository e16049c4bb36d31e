"""Handlers for lakeFS's health check and configuration routes (``/healthcheck``, ``/config/...``).

Why this exists: the lakeFS SDK and clients probe these routes to check the server and learn its version
and blockstore capabilities (the emulator advertises a local blockstore without presign or import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..common import LAKEFS_VERSION
from ..routing import Request, Response, json_response, route

if TYPE_CHECKING:  # type-only: the server imports the handlers
    from ..server import LakeFSEmulator


@route("GET", "/healthcheck")
def _healthcheck(app: LakeFSEmulator, req: Request) -> Response:
    return Response(204, content_type="")


def _version_config() -> dict[str, Any]:
    return {"version": LAKEFS_VERSION, "version_context": "lakefs-emulator", "upgrade_recommended": False}


def _storage_config() -> dict[str, Any]:
    return {
        "blockstore_type": "local",
        "blockstore_namespace_example": "local://example-bucket/",
        "blockstore_namespace_ValidityRegex": "^local://",
        "default_namespace_prefix": "local://",
        "pre_sign_support": False,
        "pre_sign_support_ui": False,
        "import_support": False,
        "import_validity_regex": "^local://",
        "pre_sign_multipart_upload": False,
    }


@route("GET", "/config")
def _config(app: LakeFSEmulator, req: Request) -> Response:
    return json_response(200, {"version_config": _version_config(), "storage_config": _storage_config()})


@route("GET", "/config/version")
def _config_version(app: LakeFSEmulator, req: Request) -> Response:
    return json_response(200, _version_config())


@route("GET", "/config/storage")
def _config_storage(app: LakeFSEmulator, req: Request) -> Response:
    return json_response(200, _storage_config())
