"""Reading what a client sent: JSON bodies, bearer tokens, Basic credentials, the peer address."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from typing import Any

from aiohttp import web

from services.gateway.context import AUTH
from services.gateway.errors import DialectError
from services.gateway.principal import Principal
from shared.errors import Unauthenticated
from shared.http import MAX_BODY_BYTES, storable_text
from shared.settings import IPNetwork


async def json_body(request: web.Request, *, status: int = 400, allow_empty: bool = False) -> Any:
    """The parsed JSON body (any JSON value), or None for an empty body when allowed."""
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise DialectError(status, "request body too large")
    if not raw.strip():
        if allow_empty:
            return None
        raise DialectError(status, "request body is empty; a JSON object is required")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise DialectError(status, "request body is not valid JSON") from None
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


def client_address(
    request: web.Request, trusted: tuple[IPNetwork, ...]
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The TCP peer, or, when the peer is a trusted proxy, the right-most untrusted
    X-Forwarded-For entry (entries further left are client-controlled)."""
    peer = request.remote
    try:
        address = ipaddress.ip_address(peer) if peer else None
    except ValueError:
        return None
    if address is None or not any(address in net for net in trusted):
        return address
    forwarded = [
        p.strip() for p in request.headers.get("X-Forwarded-For", "").split(",") if p.strip()
    ]
    for entry in reversed(forwarded):
        try:
            hop = ipaddress.ip_address(entry)
        except ValueError:
            return None
        if not any(hop in net for net in trusted):
            return hop
    return address
