"""The gateway application: wiring only, nothing connects until it starts."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.gateway import databricks, jobmanager, lagrello, oauth, tapis
from services.gateway.appkeys import (
    AUTH,
    ISSUER,
    KEYS,
    REVOCATION,
    SESSION,
    SETTINGS,
    SUBSCRIBER,
    TENANTS,
)
from services.gateway.auth import Authenticator
from services.gateway.edge import AddressGuard, address_guard
from services.gateway.errors import VERSION, dialect_errors
from services.gateway.openapi import openapi
from services.gateway.ratelimit import Limits, RateLimiter
from services.gateway.settings import Settings
from services.gateway.tenants import Tenants
from shared.clients.base import client_session
from shared.clients.issuer import IssuerClient
from shared.clients.keys import KeysClient
from shared.clients.revocation import RevocationClient
from shared.http import ACTOR_FROM_HEADER, base_app, json_response
from shared.service import COMMON, TLS, StartupError
from shared.subscriber import FeedUnavailable, Subscriber, SubscriberConfig
from shared.tls import ReloadingTls


async def clients(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with client_session(app[TLS]) as session:
        app[SESSION] = session
        app[ISSUER] = IssuerClient(session, settings.issuer_url)
        app[KEYS] = KeysClient(session, settings.keys_url)
        app[REVOCATION] = RevocationClient(session, settings.revocation_url)
        app[TENANTS] = Tenants(
            app[KEYS], settings.tenant_cache_seconds, settings.unknown_tenant_cache_seconds
        )
        yield


async def subscriber(app: web.Application) -> AsyncIterator[None]:
    """The same subscriber library other services use: JWKS cache and revocation set."""
    settings = app[SETTINGS]
    config = SubscriberConfig(
        revocations_url=f"{settings.revocation_url}/internal/revocations",
        jwks_url_template=f"{settings.keys_url}/internal/tenants/{{tenant}}/jwks",
        amqp_url=settings.common.amqp_url,
        amqp_names=settings.common.amqp,
        name="gateway",
    )
    sub = Subscriber(config, app[SESSION])
    try:
        await sub.start()
    except FeedUnavailable as exc:
        await sub.close()
        raise StartupError(f"cannot read the revocation feed: {exc}") from None
    app[SUBSCRIBER] = sub
    limits = Limits(
        RateLimiter(settings.principal_rate, settings.principal_burst),
        RateLimiter(settings.tenant_rate, settings.tenant_burst),
    )
    app[AUTH] = Authenticator(
        app[ISSUER], app[REVOCATION], sub, settings.opaque_cache_seconds, limits
    )
    yield
    await sub.close()


async def openapi_document(_request: web.Request) -> web.Response:
    return json_response(openapi())


def create_app(settings: Settings) -> web.Application:
    app = base_app(
        "gateway",
        middlewares=[
            dialect_errors,
            address_guard(
                AddressGuard(settings.failure_rate, settings.failure_burst),
                settings.trusted_proxies,
            ),
        ],
        max_body_bytes=settings.common.limits.max_body_bytes,
    )
    app[ACTOR_FROM_HEADER] = False  # the actor is the authenticated principal, never a header
    app[SETTINGS] = settings
    app[COMMON] = settings.common
    # The gateway's own certificate, presented to the services behind it.
    app[TLS] = ReloadingTls(settings.common.tls)
    app[VERSION] = settings.common.version
    app.cleanup_ctx.extend([clients, subscriber])
    app.router.add_get("/openapi.json", openapi_document)
    for module in (tapis, jobmanager, lagrello, databricks, oauth):
        app.add_routes(module.routes)
    return app
