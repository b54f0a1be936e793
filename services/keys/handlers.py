"""HTTP handlers of the keys service: parse, call the life-cycle and signing code, reply."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from services.keys import service, store
from services.keys.appkeys import KEYRING, SETTINGS, SIGNER
from services.keys.domain import (
    KeyView,
    parse_claim_sets,
    parse_tenant,
    publish_until,
    tenant_json,
)
from services.keys.errors import UnknownKid, UnknownTenant
from shared.callers import GATEWAY, ISSUER, OPERATOR, Callers
from shared.errors import BadRequest
from shared.http import json_response, read_json_object
from shared.ids import is_kid, is_tenant_id
from shared.service import POOL

routes = web.RouteTableDef()
# Who may call what (shared.callers): only the issuer has claims signed, never the gateway;
# tenants are the operator's; the gateway reads tenants and JWKS and rotates for Tapis.
CALLERS: Callers = {
    "POST /internal/tenants": frozenset({OPERATOR}),
    "GET /internal/tenants": frozenset({OPERATOR}),
    "GET /internal/tenants/{tenant}": frozenset({ISSUER, GATEWAY, OPERATOR}),
    "POST /internal/tenants/{tenant}/sign": frozenset({ISSUER}),
    "GET /internal/tenants/{tenant}/jwks": frozenset({GATEWAY, OPERATOR}),
    "GET /internal/tenants/{tenant}/keys": frozenset({OPERATOR}),
    "POST /internal/tenants/{tenant}/keys/rotate": frozenset({GATEWAY, OPERATOR}),
    "POST /internal/tenants/{tenant}/keys/{kid}/revoke": frozenset({OPERATOR}),
}


def _tenant(request: web.Request) -> str:
    """The path's tenant id; one outside the grammar is unknown, whatever reached us."""
    tenant = request.match_info["tenant"]
    if not is_tenant_id(tenant):
        raise UnknownTenant("unknown tenant")
    return tenant


async def _tenant_row(pool: asyncpg.Pool, tenant: str) -> asyncpg.Record:
    async with pool.acquire() as conn:
        row = await store.fetch_tenant(conn, tenant)
    if row is None:
        raise UnknownTenant(f"unknown tenant {tenant!r}")
    return row


@routes.post("/internal/tenants")
async def create_tenant(request: web.Request) -> web.Response:
    tenant = parse_tenant(await read_json_object(request), request.app[SETTINGS].public_url)
    row = await service.create_tenant(request.app[POOL], request.app[KEYRING], tenant)
    await request.app[SIGNER].refresh()
    return json_response(tenant_json(row))


@routes.get("/internal/tenants")
async def list_tenants(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        rows = await store.fetch_tenants(conn)
    return json_response({"tenants": [tenant_json(r) for r in rows]})


@routes.get("/internal/tenants/{tenant}")
async def show_tenant(request: web.Request) -> web.Response:
    return json_response(tenant_json(await _tenant_row(request.app[POOL], _tenant(request))))


@routes.post("/internal/tenants/{tenant}/sign")
async def sign(request: web.Request) -> web.Response:
    claim_sets = parse_claim_sets(await read_json_object(request))
    tokens, key = await request.app[SIGNER].sign(_tenant(request), claim_sets)
    return json_response({"tokens": tokens, "kid": key.kid, "alg": key.alg})


@routes.get("/internal/tenants/{tenant}/jwks")
async def jwks(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    row = await _tenant_row(request.app[POOL], tenant)  # 404 for an unknown tenant
    keys = request.app[SIGNER].jwks(tenant)
    if keys is None:
        await request.app[SIGNER].refresh()
        keys = request.app[SIGNER].jwks(tenant) or []
    max_age = request.app[SETTINGS].jwks_max_age
    # "issuer" is an extra member of the JWK Set (RFC 7517 §5 lets readers ignore it): it
    # tells verifiers which iss this tenant's tokens must carry.
    return json_response(
        {"keys": keys, "issuer": row["issuer"]},
        headers={"Cache-Control": f"public, max-age={max_age}"},
    )


@routes.get("/internal/tenants/{tenant}/keys")
async def list_keys(request: web.Request) -> web.Response:
    tenant = _tenant(request)
    await _tenant_row(request.app[POOL], tenant)
    async with request.app[POOL].acquire() as conn:
        rows = await store.fetch_keys(conn, tenant)
    views = [
        KeyView(
            kid=r["kid"],
            alg=r["alg"],
            state=r["state"],
            created_at=r["created_at"],
            activates_at=r["activates_at"],
            retired_at=r["retired_at"],
            revoked_at=r["revoked_at"],
            publish_until=publish_until(r["state"], r["retired_at"], r["max_exp"]),
        )
        for r in rows
    ]
    return json_response({"keys": [v.to_json() for v in views]})


@routes.post("/internal/tenants/{tenant}/keys/rotate")
async def rotate(request: web.Request) -> web.Response:
    body = await read_json_object(request) if request.can_read_body else {}
    immediate = body.get("immediate", False)
    if not isinstance(immediate, bool):
        raise BadRequest("immediate must be true or false")
    key, activates_at = await service.rotate(
        request.app[POOL],
        request.app[KEYRING],
        _tenant(request),
        immediate=immediate,
        delay=request.app[SETTINGS].activation_delay,
        limits=request.app[SETTINGS].rotation_limits,
    )
    await request.app[SIGNER].refresh()
    return json_response(
        {
            "kid": key.kid,
            "alg": key.alg,
            "public_key_pem": key.public_pem,
            "activates_at": activates_at.isoformat(),
        }
    )


@routes.post("/internal/tenants/{tenant}/keys/{kid}/revoke")
async def revoke(request: web.Request) -> web.Response:
    kid = request.match_info["kid"]
    if not is_kid(kid):
        raise UnknownKid("unknown or already revoked key")
    revoked_at = await service.revoke(
        request.app[POOL], request.app[KEYRING], _tenant(request), kid
    )
    await request.app[SIGNER].refresh()
    return json_response({"kid": kid, "revoked_at": revoked_at.isoformat()})
