"""Tapis v3 Tokens (CONTRACTS.md §1): create, refresh, revoke, update_keys, and tenant JWKS.

Every client error is a 400 in the Tapis envelope (the middleware maps statuses); successes
are 200 with ``status: success``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from services.gateway.appkeys import AUTH, ISSUER, KEYS, SUBSCRIBER, TENANTS
from services.gateway.auth import require
from services.gateway.errors import VERSION, DialectError, tapis_envelope
from services.gateway.principal import Principal
from services.gateway.requests import basic, json_object
from shared.authz import Action, Target, create_action
from shared.clients.issuer import JwtRequest
from shared.clients.revocation import VerifiedJwt
from shared.errors import Unauthenticated, Unavailable
from shared.http import json_response
from shared.logging import bind_actor

routes = web.RouteTableDef()


def ok(request: web.Request, result: Any, message: str) -> web.Response:
    return json_response(tapis_envelope(result, message, request.app[VERSION]))


def _str(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > 255:
        raise DialectError(400, f"{name} is required and must be a non-empty string")
    return value


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise DialectError(400, f"{name} must be a boolean")
    return value


def _int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise DialectError(400, f"{name} must be an integer")
    return value


async def _token_caller(request: web.Request) -> Principal | None:
    """The X-Tapis-Token caller, None without one; both it and Basic is refused."""
    token = request.headers.get("X-Tapis-Token")
    if token is None:
        return None
    if request.headers.get("Authorization", "").lower().startswith("basic "):
        raise DialectError(400, "send X-Tapis-Token or HTTP Basic credentials, not both")
    try:
        return await request.app[AUTH].authenticate(token)
    except Unauthenticated as exc:
        raise DialectError(400, f"Invalid X-Tapis-Token: {exc.message}") from None


async def _creator(request: web.Request, username: str) -> tuple[Principal, bool]:
    """Who asks for a token: the X-Tapis-Token caller, or the Basic user (whose password is a
    Tessera credential of that very user); and whether it came by Basic."""
    principal = await _token_caller(request)
    if principal is not None:
        return principal, False
    credentials = basic(request)
    if credentials is None:
        raise DialectError(400, "no credentials: send X-Tapis-Token or HTTP Basic")
    user, password = credentials
    if user != username:
        raise DialectError(400, "the Basic user must be the token_username")
    try:
        principal = await request.app[AUTH].authenticate(password)
    except Unauthenticated:
        raise DialectError(400, "invalid Basic credentials") from None
    if principal.subject != username:
        raise DialectError(400, "invalid Basic credentials")
    return principal, True


@routes.post("/v3/tokens")
async def create_token(request: web.Request) -> web.Response:
    body = await json_object(request)
    account_type = body.get("account_type")
    if account_type not in ("user", "service"):
        raise DialectError(400, "account_type is required and must be 'user' or 'service'")
    tenant = _str(body, "token_tenant_id")
    username = _str(body, "token_username")
    assert tenant is not None and username is not None
    target_site = _str(body, "target_site_id", required=False) or _str(
        body, "target_site", required=account_type == "service"
    )
    delegation = _bool(body, "delegation_token")
    refresh = _bool(body, "generate_refresh_token")
    delegated_tenant = _str(body, "delegation_sub_tenant_id") if delegation else None
    delegated_user = _str(body, "delegation_sub_username") if delegation else None
    access_ttl, refresh_ttl = _int(body, "access_token_ttl"), _int(body, "refresh_token_ttl")
    claims = body.get("claims")
    if claims is not None and not isinstance(claims, dict):
        raise DialectError(400, "claims must be an object")
    # Authenticate, then authorise: nothing is said about a tenant to a caller who may not
    # mint in it, and one who may is authenticated in it, so it is served here.
    principal, by_basic = await _creator(request, username)
    target = Target(tenant, username, account_type=None if by_basic else str(account_type))
    require(
        principal,
        create_action(principal, target),
        target,
        DialectError(400, "not authorised to generate tokens for this tenant and user"),
    )
    jwt_request = JwtRequest(
        tenant=tenant,
        username=username,
        account_type=str(account_type),
        minter=principal,
        generate_refresh_token=refresh,
        delegation=delegation,
        delegation_sub_tenant_id=delegated_tenant,
        delegation_sub_username=delegated_user,
        target_site=target_site,
        access_ttl=access_ttl,
        refresh_ttl=refresh_ttl,
        claims=claims,
    )
    result = await request.app[ISSUER].create_jwt(jwt_request)
    return ok(request, result, "Token generation successful.")


async def _body_token(request: web.Request, field: str) -> tuple[str, dict[str, Any]]:
    body = await json_object(request)
    token = body.get(field)
    if not isinstance(token, str) or not token:
        raise DialectError(400, f"{field} is required")
    try:
        claims = await request.app[AUTH].verify_jwt(token)
    except Unauthenticated as exc:
        raise DialectError(400, exc.message[:1].upper() + exc.message[1:]) from None
    return token, claims


@routes.put("/v3/tokens")
async def refresh_token(request: web.Request) -> web.Response:
    token, claims = await _body_token(request, "refresh_token")
    if claims.get("tapis/token_type") != "refresh":
        raise DialectError(400, "the token is not a refresh token")
    try:
        result = await request.app[ISSUER].refresh_jwt(token)
    except Unauthenticated as exc:
        raise DialectError(400, f"Invalid refresh token: {exc.message}") from None
    return ok(request, result, "Token generation successful.")


@routes.post("/v3/tokens/revoke")
async def revoke_token(request: web.Request) -> web.Response:
    _token, claims = await _body_token(request, "token")
    # Possession of the token is the right to revoke it: its holder is the actor.
    actor = str(claims.get("sub"))
    bind_actor(actor)
    jwt = VerifiedJwt(
        jti=str(claims["jti"]),
        subject=str(claims.get("tapis/username") or claims.get("sub")),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
    )
    await request.app[AUTH].revoke(
        str(claims["tapis/tenant_id"]), jwt=jwt, reason="revoked", actor=actor
    )
    return ok(request, "", f"Token {claims['jti']} has been revoked.")


@routes.put("/v3/tokens/keys")
async def update_keys(request: web.Request) -> web.Response:
    if request.headers.get("X-Tapis-Token") is None:
        raise DialectError(400, "update_keys needs X-Tapis-Token (HTTP Basic is not accepted)")
    principal = await _token_caller(request)
    assert principal is not None
    body = await json_object(request)
    tenant = str(_str(body, "tenant_id"))
    require(
        principal,
        Action.KEYS_ROTATE,
        Target(tenant),
        DialectError(400, "not authorised to update the keys of this tenant"),
    )
    if await request.app[TENANTS].get(tenant) is None:
        raise DialectError(400, f"tenant {tenant} is not served here")
    rotated = await request.app[KEYS].rotate(tenant, immediate=True)
    # The new key signs at once: this replica learns it now, the others from key.rotated.
    request.app[SUBSCRIBER].keys_changed(tenant)
    return ok(request, {"public_key": rotated.public_key_pem}, "Keys updated.")


@routes.get("/v3/tokens/hello")
async def hello(request: web.Request) -> web.Response:
    """The real tokens-api's liveness route."""
    return ok(request, "hello", "Hello from the Tapis tokens API (Tessera).")


@routes.get("/v3/tokens/ready")
async def ready(request: web.Request) -> web.Response:
    """The real tokens-api's readiness route: ready once the gateway is serving."""
    return ok(request, "ready", "The tokens API is ready.")


@routes.get("/v3/tenants/{tenant}/.well-known/jwks.json")
async def jwks(request: web.Request) -> web.Response:
    tenant = request.match_info["tenant"]
    # Known tenants come from the cache; an unknown one counts against the client's address.
    if await request.app[TENANTS].get(tenant) is None:
        raise DialectError(400, "unknown tenant")
    try:
        found = await request.app[KEYS].jwks(tenant)
    except Unavailable:
        raise DialectError(503, "signing keys are unavailable") from None
    if found is None:
        raise DialectError(400, "unknown tenant")
    headers = {"Cache-Control": found.cache_control} if found.cache_control else None
    return json_response(found.body, headers=headers)
