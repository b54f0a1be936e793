"""The revocation service application: wiring only, nothing connects until it starts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import Gauge

from services.revocation import pruning, store
from services.revocation.appkeys import ISSUER, SESSION, SETTINGS
from services.revocation.events import consumers
from services.revocation.handlers import CALLERS, routes
from services.revocation.settings import Settings
from shared.clients.base import client_session
from shared.clients.issuer import IssuerClient
from shared.http import base_app
from shared.service import COMMON, POOL, TLS, broker, db_pool, event_consumers, outbox_relay
from shared.tls import ReloadingTls


async def issuer_client(app: web.Application) -> AsyncIterator[None]:
    async with client_session(app[TLS]) as session:
        app[SESSION] = session
        app[ISSUER] = IssuerClient(session, app[SETTINGS].issuer_url)
        yield


async def pruner(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    task = asyncio.create_task(
        pruning.run_pruner(app[POOL], settings.prune_interval, settings.prune_grace),
        name="revocation-pruner",
    )
    yield
    await pruning.stop(task)


# The other half of the subscriber lag: tessera_revocation_seq - tessera_subscriber_seq.
SEQUENCE = Gauge(
    "tessera_revocation_seq", "The latest committed revocation seq (refreshed every second)"
)
SEQUENCE_REFRESH = 1.0


async def sequence_gauge(app: web.Application) -> AsyncIterator[None]:
    async def refresh() -> None:
        while True:
            with contextlib.suppress(Exception):  # the database away: keep the last value
                async with app[POOL].acquire() as conn:
                    SEQUENCE.set(await store.fetch_current_seq(conn))
            await asyncio.sleep(SEQUENCE_REFRESH)

    task = asyncio.create_task(refresh(), name="revocation-seq-gauge")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(settings: Settings) -> web.Application:
    app = base_app(
        "revocation", max_body_bytes=settings.common.limits.max_body_bytes, callers=CALLERS
    )
    app[SETTINGS] = settings
    app[COMMON] = settings.common
    app[TLS] = ReloadingTls(settings.common.tls)
    # Set up in this order, torn down in reverse: consumers stop before the pool closes.
    app.cleanup_ctx.extend(
        [
            db_pool,
            broker,
            issuer_client,
            outbox_relay,
            event_consumers(lambda a: consumers(lambda: a[ISSUER])),
            pruner,
            sequence_gauge,
        ]
    )
    app.add_routes(routes)
    return app
