"""The typed application keys of the revocation service, kept in one place."""

from __future__ import annotations

from aiohttp import ClientSession, web

from services.revocation.settings import Settings
from shared.clients.issuer import IssuerClient

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
SESSION: web.AppKey[ClientSession] = web.AppKey("session", ClientSession)
ISSUER: web.AppKey[IssuerClient] = web.AppKey("issuer", IssuerClient)
