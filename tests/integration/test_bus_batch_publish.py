"""The batched publish on aiormq's channel, against a real RabbitMQ."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import aiormq
import pytest
from pamqp import commands as spec

from shared.bus.amqp import declare_topology
from shared.bus.batch_publish import (
    Outgoing,
    UnsupportedAiormq,
    check_channel,
    publish_batch,
)
from tests.integration.bus_support import private_names

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    """A confirm-mode channel (aiormq's, under aio-pika), an exchange and a queue bound to
    ``test.#`` on it, and an observer's channel to read the queue."""

    channel: aiormq.Channel
    exchange: str
    queue: aio_pika.abc.AbstractQueue


@pytest.fixture
async def rig(tessera_env: dict[str, str]) -> AsyncIterator[Rig]:
    connection = await aio_pika.connect(tessera_env["TESSERA_AMQP_URL"])
    try:
        observer = await connection.channel()
        exchange = await declare_topology(observer, private_names(tessera_env))
        queue = await observer.declare_queue(exclusive=True)
        await queue.bind(exchange, "test.#")
        publishing = await connection.channel(publisher_confirms=True)
        channel = await publishing.get_underlay_channel()
        assert isinstance(channel, aiormq.Channel)
        yield Rig(channel, exchange.name, queue)
    finally:
        await connection.close()


def _message(n: int, body: bytes = b"{}", routing_key: str = "test.happened.v1") -> Outgoing:
    return Outgoing(
        routing_key,
        body,
        spec.Basic.Properties(
            content_type="application/json",
            message_id=f"m{n}",
            message_type="test.happened",
            headers={"x-request-id": f"r{n}"},
            delivery_mode=2,
        ),
    )


async def _received(queue: aio_pika.abc.AbstractQueue, count: int) -> list[aio_pika.Message]:
    got = []
    for _ in range(count):
        message = await queue.get(timeout=5)
        await message.ack()
        got.append(message)
    assert await queue.get(fail=False) is None
    return got


async def test_a_real_confirm_channel_passes_the_check_and_others_do_not(
    tessera_env: dict[str, str], rig: Rig
) -> None:
    check_channel(rig.channel)
    connection = await aio_pika.connect(tessera_env["TESSERA_AMQP_URL"])
    try:
        plain = await (await connection.channel(publisher_confirms=False)).get_underlay_channel()
        with pytest.raises(UnsupportedAiormq, match="publisher-confirms"):
            check_channel(plain)
    finally:
        await connection.close()
    with pytest.raises(UnsupportedAiormq, match=r"not an aiormq\.Channel"):
        check_channel(object())


async def test_a_batch_arrives_in_order_with_its_properties_and_bodies_over_a_frame(
    rig: Rig,
) -> None:
    # The second body is larger than a frame (128 KiB by default): it goes in pieces.
    bodies = [b"{}", b'"' + b"x" * 300_000 + b'"', b""]
    await publish_batch(rig.channel, rig.exchange, [_message(n, b) for n, b in enumerate(bodies)])
    await publish_batch(rig.channel, rig.exchange, [])  # nothing to send is not an error
    # Not mandatory: a message no queue is bound for is confirmed, not returned.
    await publish_batch(rig.channel, rig.exchange, [_message(9, routing_key="nobody.v1")])
    received = await _received(rig.queue, len(bodies))
    assert [m.body for m in received] == bodies
    assert [m.message_id for m in received] == ["m0", "m1", "m2"]
    assert [m.headers for m in received] == [{"x-request-id": f"r{n}"} for n in range(3)]
    assert rig.channel.delivery_tag == 4 and not rig.channel.confirmations


async def test_a_batch_that_cannot_be_written_gives_its_delivery_tags_back(rig: Rig) -> None:
    await publish_batch(rig.channel, rig.exchange, [_message(1)])
    # A message id longer than AMQP allows cannot be encoded: nothing reaches the broker.
    unwritable = Outgoing("test.happened.v1", b"{}", spec.Basic.Properties(message_id="m" * 300))
    with pytest.raises(TypeError, match="255"):
        await publish_batch(rig.channel, rig.exchange, [_message(2), unwritable, _message(3)])
    assert rig.channel.delivery_tag == 1 and not rig.channel.confirmations
    # The channel's numbering is still the broker's: the next batch is confirmed (with the
    # tags of the failed one, which RabbitMQ never saw), promptly.
    async with asyncio.timeout(10):
        await publish_batch(rig.channel, rig.exchange, [_message(4), _message(5)])
    assert [m.message_id for m in await _received(rig.queue, 3)] == ["m1", "m4", "m5"]
    with pytest.raises(ValueError, match="routing key"):
        await publish_batch(rig.channel, rig.exchange, [_message(6, routing_key="k" * 256)])
    assert rig.channel.delivery_tag == 3


async def test_a_refused_message_fails_the_batch_and_later_batches_are_confirmed(
    rig: Rig, tessera_env: dict[str, str]
) -> None:
    connection = await aio_pika.connect(tessera_env["TESSERA_AMQP_URL"])
    try:
        channel = await connection.channel()
        # A full queue that refuses more: RabbitMQ nacks what is routed to it.
        full = await channel.declare_queue(
            exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
        )
        await full.bind(rig.exchange, "full.v1")
        await publish_batch(rig.channel, rig.exchange, [_message(1, routing_key="full.v1")])
        with pytest.raises(aiormq.exceptions.DeliveryError):
            await publish_batch(
                rig.channel, rig.exchange, [_message(2), _message(3, routing_key="full.v1")]
            )
        await publish_batch(rig.channel, rig.exchange, [_message(4)])
        assert [m.message_id for m in await _received(rig.queue, 2)] == ["m2", "m4"]
    finally:
        await connection.close()


async def test_a_connection_closing_under_a_batch_fails_it_as_an_error_not_a_cancellation(
    rig: Rig,
) -> None:
    publishing = asyncio.create_task(
        publish_batch(
            rig.channel,
            rig.exchange,
            [_message(n, b"x" * 1_000_000) for n in range(50)],
        )
    )
    while not rig.channel.confirmations:
        await asyncio.sleep(0)
    # Pending confirms fail when their connection goes: with CancelledError, aiormq's way.
    await rig.channel.connection.close()
    (outcome,) = await asyncio.gather(publishing, return_exceptions=True)
    # CancelledError is no Exception: a relay that got one would stop instead of retrying.
    # Which error depends on when the close lands (ConfirmsLost, an AMQPError, or the bare
    # Exception() aiormq closes with); the relay retries on any Exception.
    assert isinstance(outcome, Exception), repr(outcome)
