"""Typed application keys of the keys service, in one place."""

from aiohttp import web

from services.keys.crypto import Keyring
from services.keys.settings import Settings
from services.keys.signer import Signer

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
KEYRING: web.AppKey[Keyring] = web.AppKey("keyring", Keyring)
SIGNER: web.AppKey[Signer] = web.AppKey("signer", Signer)
