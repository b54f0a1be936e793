"""Least privilege on the internal plane: each internal endpoint names the callers it serves.

Each service has one table, ``{"METHOD /route": {identity, …}}``, keyed by aiohttp's canonical
route (``/internal/tenants/{tenant}/sign``). The caller is the identity of its verified client
certificate (``shared.tls.peer_identity``), never a header. A caller outside the table, or a
connection without a certificate, is answered 403 before the handler runs, and one audit line
says who was refused what; a refused call changes nothing. A route missing from the table is
served to nobody (a new endpoint is closed until someone names its callers).

The table also decides whose ``X-Tessera-Actor`` is believed: a Tessera service's (the gateway
names the principal it authenticated); the operator's calls are always the actor ``operator``.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from shared.errors import Forbidden
from shared.logging import ACTOR_HEADER, bind_actor
from shared.pki import OPERATOR as OPERATOR
from shared.pki import SERVICE_IDENTITIES
from shared.tls import peer_identity

log = structlog.get_logger("tessera.callers")

Callers = Mapping[str, frozenset[str]]
CALLERS: web.AppKey[Callers] = web.AppKey("callers", Mapping)
# The verified caller of the request being served.
CALLER: web.RequestKey[str] = web.RequestKey("tessera_caller", str)

GATEWAY, ISSUER, KEYS, REVOCATION = SERVICE_IDENTITIES


def route_key(request: web.Request) -> str | None:
    """The request's key in a :data:`CALLERS` table, ``"METHOD /canonical/route"``; None when no
    route matched (a 404 or 405)."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    return f"{request.method} {resource.canonical}"


def caller_of(request: web.Request) -> str:
    """The verified identity the middleware let through."""
    caller: str | None = request.get(CALLER)
    assert caller is not None, "served without the callers middleware"
    return caller


@web.middleware
async def internal_callers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse (403, audited) any caller the app's :data:`CALLERS` table does not name."""
    caller = peer_identity(request.transport)
    route = route_key(request)
    if route is None and caller is not None:
        return await handler(request)  # 404 / 405: nothing to serve, nothing to hide
    allowed = request.app[CALLERS].get(route or "", frozenset())
    if caller is None or caller not in allowed:
        log.warning(
            "caller refused",
            audit=True,
            caller=caller or "none",
            route=route or request.path,
        )
        raise Forbidden("this caller may not use this endpoint")
    request[CALLER] = caller
    if caller == OPERATOR:
        bind_actor(OPERATOR)
    else:
        bind_actor(request.headers.get(ACTOR_HEADER))
    return await handler(request)
