"""Databricks Token API 2.0 (CONTRACTS.md §4): create, list, delete, and the start-up probe."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from services.gateway.appkeys import AUTH, ISSUER, SETTINGS, TENANTS
from services.gateway.auth import require
from services.gateway.errors import DialectError
from services.gateway.principal import Principal
from services.gateway.requests import bearer_principal, json_object
from shared.authz import Action, Target
from shared.clients.issuer import TokenRecord, TokenSummary
from shared.errors import QuotaExceeded
from shared.http import json_response

routes = web.RouteTableDef()


def _ms(value: datetime | None) -> int:
    return int(value.timestamp() * 1000) if value else -1


def token_info(record: TokenRecord | TokenSummary) -> dict[str, Any]:
    """PublicTokenInfo: epoch milliseconds, -1 for never, no nulls (comment omitted)."""
    info: dict[str, Any] = {
        "token_id": record.display_id,
        "creation_time": _ms(record.created_at),
        "expiry_time": _ms(record.expires_at),
    }
    if record.name:
        info["comment"] = record.name
    return info


async def caller(request: web.Request) -> Principal:
    return await bearer_principal(request, 401)


def forbidden(what: str) -> DialectError:
    return DialectError(403, f"this credential may not {what} Databricks tokens")


@routes.get("/.well-known/databricks-config")
async def well_known(_request: web.Request) -> web.Response:
    # The SDK probes this without auth when a client is built. An object without
    # workspace_id or oidc_endpoint tells it there is nothing to discover, and it prints no
    # warning (a 404 made it log "Failed to automatically resolve config" every time).
    return json_response({})


@routes.post("/api/2.0/token/create")
async def create(request: web.Request) -> web.Response:
    principal = await caller(request)
    own = Target(principal.tenant, principal.subject)
    require(principal, Action.TOKEN_CREATE, own, forbidden("create"))
    body = await json_object(request, allow_empty=True)
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > 255):
        raise DialectError(400, "comment must be a string of at most 255 characters")
    lifetime = body.get("lifetime_seconds")
    if lifetime is None:
        lifetime = min(
            request.app[SETTINGS].databricks_default_lifetime,
            await request.app[TENANTS].max_lifetime(principal.tenant),
        )
    elif not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime <= 0:
        raise DialectError(400, "lifetime_seconds must be a positive integer")
    scopes = body.get("scopes")
    if scopes is not None and (
        not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes)
    ):
        raise DialectError(400, "scopes must be a list of strings")
    try:
        created = await request.app[ISSUER].create_token(
            principal.tenant,
            principal.subject,
            "databricks",
            minter=principal,
            name=comment or None,
            ttl_seconds=lifetime,
            created_by=principal.subject,
        )
    except QuotaExceeded as exc:
        raise DialectError(400, exc.message, "QUOTA_EXCEEDED") from None
    return json_response({"token_value": created.value, "token_info": token_info(created.token)})


@routes.get("/api/2.0/token/list")
async def list_tokens(request: web.Request) -> web.Response:
    principal = await caller(request)
    require(principal, Action.TOKEN_LIST, Target(principal.tenant), forbidden("list"))
    tokens = await request.app[ISSUER].owner_tokens(
        principal.tenant, principal.subject, ("databricks",), 1000
    )
    # The issuer's list is the answer: a revoke call returns only once the issuer counts it.
    return json_response({"token_infos": [token_info(r) for r in tokens]})


@routes.post("/api/2.0/token/delete")
async def delete(request: web.Request) -> web.Response:
    principal = await caller(request)
    require(
        principal,
        Action.TOKEN_DELETE,
        Target(principal.tenant, principal.subject),
        forbidden("delete"),
    )
    body = await json_object(request)
    token_id = body.get("token_id")
    if not isinstance(token_id, str) or not token_id:
        raise DialectError(400, "token_id is required")
    # A malformed id is looked up nowhere (the client checks its grammar).
    record = await request.app[ISSUER].lookup(principal.tenant, display_id=token_id)
    # Unknown, expired, revoked and another user's tokens look the same: they do not exist.
    missing = DialectError(404, f"Token with id {token_id} does not exist.")
    if record is None or record.revoked_at is not None or record.expired():
        raise missing
    require(principal, Action.TOKEN_DELETE, Target.of_record(record), missing)
    await request.app[AUTH].revoke(
        principal.tenant, token_id=record.id, reason="deleted", actor=principal.actor
    )
    return json_response({})
