"""A pooled connection whose server stopped being the primary is discarded, and requests meeting
it get a 503 with Retry-After, not a 500 (issue 18). A server turned read-only stands in for a
demoted primary here; tests/cluster/ promotes a real standby."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from shared.db import create_pool, describe_database
from shared.http import json_errors
from tests.integration.bus_support import bus_database
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(tessera_env: dict[str, str]) -> AsyncIterator[asyncpg.Pool]:
    url = await bus_database(tessera_env, f"demoted_{uuid.uuid4().hex[:8]}")
    async with create_pool(url, min_size=1, max_size=1) as pool:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE written (n int)")
        yield pool


async def test_connection_to_a_read_only_server_is_discarded_and_answered_503(
    pool: asyncpg.Pool,
) -> None:
    async def write(request: web.Request) -> web.Response:
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO written VALUES (1)")
        return web.json_response({})

    app = web.Application(middlewares=[json_errors])
    app.router.add_post("/write", write)
    async with TestClient(TestServer(app)) as client:
        async with pool.acquire() as conn:
            demoted_pid = conn.get_server_pid()
            # What a standby (or a demoted primary) answers to every write from now on.
            await conn.execute("SET SESSION default_transaction_read_only = on")

        response = await client.post("/write")
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert (await response.json())["error"] == "unavailable"

        # The pool's one connection is replaced by a new one, on which writes work again.
        async def replaced() -> bool:
            async with pool.acquire() as conn:
                return conn.get_server_pid() != demoted_pid  # type: ignore[no-any-return]

        await wait_for(replaced, what="the demoted connection replaced")
        assert (await client.post("/write")).status == 200


def test_a_multi_host_url_is_described_host_by_host_without_its_password() -> None:
    url = (
        "postgresql://tessera:pw@db-0:5432,db-1:5433/tessera_issuer?target_session_attrs=read-write"
    )
    assert describe_database(url) == "db-0:5432,db-1:5433/tessera_issuer"
