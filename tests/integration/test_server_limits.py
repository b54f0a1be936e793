"""Over real sockets, in this process: the serving code every service runs (shared/connections.py)
closes connections whose request head is late, refuses connections past the cap at once, and
the body reader gets a body whole however it was split (issue 14)."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from shared.connections import listen, raise_file_limit
from shared.http import base_app, healthz, json_response, read_json_object
from shared.settings import ServerLimits

HEAD_TIMEOUT = 0.5


async def echo(request: web.Request) -> web.Response:
    return json_response(await read_json_object(request))


async def serve(limits: ServerLimits) -> AsyncIterator[int]:
    app = base_app("test", max_body_bytes=limits.max_body_bytes)
    app.router.add_post("/echo", echo)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    server = await listen(runner, "127.0.0.1", 0, limits, raise_file_limit())
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await runner.cleanup()


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async for p in serve(ServerLimits(head_timeout=HEAD_TIMEOUT, max_connections=50)):
        yield p


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the server closes the connection (EOF or reset) within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def request(port: int, parts: list[bytes], pause: float = 0.0) -> tuple[int, bytes]:
    """Send one request in the given TCP segments; (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for part in parts:
        writer.write(part)
        await writer.drain()
        if pause:
            await asyncio.sleep(pause)  # pacing only, so each part is its own segment
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split()[1])
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    body = await reader.readexactly(length)
    writer.close()
    return status, body


def post(body: bytes) -> bytes:
    return (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )


@pytest.mark.parametrize("split", ["whole", "first byte", "middle", "last byte", "many"])
async def test_a_body_in_any_number_of_segments_is_read_whole(port: int, split: str) -> None:
    body = json.dumps({"comment": "x" * 3000, "lifetime_seconds": 60}).encode()
    cuts = {
        "whole": [],
        "first byte": [1],
        "middle": [len(body) // 2],
        "last byte": [len(body) - 1],
        "many": list(range(100, len(body), 100)),
    }[split]
    edges = [0, *cuts, len(body)]
    parts = [post(body)] + [body[a:b] for a, b in itertools.pairwise(edges)]
    status, answer = await request(port, parts, pause=0.02)
    assert status == 200, answer
    assert json.loads(answer) == json.loads(body)


async def test_a_body_over_the_limit_gets_413() -> None:
    async for p in serve(ServerLimits(max_body_bytes=2048)):
        body = json.dumps({"c": "x" * 5000}).encode()
        status, answer = await request(p, [post(body), body])
        assert status == 413 and json.loads(answer)["error"] == "payload_too_large"
        # Chunked, so no Content-Length announces it: refused while reading.
        chunked = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunk = b"%x\r\n%s\r\n" % (len(body), body)
        status, answer = await request(p, [chunked, chunk, b"0\r\n\r\n"])
        assert status == 413


async def test_unfinished_heads_are_closed_by_the_deadline_and_others_are_served(port: int) -> None:
    started = time.monotonic()
    slow = []
    for n in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if n % 2:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")  # never finished
        slow.append((reader, writer))
    status, _ = await request(port, [b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"])
    assert status == 200
    results = await asyncio.gather(*(closed_within(r, HEAD_TIMEOUT + 5) for r, _ in slow))
    assert all(results)
    assert time.monotonic() - started < HEAD_TIMEOUT + 5
    for _, writer in slow:
        writer.close()


async def test_a_slow_second_head_on_a_kept_alive_connection_is_closed(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    await reader.readuntil(b"}")
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")  # the next head, never finished
    assert await closed_within(reader, HEAD_TIMEOUT + 5)
    writer.close()


async def test_a_connection_past_the_cap_is_refused_at_once_and_served_after() -> None:
    async for p in serve(ServerLimits(head_timeout=30, max_connections=5)):
        held = [await asyncio.open_connection("127.0.0.1", p) for _ in range(5)]
        await asyncio.sleep(0)  # let the server see them (not an outcome: polled below)
        deadline = time.monotonic() + 5
        while True:
            reader, writer = await asyncio.open_connection("127.0.0.1", p)
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            if answer.startswith(b"HTTP/1.1 503"):
                break
            assert time.monotonic() < deadline, answer
        assert b"Retry-After: 1" in answer
        for _, w in held:
            w.close()
        deadline = time.monotonic() + 5
        while True:  # the cap frees up as soon as the held connections are gone
            try:
                status, _ = await request(p, [b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"])
            except (asyncio.IncompleteReadError, ConnectionError):
                status = 503
            if status == 200:
                break
            assert time.monotonic() < deadline
