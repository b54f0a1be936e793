"""The revocation service application: wiring only, nothing connects until it starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from services.revocation import pruning
from services.revocation.consumers import consumers
from services.revocation.handlers import routes
from services.revocation.issuer import IssuerClient
from services.revocation.keys import ISSUER, SESSION, SETTINGS
from services.revocation.settings import Settings
from shared.http import base_app, internal_session
from shared.service import COMMON, POOL, broker, db_pool, event_consumers, outbox_relay


async def issuer_client(app: web.Application) -> AsyncIterator[None]:
    async with internal_session() as session:
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


def create_app(settings: Settings) -> web.Application:
    app = base_app("revocation", max_body_bytes=settings.common.limits.max_body_bytes)
    app[SETTINGS] = settings
    app[COMMON] = settings.common
    # Set up in this order, torn down in reverse: consumers stop before the pool closes.
    app.cleanup_ctx.extend(
        [
            db_pool,
            broker,
            issuer_client,
            outbox_relay,
            event_consumers(lambda a: consumers(lambda: a[ISSUER])),
            pruner,
        ]
    )
    app.add_routes(routes)
    return app
