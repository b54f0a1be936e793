"""Publishing a batch of messages in one socket write, with publisher confirms, on aiormq.

aio-pika's ``Exchange.publish`` (aiormq's ``Channel.basic_publish``) writes each message on its
own and waits for its own confirm: a socket write, so a broker wake-up, per message. Publishing
the outbox that way costs about three times the CPU per message here and more at the broker
(``python -m bench.bench_outbox``), CPU the rest of a small machine's stack then lacks.

:func:`publish_batch` does what ``basic_publish`` does, for several messages: it refuses an
over-long routing key, takes the channel's lock, gives the messages the next delivery tags and
a confirmation future each, hands every frame to the connection's writer in one piece and waits
until it is written. If the frames never reach the writer (they cannot be encoded, the caller is
cancelled, the channel closes) the delivery tags are given back and the futures dropped, so the
channel's numbering stays the broker's. Those are attributes of aiormq's channel that its
documentation does not promise: :func:`check_channel` verifies them on each channel before it
publishes (and ``pyproject.toml`` holds aiormq below its next major version).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import aiormq
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

# What publish_batch uses of an aiormq channel, beyond its documented methods.
_CHANNEL_ATTRIBUTES = {
    "lock": None,  # async context manager serialising publishes (checked below)
    "delivery_tag": int,
    "confirmations": dict,
    "write_queue": asyncio.Queue,
    "number": int,
    "max_content_size": int,
}


class UnsupportedAiormq(RuntimeError):
    """The installed aiormq lacks what :func:`publish_batch` drives."""


class ConfirmsLost(ConnectionError):
    """The channel closed before RabbitMQ confirmed every message; any may have been published."""


@dataclass(frozen=True)
class Outgoing:
    """A message for an exchange."""

    routing_key: str
    body: bytes
    properties: spec.Basic.Properties


def check_channel(channel: object) -> None:
    """Raise :class:`UnsupportedAiormq` unless ``channel`` is an aiormq channel in confirm mode
    with every attribute :func:`publish_batch` uses, of the type it expects."""
    problems = []
    if not isinstance(channel, aiormq.Channel):
        problems.append(f"the channel is a {type(channel).__name__}, not an aiormq.Channel")
    for name, kind in _CHANNEL_ATTRIBUTES.items():
        if not hasattr(channel, name):
            problems.append(f"Channel.{name} is missing")
        elif kind is not None and not isinstance(getattr(channel, name), kind):
            problems.append(f"Channel.{name} is not a {kind.__name__}")
    if not callable(getattr(channel, "create_future", None)):
        problems.append("Channel.create_future is missing")
    if getattr(channel, "publisher_confirms", False) is not True:
        problems.append("the channel is not in publisher-confirms mode")
    if "drain_future" not in inspect.signature(ChannelFrame.marshall).parameters:
        problems.append("ChannelFrame.marshall takes no drain_future")
    if problems:
        raise UnsupportedAiormq(
            f"aiormq {version('aiormq')} cannot publish batches: {'; '.join(problems)}"
        )


def _frames(exchange: str, message: Outgoing, max_body_frame: int) -> list[Any]:
    """The method, header and body frames of one publish; bodies longer than a frame allows go
    in pieces (a broker with ``frame_max`` 0 sets no limit)."""
    body = message.body
    step = max_body_frame if max_body_frame > 0 else max(len(body), 1)
    return [
        spec.Basic.Publish(exchange=exchange, routing_key=message.routing_key),
        ContentHeader(properties=message.properties, body_size=len(body)),
        *(ContentBody(body[i : i + step]) for i in range(0, len(body), step)),
    ]


async def publish_batch(
    channel: aiormq.Channel, exchange: str, messages: Sequence[Outgoing]
) -> None:
    """Publish ``messages`` to ``exchange`` in this order, in one write on ``channel`` (checked
    with :func:`check_channel`); return once RabbitMQ has confirmed every one.

    Raises ``aiormq.exceptions.DeliveryError`` if RabbitMQ refuses (nacks) any, and
    :class:`ConfirmsLost` if the channel closes before every confirm: then any of them may have
    been published, or none. Not mandatory: a message no queue is bound for is not an error.
    """
    if not messages:
        return
    for message in messages:
        if len(message.routing_key.encode()) > 255:
            raise ValueError("routing key too long (max 255 bytes)")
    try:
        await asyncio.gather(*await _write(channel, exchange, messages))
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # our caller cancelled us (stopped, or its timeout)
        # aiormq cancels the channel's futures (writes and confirms) when it closes the channel.
        raise ConfirmsLost("the channel closed before every confirm") from None


async def _write(
    channel: aiormq.Channel, exchange: str, messages: Sequence[Outgoing]
) -> list[asyncio.Future[Any]]:
    """Write the batch; the future of each message's confirm."""
    async with channel.lock:  # no other publish between ours: delivery tags count them
        # RabbitMQ numbers the channel's publishes 1, 2, ... and confirms them by number.
        first = channel.delivery_tag + 1
        tags = range(first, first + len(messages))
        confirmations = [channel.create_future() for _ in tags]
        channel.confirmations.update(zip(tags, confirmations, strict=True))
        channel.delivery_tag = tags[-1]
        written = channel.create_future()
        sent = False
        try:
            payload = ChannelFrame.marshall(
                channel_number=channel.number,
                frames=[
                    frame
                    for message in messages
                    for frame in _frames(exchange, message, channel.max_content_size)
                ],
                drain_future=written,
            )
            await channel.write_queue.put(payload)
            sent = True
            await written
        except BaseException:
            if not sent:
                # The broker has not seen these publishes: the next ones reuse their numbers.
                channel.delivery_tag = first - 1
                for tag, confirmation in zip(tags, confirmations, strict=True):
                    channel.confirmations.pop(tag, None)
                    confirmation.cancel()
            written.cancel()
            raise
    return confirmations
