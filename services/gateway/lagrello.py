"""Lagrello tokens (CONTRACTS.md §3): create, paged list, delete; camelCase, no nulls, no extras."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from services.gateway.appkeys import AUTH, ISSUER, SETTINGS, TENANTS
from services.gateway.auth import require
from services.gateway.errors import DialectError
from services.gateway.principal import Principal
from services.gateway.requests import bearer_principal, json_body
from shared.authz import LAGRELLO, Action, Target, delete_action
from shared.clients.issuer import TokenRecord
from shared.http import json_response
from shared.tokens import classify

routes = web.RouteTableDef()
MAX_SIZE = 20


def rfc3339(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def permissions_of(record: TokenRecord) -> list[str]:
    stored = [p for p in record.permissions if p in LAGRELLO]
    return ["READ", *[p for p in ("WRITE", "ADMIN") if p in stored]]


def token_model(record: TokenRecord, token_key: str) -> dict[str, Any]:
    """The Token model: exactly these five keys, never a null."""
    return {
        "tokenKey": token_key,
        "tokenName": record.name or "",
        "createdBy": record.created_by or record.subject,
        "createdAt": rfc3339(record.created_at),
        "permissions": permissions_of(record),
    }


async def caller(request: web.Request) -> Principal:
    return await bearer_principal(request, 403, "Forbidden")


@routes.post("/v1/tokens")
async def create(request: web.Request) -> web.Response:
    principal = await caller(request)
    # A Lagrello token is a tenant token: minting one is the token-generator right (ADMIN).
    require(
        principal,
        Action.TOKEN_CREATE_FOR_OTHER,
        Target(principal.tenant),
        DialectError(403, "creating tokens needs the ADMIN permission", "Forbidden"),
    )
    body = await json_body(request)
    if not isinstance(body, dict) or not body:
        raise DialectError(400, "a JSON object with tokenName is required")
    name = body.get("tokenName")
    if not isinstance(name, str) or not 1 <= len(name) <= 128:
        raise DialectError(400, "tokenName must be a string of 1 to 128 characters")
    requested = body.get("permissions") or []
    if not isinstance(requested, list) or not all(p in LAGRELLO for p in requested):
        raise DialectError(400, "permissions must be a list of READ, WRITE and ADMIN")
    permissions = ("READ", *[p for p in ("WRITE", "ADMIN") if p in requested])
    created = await request.app[ISSUER].create_token(
        principal.tenant,
        principal.subject,
        "opaque",
        minter=principal,
        name=name,
        permissions=permissions,
        created_by=principal.subject,
        ttl_seconds=await request.app[TENANTS].max_lifetime(principal.tenant),
    )
    return json_response(token_model(created.token, created.value))


def _page_param(request: web.Request, name: str, default: int, high: int | None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1 or (high is not None and int(raw) > high):
        bound = f"1 to {high}" if high else "at least 1"
        raise DialectError(400, f"{name} must be an integer {bound}")
    return int(raw)


@routes.get("/v1/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    principal = await caller(request)
    require(
        principal,
        Action.TOKEN_LIST,
        Target(principal.tenant),
        DialectError(403, "this credential may not list tokens", "Forbidden"),
    )
    size = _page_param(request, "size", MAX_SIZE, MAX_SIZE)
    page = _page_param(request, "page", 1, 10_000_000 // MAX_SIZE)
    result = await request.app[ISSUER].list_tokens(
        principal.tenant, kinds=("opaque",), limit=size, offset=(page - 1) * size
    )
    base = f"{request.app[SETTINGS].public_url}/v1/tokens"

    def link(number: int) -> str:
        return f"{base}?page={number}&size={size}"

    # The issuer's page is the answer (a full page is `size` long): a revoke call returns only
    # once the issuer counts it.
    data = [token_model(r, r.id) for r in result.tokens]
    paging = {
        "previous": link(page - 1) if page > 1 else "",
        "next": link(page + 1) if result.next_cursor else "",
    }
    return json_response({"data": data, "paging": paging})


@routes.delete("/v1/tokens/{key:.*}")
async def delete(request: web.Request) -> web.Response:
    principal = await caller(request)
    key = unquote(request.match_info["key"])
    if key.lower() == "{id}":
        raise DialectError(
            404,
            "the client sent the literal path placeholder {id} instead of a token id: "
            "nothing was deleted (a known bug of the generated clients)",
            "NotFound",
        )
    issuer = request.app[ISSUER]
    record: TokenRecord | None = None
    if classify(key) == "opaque":
        record = await issuer.lookup(principal.tenant, value=key)
    else:
        try:
            token_id = str(uuid.UUID(key))
        except ValueError:
            token_id = None
        if token_id is not None:
            record = await issuer.lookup(principal.tenant, token_id=token_id)
    if record is None or record.kind != "opaque" or record.revoked_at is not None:
        raise DialectError(404, "no such token", "NotFound")
    target = Target.of_record(record)
    require(
        principal,
        delete_action(principal, target),
        target,
        DialectError(403, "only ADMIN or the token's creator may delete it", "Forbidden"),
    )
    await request.app[AUTH].revoke(
        principal.tenant, token_id=record.id, reason="deleted", actor=principal.actor
    )
    return web.Response(status=204)
