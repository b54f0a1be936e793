"""Typed application keys of the gateway, in one place."""

from aiohttp import ClientSession, web

from services.gateway.auth import Authenticator
from services.gateway.settings import Settings
from services.gateway.tenants import Tenants
from shared.clients.issuer import IssuerClient
from shared.clients.keys import KeysClient
from shared.clients.revocation import RevocationClient
from shared.subscriber import Subscriber

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
SESSION: web.AppKey[ClientSession] = web.AppKey("session", ClientSession)
ISSUER: web.AppKey[IssuerClient] = web.AppKey("issuer", IssuerClient)
KEYS: web.AppKey[KeysClient] = web.AppKey("keys", KeysClient)
REVOCATION: web.AppKey[RevocationClient] = web.AppKey("revocation", RevocationClient)
TENANTS: web.AppKey[Tenants] = web.AppKey("tenants", Tenants)
SUBSCRIBER: web.AppKey[Subscriber] = web.AppKey("subscriber", Subscriber)
AUTH: web.AppKey[Authenticator] = web.AppKey("auth", Authenticator)
