"""The issuer's group-commit statement: new tokens and their events, one statement, atomic."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from services.cli.migrate import migration_components
from services.issuer import store
from services.issuer.events import token_issued
from services.issuer.writer import stored_row
from shared.bus.outbox import Cause, add_events, event_values
from shared.db import create_pool, migrate

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(tessera_env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    base = urlsplit(tessera_env["TESSERA_DATABASE_URL"])
    name = f"{tessera_env['TESSERA_DATABASE_PREFIX']}_issuer_store_{uuid.uuid4().hex[:8]}"
    url = urlunsplit(base._replace(path=f"/{name}"))
    await migrate(url, migration_components("issuer"))
    async with create_pool(url) as pool:
        yield pool


def _token(subject: str = "ann") -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": uuid.uuid4(),
        "tenant": "t",
        "subject": subject,
        "kind": "opaque",
        "permissions": ["READ"],
        "created_at": now,
        "expires_at": now + timedelta(hours=1),
        "secret_hash": uuid.uuid4().bytes,
    }


async def _events(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Each event's outbox row joined with its audit row, in outbox order; ids left out."""
    rows = await conn.fetch(
        """SELECT o.routing_key, o.body, o.request_id, o.created_at,
                  a.occurred_at, a.tenant, a.action, a.source, a.actor, a.request_id AS audited,
                  a.data
           FROM outbox o JOIN audit_log a USING (event_id) ORDER BY o.position"""
    )
    events = []
    for row in rows:
        event = dict(row)
        event["body"] = {k: v for k, v in json.loads(bytes(row["body"])).items() if k != "id"}
        events.append(event)
    return events


async def test_the_group_commit_records_each_event_as_add_events_does(pool: asyncpg.Pool) -> None:
    cause = Cause("req-gc", "alice@t")
    token = _token()
    event = token_issued(stored_row(token))
    async with pool.acquire() as conn:
        await store.insert_tokens(conn, [token], [event_values(event, cause)])
        by_store = await _events(conn)
        await conn.execute("DELETE FROM outbox")
        await add_events(conn, [(replace(event, id=uuid.uuid4()), cause)])
        by_outbox = await _events(conn)
        assert await conn.fetchval("SELECT count(*) FROM tokens") == 1
    assert len(by_store) == 1
    assert by_store == by_outbox


async def test_tokens_and_their_events_commit_together_or_not_at_all_without_a_transaction(
    pool: asyncpg.Pool,
) -> None:
    causes = [Cause(f"req-{n}", f"actor-{n}") for n in range(3)]
    tokens = [_token(f"u{n}") for n in range(3)]
    events = [token_issued(stored_row(token)) for token in tokens]
    async with pool.acquire() as conn:
        await store.insert_tokens(
            conn, tokens, [event_values(e, c) for e, c in zip(events, causes, strict=True)]
        )
        # A token fails (it exists): its events are not kept.
        fresh = token_issued(stored_row(_token()))
        with pytest.raises(asyncpg.UniqueViolationError):
            await store.insert_tokens(conn, [tokens[0]], [event_values(fresh, causes[0])])
        # An event fails (it was queued before): its token is not kept either.
        with pytest.raises(asyncpg.UniqueViolationError):
            await store.insert_tokens(conn, [_token("late")], [event_values(events[0], causes[0])])
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM tokens") == 3
        outbox = await conn.fetch("SELECT event_id, request_id FROM outbox ORDER BY position")
        audit = await conn.fetch("SELECT event_id, actor FROM audit_log ORDER BY position")
    # In the order given, each with its own cause.
    assert [(r["event_id"], r["request_id"]) for r in outbox] == [
        (e.id, c.request_id) for e, c in zip(events, causes, strict=True)
    ]
    assert [(r["event_id"], r["actor"]) for r in audit] == [
        (e.id, c.actor) for e, c in zip(events, causes, strict=True)
    ]
