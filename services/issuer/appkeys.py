"""Typed application keys of the issuer, in one place."""

from aiohttp import ClientSession, web

from services.issuer.settings import Settings
from services.issuer.tenants import TenantKeys
from services.issuer.writer import TokenWriter

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
KEYS: web.AppKey[TenantKeys] = web.AppKey("tenant_keys", TenantKeys)
SESSION: web.AppKey[ClientSession] = web.AppKey("session", ClientSession)
WRITER: web.AppKey[TokenWriter] = web.AppKey("token_writer", TokenWriter)
