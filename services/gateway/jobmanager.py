"""jobmanager API access tokens (CONTRACTS.md §2): create and revoke, internal networks only.

Checks run in the contract's order: 403 (not internal), then 400/422 (bad input), then 404.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from services.gateway.appkeys import AUTH, ISSUER, SETTINGS
from services.gateway.auth import require
from services.gateway.errors import DialectError
from services.gateway.requests import client_address, json_body
from shared.authz import Action, Kind, Principal
from shared.http import json_response, storable_text
from shared.logging import bind_actor

routes = web.RouteTableDef()
PATH = "/v1/api_access_token"


def network_caller(request: web.Request, action: Action) -> Principal:
    """The anonymous caller of this API, allowed ``action`` only from an internal network."""
    settings = request.app[SETTINGS]
    address = client_address(request, settings.trusted_proxies)
    principal = Principal(
        Kind.ANONYMOUS,
        "",
        str(address),
        internal_network=address is not None
        and any(address in net for net in settings.internal_networks),
    )
    require(
        principal,
        action,
        None,
        DialectError(403, "this API is only available from internal networks"),
    )
    bind_actor(principal.actor)
    return principal


def _identity(value: Any) -> str:
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > 255
        or not storable_text(value)
    ):
        raise DialectError(400, "identity must be a non-empty string of at most 255 characters")
    return value


def _expires_at(value: Any, now: datetime, default_ttl: int) -> datetime:
    """Seconds from now (a positive integer) or a future ISO 8601 time (UTC if no offset)."""
    if value is None:
        return datetime.fromtimestamp(now.timestamp() + default_ttl, UTC)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 < value <= 100 * 365 * 86400:
            raise DialectError(400, "expiration must be a positive number of seconds")
        return datetime.fromtimestamp(now.timestamp() + value, UTC)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise DialectError(400, "expiration must be seconds or an ISO 8601 time") from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        if when <= now:
            raise DialectError(400, "expiration must be in the future")
        return when
    raise DialectError(400, "expiration must be seconds or an ISO 8601 time")


@routes.post(PATH)
async def create(request: web.Request) -> web.Response:
    principal = network_caller(request, Action.JOBMANAGER_CREATE)
    body = await json_body(request, allow_empty=True)
    if body is not None and not isinstance(body, dict):
        raise DialectError(400, "request body must be a JSON object")
    source = {**request.query, **(body or {})}  # the body wins
    if "identity" not in source:
        raise DialectError(400, 'identity is required: send JSON {"identity": …} or ?identity=…')
    identity = _identity(source["identity"])
    now = datetime.now(UTC)
    expires_at = _expires_at(
        source.get("expiration"), now, request.app[SETTINGS].jobmanager_default_ttl
    )
    created = await request.app[ISSUER].create_token(
        request.app[SETTINGS].default_tenant,
        identity,
        "jobmanager",
        minter=principal,
        expires_at=expires_at,
        created_by="jobmanager",
    )
    expiry = created.token.expires_at
    return json_response(
        {
            "token": created.value,
            "identity": identity,
            "expires_at": expiry.isoformat() if expiry else None,
        }
    )


@routes.delete(PATH)
async def revoke(request: web.Request) -> web.Response:
    network_caller(request, Action.JOBMANAGER_REVOKE)
    missing = [name for name in ("identity", "token") if name not in request.query]
    if missing:
        detail = [
            {"loc": ["query", n], "msg": "Field required", "type": "missing"} for n in missing
        ]
        raise DialectError(422, "missing query parameters", body={"detail": detail})
    identity = _identity(request.query["identity"])
    token = request.query["token"]
    tenant = request.app[SETTINGS].default_tenant
    record = await request.app[ISSUER].lookup(tenant, value=token) if token else None
    if (
        record is None
        or record.kind != "jobmanager"
        or record.subject != identity
        or record.revoked_at is not None
        or record.expired()
    ):
        raise DialectError(404, "Token not found")
    await request.app[AUTH].revoke(
        tenant, token_id=record.id, reason="revoked", actor=f"jobmanager:{identity}@{tenant}"
    )
    return json_response({"token": token, "identity": identity})
