"""Request bodies read whole up to a limit, and JSON parsed with a bounded nesting depth.

aiohttp's ``request.content.read(n)`` returns whatever arrived first, so a body sent in two
TCP segments was cut (issue 14); these read until EOF. ``json.loads`` recurses once per
nesting level, so 30,000 ``[`` raised ``RecursionError`` (a 500) and deep claims made
``json.dumps`` fail later: the depth is checked on the bytes before anything is parsed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from shared.errors import BadRequest, PayloadTooLarge

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
# Each service's limit (TESSERA_MAX_BODY_BYTES), set by shared.http.base_app.
MAX_BODY: web.AppKey[int] = web.AppKey("max_body_bytes", int)

# A JSON string (escapes included): brackets inside strings do not nest anything.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
_OPENERS = frozenset(b"[{")


class BodyTooLarge(PayloadTooLarge):
    """The body is over the service's limit."""


class MalformedJson(BadRequest):
    """The body is not JSON, or nests deeper than :data:`MAX_JSON_DEPTH`."""


def body_limit(request: web.Request) -> int:
    """The service's largest request body, bytes (:data:`MAX_BODY`, else the default 1 MiB)."""
    return request.app.get(MAX_BODY, DEFAULT_MAX_BODY_BYTES)


async def read_body(request: web.Request, max_bytes: int | None = None) -> bytes:
    """The whole request body, however many segments it came in; over ``max_bytes`` (the
    service's limit by default) → :class:`BodyTooLarge`, without reading the rest."""
    limit = body_limit(request) if max_bytes is None else max_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (exact for valid JSON)."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return 0  # too few brackets to nest too deep: the common case costs two counts
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRING.sub(b'""', raw)):
        if match.group()[0] in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_json(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a JSON text, or :class:`MalformedJson` (not JSON, or nested deeper than
    ``max_depth``): never a ``RecursionError``."""
    data = raw.encode() if isinstance(raw, str) else raw
    if json_depth(data) > max_depth:
        raise MalformedJson(f"JSON is nested deeper than {max_depth} levels")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise MalformedJson("request body is not valid JSON") from None
    except RecursionError:  # only reachable with text that is not JSON anyway
        raise MalformedJson("request body is not valid JSON") from None
