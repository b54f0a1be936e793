"""The audit trail written beside every event, and its append-only guarantee."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from shared.bus.envelope import Envelope
from shared.bus.outbox import add_event
from shared.db import create_pool
from shared.logging import bind_actor, bind_request_id
from tests.integration.bus_support import bus_database

pytestmark = pytest.mark.integration


async def test_every_event_is_audited_with_actor_and_request_id_and_cannot_be_rewritten(
    tessera_env: dict[str, str],
) -> None:
    url = await bus_database(tessera_env, f"audit_{uuid.uuid4().hex[:8]}")
    async with create_pool(url) as pool:
        bind_actor("alice@acme")
        bind_request_id("req-audit-1")
        event = Envelope(type="token.issued", source="issuer", tenant="acme", data={"kind": "x"})
        async with pool.acquire() as conn, conn.transaction():
            await add_event(conn, event)
        async with pool.acquire() as conn:
            row = await conn.fetchrow("SELECT * FROM audit_log")
            assert row["event_id"] == event.id
            assert (row["tenant"], row["action"], row["source"]) == (
                "acme",
                "token.issued",
                "issuer",
            )
            assert (row["actor"], row["request_id"]) == ("alice@acme", "req-audit-1")
            assert row["data"] == {"kind": "x"}
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute("UPDATE audit_log SET actor = 'mallory'")
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute("DELETE FROM audit_log")
            assert await conn.fetchval("SELECT actor FROM audit_log") == "alice@acme"
