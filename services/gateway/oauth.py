"""For resource servers: RFC 7662 introspection, RFC 7009 revocation, the revocation feed."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.gateway.appkeys import AUTH, REVOCATION
from services.gateway.auth import require
from services.gateway.errors import DialectError
from services.gateway.principal import Principal
from services.gateway.requests import basic, bearer, bearer_principal
from shared.authz import Action, Target, allowed, delete_action
from shared.clients.revocation import VerifiedJwt
from shared.errors import Unauthenticated
from shared.http import json_response

routes = web.RouteTableDef()


async def caller(request: web.Request) -> Principal:
    """The resource server calling: a bearer credential, or (RFC 7662 §2.1, RFC 6749 §2.3.1)
    HTTP Basic client authentication whose password is a Tessera credential of that client."""
    challenge = {"WWW-Authenticate": 'Bearer realm="tessera", Basic realm="tessera"'}
    credentials = basic(request) if bearer(request) is None else None
    try:
        if credentials is None:
            return await bearer_principal(request, 401, "invalid_client")
        client_id, secret = credentials
        principal = await request.app[AUTH].authenticate(secret)
        if principal.subject != client_id:
            raise Unauthenticated("the client id is not the credential's subject")
        return principal
    except Unauthenticated as exc:
        raise DialectError(401, exc.message, "invalid_client", headers=challenge) from None
    except DialectError as exc:
        if exc.status == 401:
            exc.headers = challenge
        raise


def _refused(action: str) -> DialectError:
    return DialectError(403, f"this credential may not {action}", "insufficient_scope")


async def _form_token(request: web.Request) -> str:
    if request.content_type != "application/x-www-form-urlencoded":
        raise DialectError(
            400, "send the token as application/x-www-form-urlencoded", "invalid_request"
        )
    try:
        form = await request.post()
    except ValueError:
        raise DialectError(400, "malformed form body", "invalid_request") from None
    token = form.get("token")
    if not isinstance(token, str) or not token:
        raise DialectError(400, "token is required", "invalid_request")
    return token


@routes.post("/oauth2/introspect")
async def introspect(request: web.Request) -> web.Response:
    """RFC 7662: ``{"active": false}`` for anything not valid in the caller's own tenant."""
    principal = await caller(request)
    require(principal, Action.TOKEN_INTROSPECT, Target(principal.tenant), _refused("introspect"))
    token = await _form_token(request)
    auth = request.app[AUTH]
    try:
        subject = await auth.authenticate(token)
    except Unauthenticated:
        # A refresh token is said to be one, and never active: it is not a credential.
        if await auth.refresh_token_tenant(token) == principal.tenant:
            return json_response({"active": False, "token_type": "refresh_token"})
        return json_response({"active": False})
    if subject.tenant != principal.tenant:
        return json_response({"active": False})
    body: dict[str, Any] = {
        "active": True,
        "sub": subject.subject,
        "tenant": subject.tenant,
        "jti": subject.token_id,
        "token_type": subject.token_kind,
        "principal_kind": str(subject.kind),
        "scope": " ".join(sorted(subject.permissions)),
    }
    if subject.expires_at is not None:
        body["exp"] = int(subject.expires_at.timestamp())
    return json_response(body)


@routes.post("/oauth2/revoke")
async def revoke(request: web.Request) -> web.Response:
    """RFC 7009: 200 whether or not the token was valid; only the caller's own tokens (or any
    of its tenant's for an admin) are revoked."""
    principal = await caller(request)
    token = await _form_token(request)
    try:
        subject = await request.app[AUTH].authenticate(token)
    except Unauthenticated:
        return json_response({})
    target = Target(subject.tenant, subject.subject, subject.namespace)
    if not allowed(principal, delete_action(principal, target), target):
        return json_response({})  # RFC 7009: the same answer whether or not anything changed
    auth, tenant, actor = request.app[AUTH], subject.tenant, principal.actor
    if str(subject.token_kind).startswith("jwt"):
        # A JWT verified here: the revocation service needs no issuer lookup for it.
        jwt = VerifiedJwt(subject.token_id, subject.subject, subject.expires_at)
        await auth.revoke(tenant, jwt=jwt, reason="revoked", actor=actor)
    else:
        await auth.revoke(tenant, token_id=subject.token_id, reason="revoked", actor=actor)
    return json_response({})


def _number(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None:
        return None
    # Long enough for any seq, short enough for int() (whose limit would be a 500).
    if not value.isdigit() or len(value) > 30:
        raise DialectError(400, f"{name} must be a non-negative integer", "bad_request")
    return int(value)


def _compact(request: web.Request) -> bool:
    """``format``: ``full`` (the default) or ``compact`` (the subscriber library's rows)."""
    shape = request.query.get("format", "full")
    if shape not in ("full", "compact"):
        raise DialectError(400, "format must be full or compact", "bad_request")
    return shape == "compact"


@routes.get("/v1/revocations")
async def feed(request: web.Request) -> web.Response:
    principal = await caller(request)
    require(principal, Action.REVOCATIONS_READ, Target(principal.tenant), _refused("read"))
    _compact(request)  # checked as the snapshot does; the feed has one form
    since, limit = _number(request, "since"), _number(request, "limit")
    return json_response(
        await request.app[REVOCATION].feed(principal.tenant, since=since, limit=limit)
    )


@routes.get("/v1/revocations/snapshot")
async def snapshot(request: web.Request) -> web.Response:
    principal = await caller(request)
    require(principal, Action.REVOCATIONS_READ, Target(principal.tenant), _refused("read"))
    compact = _compact(request)
    after_seq, limit = _number(request, "after_seq"), _number(request, "limit")
    as_of = _number(request, "as_of")
    # The compact form too, so outside subscribers (shared.subscriber) bootstrap from here.
    page = await request.app[REVOCATION].snapshot(
        principal.tenant, after_seq=after_seq, limit=limit, as_of=as_of, compact=compact
    )
    return json_response(page)
