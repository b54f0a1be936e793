"""The RabbitMQ connection a service keeps: connected in the background, restored after outages.

A service starts and serves requests while the broker is down; the outbox holds its events and
the relay publishes them once :class:`Broker` has reconnected.

``TESSERA_AMQP_URL`` may list the nodes of one RabbitMQ cluster, separated by commas
(issue 18): a connection is made to the first node that answers and, when that node goes
away, moves on to the next one in the list (round and round) instead of knocking on the dead
node's door forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, cast

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aio_pika.robust_connection import RobustConnection
from prometheus_client import Gauge
from yarl import URL

from shared.bus.batch_publish import (
    ConfirmsLost,
    Outgoing,
    UnsupportedAiormq,
    check_channel,
    publish_batch,
)
from shared.settings import AmqpNames

log = structlog.get_logger("tessera.amqp")


def amqp_nodes(url: str) -> list[str]:
    """The URLs in ``TESSERA_AMQP_URL``: one per cluster node, separated by commas (a comma in a
    password is written ``%2C``)."""
    return [part.strip() for part in url.split(",") if part.strip()]


def describe_amqp(url: str) -> str:
    """``host:port/vhost`` of each node of an AMQP URL list, for messages; never a password."""
    from urllib.parse import urlsplit

    described = []
    for node in amqp_nodes(url):
        parts = urlsplit(node)
        described.append(f"{parts.hostname}:{parts.port or 5672}{parts.path or '/'}")
    return ",".join(described)


class ClusterConnection(RobustConnection):
    """aio-pika's robust connection over the nodes of a cluster: each (re)connection attempt
    goes to the next node in the list, so losing one node moves the connection to another.
    Channels, queues, bindings and consumers are restored there by aio-pika as on a reconnect
    to the same node; a quorum queue is the same queue seen from any node."""

    def __init__(self, nodes: Sequence[str], start: int = 0, **kwargs: Any) -> None:
        self._nodes = [URL(node) for node in nodes]
        self._next = start
        super().__init__(self._nodes[start % len(self._nodes)], **kwargs)

    # aio-pika 10 makes every (re)connection attempt in this name-mangled method; it reads
    # ``self.url`` then. Choosing the node here covers the first attempt and every reconnect.
    async def _RobustConnection__connect_transport(self) -> None:
        self.url = self._nodes[self._next % len(self._nodes)]
        # The attempt after this one (after a failure, or once this connection is lost) goes to
        # the following node.
        self._next += 1
        await super()._RobustConnection__connect_transport()  # type: ignore[misc]

    @property
    def node(self) -> str:
        """The node in use (or last tried), without its password."""
        return describe_amqp(str(self.url))


async def connect_cluster(
    url: str, *, node_timeout: float = 5.0, **kwargs: Any
) -> AbstractRobustConnection:
    """A :class:`ClusterConnection` to the first node of ``url`` (a comma-separated list) that
    answers within ``node_timeout`` seconds; raises the last node's error when none does. ``kwargs``
    go to aio-pika's connection."""
    nodes = amqp_nodes(url)
    last: BaseException | None = None
    for start in range(len(nodes)):
        connection = ClusterConnection(nodes, start, **kwargs)
        try:
            await connection.connect(timeout=node_timeout)
            return connection
        except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
            last = exc
            with contextlib.suppress(Exception):
                await connection.close()
    assert last is not None, "TESSERA_AMQP_URL names no node"
    raise last


# Every durable queue Tessera declares is a quorum queue: replicated over the cluster's nodes, so
# losing a node loses neither the queue nor its messages (a classic queue lives on one node).
QUORUM_QUEUE: dict[str, Any] = {"x-queue-type": "quorum"}
# How long a publish waits for the broker's confirms before it counts as failed.
CONFIRM_TIMEOUT = 30.0
CONNECTED = Gauge(
    "tessera_broker_connected",
    "1 while this RabbitMQ connection is up, 0 while it is lost or not yet made",
    ["connection"],
)


class ConnectionState:
    """The up/down state of one robust connection, logged once per change: one warning when
    it is lost (however many reconnection attempts follow) and one line when it is back."""

    def __init__(self, name: str, broker: str) -> None:
        self.name = name
        self.broker = broker
        self.up = False
        CONNECTED.labels(name).set_function(lambda: 1.0 if self.up else 0.0)

    def watch(self, connection: AbstractRobustConnection) -> None:
        """Follow ``connection``, which has just connected."""
        self.up = True
        connection.close_callbacks.add(self._lost)
        connection.reconnect_callbacks.add(self._back)

    def _lost(self, connection: Any, exc: BaseException | None = None, *_: Any) -> None:
        if getattr(connection, "close_called", False):
            self.up = False  # our own close, at shutdown: nothing to report
            return
        if self.up:
            self.up = False
            reason = type(exc).__name__ if exc is not None else None
            log.warning("broker connection lost", broker=self.broker, error=reason)

    def _back(self, connection: Any = None, *_: Any) -> None:
        if not self.up:
            self.up = True
            node = _node(connection) if connection is not None else self.broker
            log.info("broker reconnected", broker=node)


def _node(connection: Any) -> str:
    """The node a connection uses, without its password."""
    return describe_amqp(str(getattr(connection, "url", "")))


class BrokerUnavailable(ConnectionError):
    """The broker is not connected right now."""


class Broker:
    """One robust connection and channel (with publisher confirms) and the declared topology."""

    def __init__(self, url: str, names: AmqpNames, *, connection_name: str = "tessera") -> None:
        self._url = url
        self.names = names
        self._connection_name = connection_name
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._ready = asyncio.Event()
        self._replacing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._state = ConnectionState(connection_name, describe_amqp(url))

    async def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        self._task = asyncio.create_task(self._connect_forever(), name="amqp-connect")

    async def _connect_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                connection = await connect_cluster(
                    self._url,
                    reconnect_interval=1,
                    client_properties={"connection_name": self._connection_name},
                )
                channel = await connection.channel(publisher_confirms=True)
                try:
                    check_channel(await channel.get_underlay_channel())
                except UnsupportedAiormq as exc:
                    # No retry mends the installed library: never ready, and say why.
                    log.error("events cannot be published", error=str(exc))
                    await connection.close()
                    return
                self._exchange = await declare_topology(channel, self.names)
                self._connection = connection
                self._channel = channel
                self._state.watch(connection)
                self._ready.set()
                log.info("broker connected", broker=_node(connection))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "broker unreachable, retrying",
                    broker=describe_amqp(self._url),
                    error=type(exc).__name__,
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    @property
    def connected(self) -> bool:
        """Whether the connection and the shared channel are open right now."""
        return (
            self._ready.is_set()
            and self._state.up
            and self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def wait_connected(self) -> None:
        """Return once the first connection (and its topology) is up."""
        await self._ready.wait()

    async def channel(self) -> AbstractRobustChannel:
        """The shared channel; waits for the first connection."""
        await self._ready.wait()
        assert self._channel is not None
        return self._channel

    def exchange(self) -> AbstractExchange:
        """The events exchange, or :class:`BrokerUnavailable` while disconnected."""
        if not self.connected or self._exchange is None:
            raise BrokerUnavailable("broker not connected")
        return self._exchange

    async def publish_confirmed(self, messages: Sequence[Outgoing]) -> None:
        """Publish ``messages`` to the events exchange in this order; return once RabbitMQ has
        confirmed every one. Raises if it refuses (nacks) any, if the channel closes first, or
        after :data:`CONFIRM_TIMEOUT` seconds; then any of them may have been published, or none.

        After a nack or a timeout the publishing channel is replaced by a new one: RabbitMQ
        nacks while a quorum queue elects a leader, and a channel left behind by it can go on
        refusing (or never confirm) after the election (issue 18); the caller retries on the
        new channel and consumers drop the duplicates.
        """
        try:
            await self._publish_confirmed(messages)
        except (aiormq.exceptions.DeliveryError, TimeoutError) as exc:
            await self._replace_channel(type(exc).__name__)
            raise

    async def _publish_confirmed(self, messages: Sequence[Outgoing]) -> None:
        """:meth:`publish_confirmed` on the current channel, in one write
        (:mod:`shared.bus.batch_publish`)."""
        exchange = self.exchange()  # BrokerUnavailable while disconnected
        if not messages:
            return
        assert self._channel is not None
        async with asyncio.timeout(CONFIRM_TIMEOUT):
            channel = cast(aiormq.Channel, await self._channel.get_underlay_channel())
            try:
                await publish_batch(channel, exchange.name, messages)
            except ConfirmsLost as exc:
                # The relay must retry, not stop.
                raise BrokerUnavailable(str(exc)) from None

    async def _replace_channel(self, reason: str) -> None:
        """Open a new publishing channel, make it current, then close the old one (which fails
        the confirms still pending on it)."""
        old, connection = self._channel, self._connection
        if old is None or connection is None:
            return
        async with self._replacing:
            if self._channel is not old:
                return  # a concurrent publish replaced it already
            try:
                channel = await connection.channel(publisher_confirms=True)
                exchange = await declare_topology(channel, self.names)
            except Exception as exc:
                # The connection is down: its robust reconnect restores the old channel.
                log.warning("publishing channel not replaced", error=type(exc).__name__)
                return
            self._channel, self._exchange = channel, exchange
            log.warning("publishing channel replaced", reason=reason, broker=_node(connection))
        with contextlib.suppress(Exception):
            await old.close()

    async def new_channel(self, **kwargs: Any) -> AbstractRobustChannel:
        """A further channel on the same connection (consumers get their own)."""
        await self._ready.wait()
        assert self._connection is not None
        channel: AbstractRobustChannel = await self._connection.channel(**kwargs)
        return channel

    async def check(self) -> None:
        """Readiness: raise unless connected."""
        if not self.connected:
            raise BrokerUnavailable("broker not connected")

    async def close(self) -> None:
        """Stop reconnecting and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            await self._connection.close()


async def declare_topology(
    channel: aio_pika.abc.AbstractChannel, names: AmqpNames
) -> AbstractExchange:
    """Declare the events exchange, the dead-letter exchange and its queue; return the former."""
    exchange = await channel.declare_exchange(
        names.exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    dlx = await channel.declare_exchange(
        names.dead_letter_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    dead = await channel.declare_queue(
        names.dead_letter_queue, durable=True, arguments=names.durable_arguments()
    )
    await dead.bind(dlx, "#")
    return exchange


async def connect_once(url: str) -> None:
    """Open and close a connection to the first node that answers: raises if none can be
    reached (used by checks)."""
    connection = await connect_cluster(url, node_timeout=5.0)
    await connection.close()
