"""Reading what a client sent: JSON bodies, bearer tokens, Basic credentials, the peer address."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web

from services.gateway.appkeys import AUTH
from services.gateway.edge import client_address, forwarded_hops
from services.gateway.errors import DialectError
from services.gateway.principal import Principal
from shared.errors import Unauthenticated
from shared.http import storable_text
from shared.jsonbody import BodyTooLarge, MalformedJson, parse_json, read_body

# The peer address lives with the other edge rules; handlers import it from here as before.
__all__ = [
    "basic",
    "bearer",
    "bearer_principal",
    "client_address",
    "forwarded_hops",
    "json_body",
    "json_object",
]


async def json_body(request: web.Request, *, status: int = 400, allow_empty: bool = False) -> Any:
    """The parsed JSON body (any JSON value), or None for an empty body when allowed. The
    whole body is read (up to the configured limit: 413), and parsed with a depth limit."""
    try:
        raw = await read_body(request)
    except BodyTooLarge as exc:
        raise DialectError(413, exc.message) from None
    if not raw.strip():
        if allow_empty:
            return None
        raise DialectError(status, "request body is empty; a JSON object is required")
    try:
        body = parse_json(raw)
    except MalformedJson as exc:
        raise DialectError(status, exc.message) from None
    if not storable_text(body):
        raise DialectError(status, "strings must be valid Unicode without NUL characters")
    return body


async def json_object(
    request: web.Request, *, status: int = 400, allow_empty: bool = False
) -> dict[str, Any]:
    body = await json_body(request, status=status, allow_empty=allow_empty)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise DialectError(status, "request body must be a JSON object")
    return body


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def bearer_principal(request: web.Request, status: int, code: str | None = None) -> Principal:
    """The caller behind ``Authorization: Bearer …``, or the dialect's refusal (``status``)."""
    token = bearer(request)
    if token is None:
        raise DialectError(
            status, "a bearer token is required: Authorization: Bearer <token>", code
        )
    try:
        return await request.app[AUTH].authenticate(token)
    except Unauthenticated as exc:
        raise DialectError(status, exc.message, code) from None


def basic(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise DialectError(400, "malformed Basic credentials") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise DialectError(400, "malformed Basic credentials")
    return user, password
