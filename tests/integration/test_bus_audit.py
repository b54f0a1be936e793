"""The audit trail written beside every event, and its append-only guarantee."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from shared.bus.envelope import Envelope
from shared.bus.outbox import Cause, add_events
from shared.db import create_pool, unit_of_work
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
        async with unit_of_work(pool) as conn:
            await add_events(conn, [event])
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


async def test_events_are_queued_in_order_each_with_its_cause_all_or_none_without_a_transaction(
    tessera_env: dict[str, str],
) -> None:
    url = await bus_database(tessera_env, f"events_{uuid.uuid4().hex[:8]}")
    async with create_pool(url) as pool:
        causes = [Cause(f"req-{n}", f"actor-{n}") for n in range(5)]
        events = [
            (Envelope(type="thing.made", source="test", tenant="t", data={"n": n}), cause)
            for n, cause in enumerate(causes)
        ]
        bind_actor("bob@acme")
        bind_request_id("req-bare")
        bare = Envelope(type="thing.made", source="test", tenant="t", data={"n": 5})
        async with pool.acquire() as conn:
            await add_events(conn, [*events, bare])
            # One event fails (it was added before): the statement keeps none of them.
            again = [(Envelope(type="thing.made", source="test", tenant="t", data={}), causes[0])]
            with pytest.raises(asyncpg.UniqueViolationError):
                await add_events(conn, [*again, events[0]])
            outbox = await conn.fetch("SELECT event_id, request_id FROM outbox ORDER BY position")
            audit = await conn.fetch(
                "SELECT event_id, actor, request_id, data FROM audit_log ORDER BY position"
            )
        # In the order given, each with its own cause; an event alone has the request's.
        expected = [*((e, c) for e, c in events), (bare, Cause("req-bare", "bob@acme"))]
        assert [(r["event_id"], r["request_id"]) for r in outbox] == [
            (e.id, c.request_id) for e, c in expected
        ]
        assert [(r["event_id"], r["actor"], r["data"]) for r in audit] == [
            (e.id, c.actor, e.data) for e, c in expected
        ]
