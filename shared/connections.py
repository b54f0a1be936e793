"""Listening with limits on connections: a deadline for each request head, an idle timeout,
a cap on open connections, and a file-descriptor limit raised to make room for them.

aiohttp has an idle keep-alive timeout but no deadline for a request head, so a client that
opens a connection and sends half a head (or nothing) kept it for good, and a thousand such
sockets used up the gateway's file descriptors (issue 14). Here each connection must deliver a
whole head within ``head_timeout`` of opening (and, on a kept-alive connection, of the next
head's first byte); past the cap a new connection gets a 503 and is closed at once, so a
client over it is refused quickly instead of waiting in the accept queue.
"""

from __future__ import annotations

import asyncio
import resource
import ssl
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from shared.settings import ServerLimits

log = structlog.get_logger("tessera.connections")

# Descriptors kept for everything but client connections: the database pool, internal HTTP
# clients, the broker, log files.
RESERVED_DESCRIPTORS = 256
# What the soft limit is raised to when the hard limit is unlimited.
UNLIMITED_TARGET = 1 << 20
_REFUSAL_BODY = b'{"error":"unavailable","message":"too many open connections"}'
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: %d\r\n\r\n" % len(_REFUSAL_BODY)
) + _REFUSAL_BODY


def raise_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit where allowed; the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the file limit", soft=soft, hard=hard, error=str(exc))
    return UNLIMITED_TARGET if soft == resource.RLIM_INFINITY else soft


def connection_cap(configured: int, file_limit: int) -> int:
    """The open-connection cap: the configured one (0: none), never more than the file limit
    leaves after the reserve."""
    room = max(1, file_limit - RESERVED_DESCRIPTORS)
    return min(configured, room) if configured > 0 else room


@dataclass
class ConnectionCount:
    """A listener's connections: open now, and refused over the cap since it started."""

    open: int = 0
    refused: int = 0


class HeadDeadlineHandler(web.RequestHandler):
    """aiohttp's request handler, closing a connection whose request head is not complete
    ``head_timeout`` seconds after the connection opened or after the head's first byte."""

    def __init__(
        self, manager: web.Server, *, head_timeout: float, count: ConnectionCount, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._count = count
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Count the connection and start its head deadline."""
        self._count.open += 1
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        """Uncount the connection and drop its head deadline."""
        self._count.open -= 1
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed aiohttp; a completed head lifts the deadline, the first byte of the next arms it."""
        # _request_count (aiohttp's own, per connection) grows when a whole head is parsed.
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._cancel_head_timer()
        elif self._head_timer is None and self._waiter is not None and not self._waiter.done():
            # Idle and waiting for a message: these bytes start the next head.
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        if self._head_timeout > 0:
            self._head_timer = self._loop.call_later(
                self._head_timeout, self._head_overdue, self._request_count
            )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self, armed_at: int) -> None:
        self._head_timer = None
        if self._request_count == armed_at:
            self.force_close()


class Refusal(asyncio.Protocol):
    """A connection over the cap: a 503 and closed, without reading the request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Write the 503 and close, reading nothing."""
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(REFUSAL)
        transport.close()


class LimitedProtocolFactory:
    """The listening socket's protocol factory: a :class:`HeadDeadlineHandler` per connection
    up to ``cap`` open ones, a :class:`Refusal` past it."""

    def __init__(self, server: web.Server, limits: ServerLimits, cap: int) -> None:
        self.server = server
        self.limits = limits
        self.cap = cap
        self.count = ConnectionCount()
        self._loop = asyncio.get_running_loop()

    def __call__(self) -> asyncio.Protocol:
        if self.count.open >= self.cap:
            self.count.refused += 1
            return Refusal()
        return HeadDeadlineHandler(
            self.server,
            loop=self._loop,
            head_timeout=self.limits.head_timeout,
            count=self.count,
            keepalive_timeout=self.limits.keepalive_timeout,
            access_log=None,
        )


async def listen(
    runner: web.AppRunner,
    host: str,
    port: int,
    limits: ServerLimits,
    file_limit: int,
    ssl_context: ssl.SSLContext | None = None,
) -> asyncio.Server:
    """Listen on ``host:port`` for ``runner``'s application, with ``limits`` (and TLS when
    ``ssl_context`` is given: the handshake gets the head deadline too)."""
    assert runner.server is not None, "runner.setup() first"
    cap = connection_cap(limits.max_connections, file_limit)
    factory = LimitedProtocolFactory(runner.server, limits, cap)
    tls: dict[str, Any] = {}
    if ssl_context is not None:
        tls = {"ssl": ssl_context, "ssl_handshake_timeout": limits.head_timeout or 60.0}
    server = await asyncio.get_running_loop().create_server(
        factory, host, port, reuse_address=True, backlog=1024, **tls
    )
    log.info(
        "connection limits",
        max_connections=cap,
        file_limit=file_limit,
        head_timeout=limits.head_timeout,
        keepalive_timeout=limits.keepalive_timeout,
    )
    return server
