"""The keys service application: wiring only, nothing connects until it starts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from services.keys import service
from services.keys.appkeys import KEYRING, SETTINGS, SIGNER
from services.keys.crypto import KeyDecryptionError, Keyring
from services.keys.handlers import CALLERS, routes
from services.keys.settings import Settings
from services.keys.signer import Signer
from shared.http import base_app
from shared.service import COMMON, POOL, TLS, StartupError, broker, db_pool, outbox_relay
from shared.tls import ReloadingTls

log = structlog.get_logger("tessera.keys")


async def signer(app: web.Application) -> AsyncIterator[None]:
    app[SIGNER] = Signer(app[POOL], app[KEYRING])
    try:
        await app[SIGNER].refresh()
    except KeyDecryptionError as exc:
        # A wrong KEK must stop the service loudly, never let it run unable to sign.
        raise StartupError(str(exc)) from None
    yield


async def maintenance(app: web.Application) -> AsyncIterator[None]:
    """Promote due pending keys, run scheduled rotations and refresh the signing cache."""
    settings = app[SETTINGS]

    async def loop() -> None:
        while True:
            await asyncio.sleep(settings.maintenance_interval)
            try:
                await service.promote_due(app[POOL])
                await service.scheduled_rotations(
                    app[POOL], app[KEYRING], settings.rotation_period, settings.activation_delay
                )
                await app[SIGNER].refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("key maintenance failed, will retry", error=type(exc).__name__)

    task = asyncio.create_task(loop(), name="key-maintenance")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(settings: Settings) -> web.Application:
    app = base_app("keys", max_body_bytes=settings.common.limits.max_body_bytes, callers=CALLERS)
    app[SETTINGS] = settings
    app[COMMON] = settings.common
    app[TLS] = ReloadingTls(settings.common.tls)
    app[KEYRING] = Keyring(settings.keks)
    # Set up in this order, torn down in reverse.
    # The signer opens the keys first, so a wrong KEK stops start-up before anything else runs.
    app.cleanup_ctx.extend([db_pool, signer, broker, outbox_relay, maintenance])
    app.add_routes(routes)
    return app
