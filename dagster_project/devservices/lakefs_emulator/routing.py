"""The emulator's HTTP layer: request/response objects, lakeFS-style pagination and the route table.

Why this exists: every ``/api/v1`` route of the lakeFS OpenAPI spec that the emulator serves is registered
here by the ``@route`` decorator of a handler module; ``match_route`` dispatches on the spec's path
templates and ``served_routes`` lets the contract test compare the served routes with the spec.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .common import DEFAULT_AMOUNT, MAX_AMOUNT, ApiError

if TYPE_CHECKING:  # type-only: the server imports this module
    from .server import LakeFSEmulator


@dataclass
class Request:
    """One parsed API request; ``params`` holds URL-decoded path parameters."""

    method: str
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    user: str = ""

    def arg(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    def flag(self, name: str) -> bool:
        value = self.arg(name).lower()
        if value in ("", "false", "0"):
            return False
        if value in ("true", "1"):
            return True
        raise ApiError(400, f"{name}: invalid boolean value")

    def amount(self) -> int:
        raw = self.arg("amount")
        try:
            value = int(raw) if raw else DEFAULT_AMOUNT
        except ValueError as err:
            raise ApiError(400, "amount: invalid integer") from err
        if value < -1 or value > MAX_AMOUNT:
            raise ApiError(400, f"amount: must be between -1 and {MAX_AMOUNT}")
        return DEFAULT_AMOUNT if value == -1 else value

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError as err:
            raise ApiError(400, "request body is not valid JSON") from err

    def json_object(self, required: tuple[str, ...] = ()) -> dict[str, Any]:
        body = self.json()
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        for name in required:
            if body.get(name) in (None, ""):
                raise ApiError(400, f"{name}: required value")
        return body


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, document: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(document).encode(), "application/json", headers or {})


def error_response(status: int, message: str, extra: dict[str, Any] | None = None) -> Response:
    return json_response(status, {"message": message, **(extra or {})})


def paginate(items: list[tuple[str, Any]], after: str, amount: int) -> tuple[list[Any], dict[str, Any]]:
    """Keyset pagination over ``(key, value)`` pairs sorted by key, as lakeFS paginates listings."""
    remaining = [(key, value) for key, value in items if key > after] if after else items
    page = remaining[:amount]
    has_more = len(remaining) > amount
    pagination = {
        "has_more": has_more,
        "next_offset": page[-1][0] if has_more and page else "",
        "results": len(page),
        "max_per_page": amount,
    }
    return [value for _, value in page], pagination


def group_by_delimiter(
    items: list[tuple[str, Any]], prefix: str, delimiter: str, make_prefix: Callable[[str], Any]
) -> list[tuple[str, Any]]:
    """Collapse paths below ``prefix`` that contain ``delimiter`` into one common-prefix item."""
    grouped: dict[str, Any] = {}
    for key, value in items:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix) :]
        index = rest.find(delimiter) if delimiter else -1
        if index >= 0:
            common = prefix + rest[: index + len(delimiter)]
            grouped.setdefault(common, make_prefix(common))
        else:
            grouped[key] = value
    return sorted(grouped.items())


Handler = Callable[["LakeFSEmulator", Request], Response]
ROUTES: list[tuple[str, str, Handler]] = []


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    """Register a handler for an OpenAPI path template (relative to ``/api/v1``)."""

    def register(handler: Handler) -> Handler:
        ROUTES.append((method, template, handler))
        return handler

    return register


def served_routes() -> list[tuple[str, str]]:
    """(HTTP method, OpenAPI path template) for every route the emulator serves."""
    return [(method, template) for method, template, _ in ROUTES]


def match_route(method: str, raw_path: str) -> tuple[Handler, dict[str, str]] | None:
    """Match on raw (still percent-encoded) segments so encoded ``/`` in refs stays inside one parameter."""
    segments = raw_path.strip("/").split("/") if raw_path.strip("/") else []
    path_matched = False
    for route_method, template, handler in ROUTES:
        parts = template.strip("/").split("/")
        if len(parts) != len(segments):
            continue
        params: dict[str, str] = {}
        for part, segment in zip(parts, segments, strict=True):
            if part.startswith("{"):
                params[part[1:-1]] = unquote(segment)
            elif part != segment:
                break
        else:
            path_matched = True
            if route_method == method:
                return handler, params
    if path_matched:
        raise ApiError(405, "method not allowed")
    return None
