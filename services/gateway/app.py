"""The gateway application: wiring only, nothing connects until it starts."""

from __future__ import annotations

import asyncio

from aiohttp import ClientSession, web

from services.gateway.settings import Settings
from shared.http import base_app, call_service, internal_client, json_response
from shared.service import BROKER, COMMON, broker

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
BACKENDS: web.AppKey[ClientSession] = web.AppKey("backends", ClientSession)


async def backends(app: web.Application):  # type: ignore[no-untyped-def]
    async for _ in internal_client(app, BACKENDS):
        yield


async def backend_status(request: web.Request) -> web.Response:
    """Operators' view: whether each backend service answers its health probe."""
    settings = request.app[SETTINGS]
    urls = {
        "issuer": settings.issuer_url,
        "keys": settings.keys_url,
        "revocation": settings.revocation_url,
    }

    async def probe(name: str, url: str) -> tuple[str, str]:
        try:
            status, _ = await call_service(
                request.app[BACKENDS], "GET", f"{url}/healthz", service=name
            )
        except Exception:
            return name, "unreachable"
        return name, "ok" if status == 200 else f"status {status}"

    results = await asyncio.gather(*(probe(n, u) for n, u in urls.items()))
    return json_response({"backends": dict(results), "broker": request.app[BROKER].connected})


def create_app(settings: Settings) -> web.Application:
    app = base_app("gateway")
    app[SETTINGS] = settings
    app[COMMON] = settings.common
    app.cleanup_ctx.extend([broker, backends])
    app.router.add_get("/internal/status", backend_status)
    return app
