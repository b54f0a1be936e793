"""The keys service application: wiring only, nothing connects until it starts."""

from __future__ import annotations

from aiohttp import web

from services.keys.settings import Settings
from shared.http import base_app
from shared.service import COMMON, broker, db_pool, outbox_relay

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)


def create_app(settings: Settings) -> web.Application:
    app = base_app("keys")
    app[SETTINGS] = settings
    app[COMMON] = settings.common
    # Set up in this order, torn down in reverse.
    app.cleanup_ctx.extend([db_pool, broker, outbox_relay])
    return app
