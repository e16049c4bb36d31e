"""Handlers for lakeFS's object routes: upload, get (with Range), head, stat, ls, delete and bulk delete.

Why this exists: the platform reads and writes its data sets through these routes (multipart or
octet-stream uploads, ``x-lakefs-meta-*`` user metadata, ETag preconditions) like against lakeFS.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from ..common import MAX_AMOUNT, ApiError
from ..routing import Request, Response, group_by_delimiter, json_response, paginate, route
from ..store import _validate_path, object_stats

if TYPE_CHECKING:  # type-only: the server imports the handlers
    from ..server import LakeFSEmulator


def _multipart_content(content_type: str, body: bytes) -> tuple[bytes, str]:
    """Extract the ``content`` part of a multipart/form-data body (the only part lakeFS reads)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise ApiError(400, "multipart body without boundary")
    delimiter = b"--" + match.group(1).encode()
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = head.decode("latin-1").lower()
        if re.search(r'name="?content"?', headers):
            part_type = re.search(r"content-type:\s*([^\r\n;]+)", headers)
            return data.removesuffix(b"\r\n"), part_type.group(
                1
            ).strip() if part_type else "application/octet-stream"
    raise ApiError(400, "multipart body has no 'content' part")


def _user_metadata(headers: Any) -> dict[str, str]:
    prefix = "x-lakefs-meta-"
    return {key[len(prefix) :]: value for key, value in headers.items() if key.lower().startswith(prefix)}


@route("POST", "/repositories/{repository}/branches/{branch}/objects")
def _upload_object(app: LakeFSEmulator, req: Request) -> Response:
    content_type = req.headers.get("Content-Type") or "application/octet-stream"
    if content_type.lower().startswith("multipart/form-data"):
        data, object_type = _multipart_content(content_type, req.body)
    else:
        data, object_type = req.body, content_type.split(";")[0].strip()
    stats = app.store.upload_object(
        req.params["repository"],
        req.params["branch"],
        req.arg("path"),
        data,
        object_type,
        _user_metadata(req.headers),
        req.headers.get("If-None-Match"),
        req.headers.get("If-Match"),
    )
    return json_response(201, stats)


@route("DELETE", "/repositories/{repository}/branches/{branch}/objects")
def _delete_object(app: LakeFSEmulator, req: Request) -> Response:
    _validate_path(req.arg("path"))
    app.store.delete_objects(req.params["repository"], req.params["branch"], [req.arg("path")])
    return Response(204, content_type="")


@route("POST", "/repositories/{repository}/branches/{branch}/objects/delete")
def _delete_objects(app: LakeFSEmulator, req: Request) -> Response:
    body = req.json_object()
    paths = body.get("paths")
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ApiError(400, "paths: required value")
    if len(paths) > MAX_AMOUNT:
        raise ApiError(400, f"paths: at most {MAX_AMOUNT} paths per request")
    errors = app.store.delete_objects(req.params["repository"], req.params["branch"], paths)
    return json_response(200, {"errors": errors})


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse a single ``bytes=a-b`` range; None means the whole object."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise ApiError(400, "invalid Range header")
    first, last = match.group(1), match.group(2)
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise ApiError(416, "Requested Range Not Satisfiable")
    return start, end


def _object_response(app: LakeFSEmulator, req: Request, with_body: bool) -> Response:
    path = req.arg("path")
    _validate_path(path)
    entry = app.store.get_entry(req.params["repository"], req.params["ref"], path)
    etag = f'"{entry["checksum"]}"'
    headers = {
        "ETag": etag,
        "Last-Modified": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(entry["mtime"])),
        "Accept-Ranges": "bytes",
    }
    if with_body and req.headers.get("If-None-Match") in (etag, entry["checksum"]):
        return Response(304, content_type="", headers=headers)
    data = app.store.blob_path(entry["address"]).read_bytes()
    status = 200
    if req.headers.get("Range"):
        start, end = _byte_range(req.headers["Range"], len(data))
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        data, status = data[start : end + 1], 206
    return Response(status, data, "application/octet-stream", headers)


@route("GET", "/repositories/{repository}/refs/{ref}/objects")
def _get_object(app: LakeFSEmulator, req: Request) -> Response:
    if req.flag("presign"):
        raise ApiError(400, "presign is not supported by this blockstore")
    return _object_response(app, req, with_body=True)


@route("HEAD", "/repositories/{repository}/refs/{ref}/objects")
def _head_object(app: LakeFSEmulator, req: Request) -> Response:
    return _object_response(app, req, with_body=False)


@route("GET", "/repositories/{repository}/refs/{ref}/objects/stat")
def _stat_object(app: LakeFSEmulator, req: Request) -> Response:
    path = req.arg("path")
    _validate_path(path)
    entry = app.store.get_entry(req.params["repository"], req.params["ref"], path)
    stats = object_stats(path, entry)
    if req.arg("user_metadata").lower() == "false":
        stats.pop("metadata")
    return json_response(200, stats)


def _common_prefix_stats(path: str) -> dict[str, Any]:
    return {"path": path, "path_type": "common_prefix", "physical_address": "", "checksum": "", "mtime": 0}


@route("GET", "/repositories/{repository}/refs/{ref}/objects/ls")
def _list_objects(app: LakeFSEmulator, req: Request) -> Response:
    tree = app.store.list_tree(req.params["repository"], req.params["ref"])
    items = [(path, object_stats(path, entry)) for path, entry in sorted(tree.items())]
    grouped = group_by_delimiter(items, req.arg("prefix"), req.arg("delimiter"), _common_prefix_stats)
    results, pagination = paginate(grouped, req.arg("after"), req.amount())
    return json_response(200, {"pagination": pagination, "results": results})
