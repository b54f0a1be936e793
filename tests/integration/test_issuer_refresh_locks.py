"""No network call while a transaction is open (issue 17): a refresh signs its new pair
before it locks and claims the refresh token's row."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from services.issuer import service
from services.issuer.settings import Settings as IssuerSettings
from services.issuer.tenants import TenantKeys
from services.issuer.writer import TokenWriter
from shared.clients.base import client_session
from shared.clients.keys import KeysClient, Signed
from shared.db import create_pool
from tests.harness import running_stack as running_services
from tests.integration.test_issuer_core import issue_pair
from tests.tls import tls_for

pytestmark = pytest.mark.integration


class HeldKeys(TenantKeys):
    """The issuer's real signer, held at the door until the test lets it through."""

    def __init__(self, keys: KeysClient) -> None:
        super().__init__(keys, 60)
        self.waiting = asyncio.Event()
        self.go = asyncio.Event()

    async def sign(self, tenant: str, claim_sets: list[dict[str, Any]]) -> Signed:
        self.waiting.set()
        await self.go.wait()
        return await super().sign(tenant, claim_sets)


async def test_a_refresh_holds_no_lock_or_transaction_while_its_pair_is_signed(
    tessera_env: dict[str, str],
) -> None:
    async with running_services(tessera_env) as s:
        tenant = await s.tenant()
        status, pair = await issue_pair(s, tenant, "cy")
        assert status == 200, pair
        refresh = pair["refresh_token"]["refresh_token"]
        jti = pair["refresh_token"]["jti"]
        settings = IssuerSettings.from_env(s.env)
        async with (
            create_pool(s.database_url("issuer"), min_size=1, max_size=2) as pool,
            client_session(tls_for(s.env, "issuer")) as session,
        ):
            keys = HeldKeys(KeysClient(session, s.urls["keys"]))
            refreshing = asyncio.create_task(
                service.refresh(
                    pool, TokenWriter(pool), keys, settings.pepper, refresh, grace_seconds=10
                )
            )
            try:
                await asyncio.wait_for(keys.waiting.wait(), 10)
                # While it waits for the keys service: no connection of its pool is taken ...
                in_use = pool.get_size() - pool.get_idle_size()
                # ... and the token's row can be locked by anyone at once.
                conn = await asyncpg.connect(s.database_url("issuer"))
                try:
                    async with conn.transaction():
                        locked = await conn.fetchval(
                            "SELECT id FROM tokens WHERE id = $1::uuid FOR UPDATE NOWAIT", jti
                        )
                finally:
                    await conn.close()
            finally:
                keys.go.set()  # whatever happened above, let the refresh end
                renewed = await asyncio.wait_for(refreshing, 10)
            assert in_use == 0
            assert str(locked) == jti
        assert renewed["refresh_token"]["refresh_token"] != refresh
        # The pair it returned is the one recorded: refreshing with it works.
        status, _ = await s.call(
            "POST",
            "issuer",
            "/internal/jwt/refresh",
            json={"refresh_token": renewed["refresh_token"]["refresh_token"]},
        )
        assert status == 200
