"""The issuer service application: wiring only, nothing connects until it starts."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.issuer.appkeys import KEYS, SESSION, SETTINGS, WRITER
from services.issuer.events import HANDLERS
from services.issuer.handlers import CALLERS, routes
from services.issuer.settings import Settings
from services.issuer.tenants import TenantKeys
from services.issuer.writer import TokenWriter
from shared.clients.base import client_session
from shared.clients.keys import KeysClient
from shared.http import base_app
from shared.service import COMMON, POOL, TLS, broker, db_pool, event_consumers, outbox_relay
from shared.tls import ReloadingTls


async def clients(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with client_session(app[TLS]) as session:
        app[SESSION] = session
        keys = KeysClient(session, settings.keys_url)
        app[KEYS] = TenantKeys(keys, settings.tenant_cache_seconds)
        app[WRITER] = TokenWriter(app[POOL])
        yield


def create_app(settings: Settings) -> web.Application:
    app = base_app("issuer", max_body_bytes=settings.common.limits.max_body_bytes, callers=CALLERS)
    app[SETTINGS] = settings
    app[COMMON] = settings.common
    app[TLS] = ReloadingTls(settings.common.tls)
    # Set up in this order, torn down in reverse: consumers stop before the pool closes.
    app.cleanup_ctx.extend(
        [db_pool, clients, broker, outbox_relay, event_consumers(lambda _app: HANDLERS)]
    )
    app.add_routes(routes)
    return app
