"""The subscriber's own queue: exclusive, auto-delete, bound to the events it follows.

Every replica of every subscribing service needs every event, so each process binds a queue of
its own that dies with its connection. Messages are not acknowledged: what a process misses
while away (or while the broker is down) it reads from the feed instead. The queue stays a
transient classic queue on a cluster too: when its node goes, the connection moves to another
node (``TESSERA_AMQP_URL`` lists them), declares a new one there and fills the gap from the feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from shared.bus.amqp import ConnectionState, connect_cluster, describe_amqp
from shared.settings import AmqpNames

log = structlog.get_logger("tessera.subscriber.queue")

OnMessage = Callable[[AbstractIncomingMessage], Awaitable[None]]


class EventQueue:
    """Connects in the background (retrying), then follows ``routing_keys``; robust to outages.

    ``on_lost`` runs when the connection drops, ``on_back`` once it is restored with the queue
    re-declared and consumed again.
    """

    def __init__(
        self,
        url: str | None,
        names: AmqpNames,
        name: str,
        routing_keys: tuple[str, ...],
        on_message: OnMessage,
        on_lost: Callable[[], None],
        on_back: Callable[[], None],
    ) -> None:
        self._url = url
        self._names = names
        self._name = name
        self._routing_keys = routing_keys
        self._on_message = on_message
        self._on_lost = on_lost
        self._on_back = on_back
        self._connection: AbstractRobustConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._state = ConnectionState(
            f"tessera-subscriber-{name}", describe_amqp(url) if url else "none"
        )

    @property
    def up(self) -> bool:
        """True while the queue is bound and consumed."""
        return self._state.up

    @up.setter
    def up(self, value: bool) -> None:
        self._state.up = value

    async def start(self, wait: float) -> None:
        """Start connecting; wait up to ``wait`` seconds for the queue to be consuming. Without
        a broker URL there is nothing to connect: events then come from polling the feed."""
        if self._url is None:
            return
        self._task = asyncio.create_task(self._connect_forever(), name=f"subscriber-{self._name}")
        # asyncio.wait, not wait_for(shield(...)): on 3.11 that can swallow a cancel of start().
        await asyncio.wait([self._task], timeout=wait)

    async def close(self) -> None:
        """Stop connecting and close the connection (the queue goes with it); safe to call twice."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None
        self.up = False

    async def _connect_forever(self) -> None:
        delay = 0.2
        warned = False
        while True:
            try:
                await self._bind()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Once per start-up, not per attempt: the feed is polled meanwhile.
                if not warned:
                    log.warning("broker unreachable, following the feed", error=type(exc).__name__)
                    warned = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _bind(self) -> None:
        assert self._url is not None  # start() connects nothing without a broker URL
        connection = await connect_cluster(
            self._url,
            reconnect_interval=1,
            client_properties={"connection_name": f"tessera-subscriber-{self._name}"},
        )
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=256)
            exchange = await channel.declare_exchange(
                self._names.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(
                self._names.queue(f"{self._name}.revocations.{uuid.uuid4().hex[:12]}"),
                exclusive=True,
                auto_delete=True,
            )
            for key in self._routing_keys:
                await queue.bind(exchange, key)
            await queue.consume(self._on_message, no_ack=True)
        except BaseException:
            await connection.close()
            raise
        # The state's callbacks run first: it logs the change and says whether we are up.
        self._state.watch(connection)
        connection.close_callbacks.add(self._lost)
        connection.reconnect_callbacks.add(self._back)
        self._connection = connection

    def _lost(self, connection: Any, *_args: Any) -> None:
        if not getattr(connection, "close_called", False):
            self._on_lost()

    def _back(self, *_args: Any) -> None:
        self._on_back()
