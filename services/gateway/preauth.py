"""The authenticator behind the gateway's pre-authentication limit (services/gateway/edge.py).

Every credential check first asks whether the client's address may still fail, and every
refused credential counts against it, so a flood of random tokens or of JWTs naming random
tenants costs a few backend calls per address, then none.
"""

from __future__ import annotations

from typing import Any

from services.gateway import edge
from services.gateway.auth import Authenticator
from services.gateway.principal import Principal
from shared.errors import Unauthenticated


class GuardedAuthenticator(Authenticator):
    async def authenticate(self, token: str) -> Principal:
        edge.admit()
        try:
            return await super().authenticate(token)
        except Unauthenticated:
            edge.charge()
            raise

    async def verify_jwt(self, token: str) -> dict[str, Any]:
        edge.admit()
        try:
            return await super().verify_jwt(token)
        except Unauthenticated:
            edge.charge()
            raise
