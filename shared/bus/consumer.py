"""Consuming events: one durable (quorum) queue per consumer, ack after the local commit.

Each handler runs in a transaction that also records ``(consumer, event_id)`` in
``processed_events``; a redelivered duplicate finds its row and is acknowledged without running
again. A message that is not a valid envelope is dead-lettered at once; one whose handler fails
is retried once and then dead-lettered to ``tessera.dlx``, so nothing loops forever. A database
outage is not the message's fault: it is requeued after a pause, never dead-lettered; nor is a
dependency a handler says is away (:class:`RetryLater`).

No network call is made while the transaction is open: a handler that needs something from
another service first is a :class:`Resolving` one, whose ``resolve`` step runs before the
transaction (holding no connection) and hands its result to ``apply``, which runs in it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aio_pika
import asyncpg
import structlog
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue
from prometheus_client import Counter

from shared.bus.amqp import Broker
from shared.bus.envelope import Envelope, EnvelopeError
from shared.db import DATABASE_UNAVAILABLE, unit_of_work
from shared.logging import REQUEST_ID_HEADER, accept_request_id, bind_request_id

log = structlog.get_logger("tessera.consumer")

R = TypeVar("R")
Apply = Callable[[asyncpg.Connection, Envelope], Awaitable[None]]


@dataclass(frozen=True)
class Resolving(Generic[R]):
    """A handler that needs something from elsewhere first: ``resolve(envelope)`` runs before
    the transaction opens, ``apply(conn, envelope, resolved)`` in it (a duplicate is resolved,
    then skipped). ``resolve`` raises :class:`RetryLater` while what it asks is away."""

    resolve: Callable[[Envelope], Awaitable[R]]
    apply: Callable[[asyncpg.Connection, Envelope, R], Awaitable[None]]


Handler = Apply | Resolving[Any]


class RetryLater(Exception):
    """What a handler needs is unavailable for now (another service is down or answers 503):
    the event is requeued after a pause and never dead-lettered, as in a database outage."""


CONSUMED = Counter(
    "tessera_events_consumed_total", "Events handled by consumers", ["consumer", "outcome"]
)
# Requeued after a pause, never dead-lettered: not the message's fault.
_TRANSIENT: tuple[type[BaseException], ...] = (*DATABASE_UNAVAILABLE, RetryLater)
# How long a requeued event waits first, so an outage is not a busy loop.
REQUEUE_PAUSE = 1.0
# How long a starting consumer drains the classic queue of before quorum queues.
ADOPTION_TIMEOUT = 60.0


class Consumer:
    """A durable queue named after the consumer, bound to the routing keys it handles."""

    def __init__(
        self,
        broker: Broker,
        pool: asyncpg.Pool,
        consumer: str,
        handlers: Mapping[str, Handler],
        *,
        prefetch: int = 64,
    ) -> None:
        self._broker = broker
        self._pool = pool
        self.name = consumer
        self._handlers = dict(handlers)
        self._prefetch = prefetch
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._adopting: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Declare and start consuming once the broker is connected (in the background)."""
        self._task = asyncio.create_task(self._declare_and_consume(), name=f"consumer-{self.name}")

    async def started(self) -> None:
        """Wait until the queue is declared, bound and being consumed."""
        assert self._task is not None
        await asyncio.shield(self._task)

    async def _declare_and_consume(self) -> None:
        names = self._broker.names
        channel = await self._broker.new_channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        exchange = await channel.get_exchange(names.exchange)
        queue = await channel.declare_queue(
            names.durable_queue(self.name),
            durable=True,
            arguments={
                **names.durable_arguments(),
                "x-dead-letter-exchange": names.dead_letter_exchange,
            },
        )
        for routing_key in self._handlers:
            await queue.bind(exchange, routing_key)
        self._queue = queue
        self._tag = await queue.consume(self._on_message)
        log.info("consuming", consumer=self.name, queue=queue.name, keys=sorted(self._handlers))
        self._adopting = asyncio.create_task(
            self._adopt_classic_queue(exchange), name=f"adopt-{self.name}"
        )

    async def _adopt_classic_queue(self, exchange: AbstractExchange) -> None:
        """Upgrade from the classic queue Tessera declared before quorum queues (the same name
        without ``.quorum``; RabbitMQ cannot turn it into a quorum queue in place): unbind it so
        new events reach only the quorum queue, apply what it still holds (events published
        while no replica ran; duplicates of the quorum queue's are skipped by event id), then
        delete it once empty. Best effort: what is left is logged and retried at the next start.
        """
        channel = await self._broker.new_channel()
        try:
            try:
                old = await channel.declare_queue(self._broker.names.queue(self.name), passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return  # no classic queue: a fresh install, or adopted already
            for routing_key in self._handlers:
                await old.unbind(exchange, routing_key)
            await channel.set_qos(prefetch_count=self._prefetch)
            applying = 0

            async def apply(message: AbstractIncomingMessage) -> None:
                nonlocal applying
                applying += 1
                try:
                    await self._on_message(message)
                finally:
                    applying -= 1

            tag = await old.consume(apply)
            async with asyncio.timeout(ADOPTION_TIMEOUT):
                while True:
                    # old.declare(), not channel.declare_queue(): the robust channel answers
                    # that from its cache, with the count of the first declaration.
                    left = await old.declare()
                    if not left.message_count and not applying:
                        break
                    await asyncio.sleep(0.2)
            await old.cancel(tag)
            await channel.queue_delete(old.name, if_empty=True)
            log.info("classic queue adopted and deleted", consumer=self.name, queue=old.name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "classic queue not adopted yet", consumer=self.name, error=type(exc).__name__
            )
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._process(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        headers = message.headers or {}
        raw_id = headers.get(REQUEST_ID_HEADER)
        bind_request_id(accept_request_id(raw_id if isinstance(raw_id, str) else None))
        try:
            envelope = Envelope.from_json(message.body)
        except EnvelopeError as exc:
            log.warning("unparseable event dead-lettered", consumer=self.name, reason=str(exc))
            CONSUMED.labels(self.name, "dead_lettered").inc()
            await message.reject(requeue=False)
            return
        handler = self._handlers.get(envelope.routing_key)
        if handler is None:
            await message.ack()
            return
        try:
            applied = await self._apply(handler, envelope)
        except _TRANSIENT as exc:
            if isinstance(exc, RetryLater):
                log.warning("event requeued: retry later", consumer=self.name, reason=str(exc))
            else:
                log.warning("event requeued: database unavailable", error=type(exc).__name__)
            await asyncio.sleep(REQUEUE_PAUSE)
            await message.nack(requeue=True)
            return
        except Exception:
            if message.redelivered:
                log.exception("event failed again, dead-lettered", event_id=str(envelope.id))
                CONSUMED.labels(self.name, "dead_lettered").inc()
                await message.reject(requeue=False)
            else:
                log.warning("event failed, retrying once", event_id=str(envelope.id))
                await message.nack(requeue=True)
            return
        CONSUMED.labels(self.name, "applied" if applied else "duplicate").inc()
        await message.ack()

    async def _apply(self, handler: Handler, envelope: Envelope) -> bool:
        resolved: Any = None
        if isinstance(handler, Resolving):
            # Claim, commit, then call is the rule; here: call, then claim and commit. Nothing
            # waits on the network while holding a connection and a transaction.
            resolved = await handler.resolve(envelope)
        async with unit_of_work(self._pool) as conn:
            first = await conn.fetchval(
                """INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)
                   ON CONFLICT DO NOTHING RETURNING true""",
                self.name,
                envelope.id,
            )
            if not first:
                return False
            if isinstance(handler, Resolving):
                await handler.apply(conn, envelope, resolved)
            else:
                await handler(conn, envelope)
            return True

    async def close(self) -> None:
        """Stop fetching, then let in-flight messages finish."""
        for task in (self._task, self._adopting):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=10)
