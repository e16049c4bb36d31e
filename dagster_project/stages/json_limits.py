"""Parsing one client JSON value with limits, so one pathological record is quarantined alone.

Why limits: Python's ``json`` happily builds values the rest of the pipeline cannot hold, or raises exceptions that
are not ``JSONDecodeError`` -- a line nested thousands of levels deep raises ``RecursionError``, a 5,000-digit
integer raises ``ValueError`` (the interpreter's int-string limit), ``NaN`` and ``Infinity`` are accepted though
JSON has no such values, and an escaped lone surrogate (``"\\ud800"``) is accepted and only fails later, when the
stage writes Parquet -- taking the whole drop down with it. :func:`parse_json` turns every one of those into a
:class:`JsonRejected` with a reason an operator can read, for that record only.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting of objects and arrays accepted in one record."""
MAX_INT_DIGITS = 19
"""Integers beyond 64 bits (19 digits) are not ids or counts any downstream system stores faithfully."""
MAX_RECORD_BYTES = 8 << 20
"""Largest single record (one JSONL line) accepted: far above any labelable text."""


class JsonRejected(ValueError):
    """The value is not acceptable; the message is the quarantine reason."""


def _integer(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise JsonRejected(f"integer with {digits} digits (at most {MAX_INT_DIGITS} are accepted)")
    return int(text)


def _number(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise JsonRejected(f"number {text[:40]} is out of range")
    return value


def _constant(name: str) -> Any:
    raise JsonRejected(f"{name} is not a JSON value")


def _depth(value: Any) -> int:
    """Nesting depth of objects and arrays, without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            pending.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


_DECODER = json.JSONDecoder(parse_int=_integer, parse_float=_number, parse_constant=_constant)
"""One decoder for every record (``json.loads`` with hooks would build one per call)."""


def parse_json(text: str) -> Any:
    """The JSON value in ``text``, or :class:`JsonRejected` naming what is wrong.

    ``text`` must be strictly decoded (``bytes.decode`` with the default errors), so it holds no lone surrogate
    itself: one can only come from a ``\\u`` escape, and only then is the value encoded to find it."""
    try:
        value = _DECODER.decode(text)
    except JsonRejected:
        raise
    except json.JSONDecodeError as exc:
        raise JsonRejected(f"invalid JSON: {exc.msg} at column {exc.colno}") from exc
    except RecursionError as exc:
        raise JsonRejected(f"nested deeper than {MAX_DEPTH} levels") from exc
    except ValueError as exc:  # the interpreter's own limits
        raise JsonRejected(f"invalid JSON: {exc}") from exc
    # Nesting deeper than MAX_DEPTH needs more opening brackets than that (counting them is a C loop).
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise JsonRejected(f"nested deeper than {MAX_DEPTH} levels")
    try:
        if "\\u" in text:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise JsonRejected(f"contains an unpaired surrogate escape (\\u{ord(exc.object[exc.start]):04x}): "
                           "not valid Unicode") from exc
    return value
