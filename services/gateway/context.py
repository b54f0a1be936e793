"""Typed application keys of the gateway, in one place."""

from aiohttp import ClientSession, web

from services.gateway.auth import Authenticator
from services.gateway.backends import Backends
from services.gateway.settings import Settings
from shared.subscriber import Subscriber

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
SESSION: web.AppKey[ClientSession] = web.AppKey("session", ClientSession)
BACKENDS: web.AppKey[Backends] = web.AppKey("backends", Backends)
SUBSCRIBER: web.AppKey[Subscriber] = web.AppKey("subscriber", Subscriber)
AUTH: web.AppKey[Authenticator] = web.AppKey("auth", Authenticator)
