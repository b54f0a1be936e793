"""A TCP proxy a test can cut and restore, to make a real server unreachable for one client.

Other users of the same server are unaffected, which matters on a machine where several test
sessions share one RabbitMQ.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @classmethod
    def for_url(cls, url: str, default_port: int) -> TcpProxy:
        """A proxy to the server a URL names (``default_port`` when it names none)."""
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or default_port)

    def url(self, url: str) -> str:
        """``url`` (credentials and path kept) pointed at this proxy; once started."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{self.port}"))

    async def start(self) -> None:
        """Listen (again, on the same port once chosen) and forward every connection."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def open_connections(self) -> int:
        """Client connections forwarded right now."""
        return len(self._writers) // 2

    async def cut(self) -> None:
        """Stop listening and drop every open connection: the target looks down."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await splice((reader, writer), (up_reader, up_writer))
        self._writers.difference_update((writer, up_writer))


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def splice(client: Stream, upstream: Stream) -> None:
    """Copy bytes both ways until either side closes; then close both."""

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.transport.abort()

    await asyncio.gather(pipe(client[0], upstream[1]), pipe(upstream[0], client[1]))
