"""The transactional outbox: events are rows written with the state change, published later.

``add_events``, the one way in, is called inside the caller's transaction (a
``shared.db.unit_of_work``), so an event exists exactly when the change it describes was
committed. :class:`OutboxRelay` publishes pending rows with publisher confirms and deletes them
only once RabbitMQ has confirmed them; rows are claimed with ``FOR UPDATE SKIP LOCKED`` so
several replicas can relay at once without publishing a row twice.
A broker outage leaves rows waiting; the relay resumes by itself when the broker is back.

The relay of the process that wrote an event is woken right after the commit (the caller's
unit of work runs the wake-up); relays of other replicas find leftover rows by polling.
PostgreSQL's NOTIFY is not used: a transaction that notifies holds a database-wide lock through
its commit, which serialises every durable commit of the service behind one WAL flush at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import structlog
from pamqp import commands as spec
from prometheus_client import Counter, Gauge

from shared.bus.amqp import Broker, BrokerUnavailable
from shared.bus.batch_publish import Outgoing
from shared.bus.envelope import Envelope
from shared.db import after_commit, columns
from shared.logging import REQUEST_ID_HEADER, actor_var, request_id_var

log = structlog.get_logger("tessera.outbox")

# How often the gauge of pending events is refreshed while the relay is busy.
PENDING_REFRESH = 1.0
PUBLISHED = Counter("tessera_outbox_published_total", "Events published and confirmed", ["service"])
PENDING = Gauge("tessera_outbox_pending", "Events waiting in the outbox", ["service"])
OLDEST_AGE = Gauge(
    "tessera_outbox_oldest_age_seconds",
    "Age of the oldest event not yet published (0 when the outbox is empty)",
    ["service"],
)
PERSISTENT = 2  # AMQP delivery mode: the broker writes the message to disk


# What the outbox and the audit trail record of an event (event_values), with its SQL type.
EVENT_COLUMNS = {
    "event_id": "uuid",
    "routing_key": "text",
    "body": "bytea",
    "request_id": "text",
    "occurred_at": "timestamptz",
    "tenant": "text",
    "action": "text",
    "source": "text",
    "actor": "text",
    "data": "jsonb",
}
_EVENT_ARRAYS = ", ".join(f"${n}::{t}[]" for n, t in enumerate(EVENT_COLUMNS.values(), 1))
# The outbox and audit rows of a batch of events, one array per column.
_ADD_EVENTS = f"""
    WITH events AS (
        SELECT * FROM unnest({_EVENT_ARRAYS})
        WITH ORDINALITY AS e({", ".join(EVENT_COLUMNS)}, n)),
    queued AS (
        INSERT INTO outbox (event_id, routing_key, body, request_id, created_at)
        SELECT event_id, routing_key, body, request_id, occurred_at FROM events ORDER BY n),
    audited AS (
        INSERT INTO audit_log
            (event_id, occurred_at, tenant, action, source, actor, request_id, data)
        SELECT event_id, occurred_at, tenant, action, source, actor, request_id, data
        FROM events ORDER BY n)
    SELECT 1"""


@dataclass(frozen=True)
class Cause:
    """Who and which request caused an event, for the audit trail and tracing."""

    request_id: str | None
    actor: str | None

    @classmethod
    def current(cls) -> Cause:
        """The cause bound to the running request (see shared.logging)."""
        return cls(request_id_var.get(), actor_var.get())


def event_values(envelope: Envelope, cause: Cause) -> tuple[object, ...]:
    """What the outbox and the audit trail record of an event, in :data:`EVENT_COLUMNS` order.

    :func:`add_events` writes these; so does a store that writes a change and its events in one
    statement of its own (the issuer's group commit, ``services/issuer/store.py``), which then
    calls :func:`wake_relays` once that statement has committed.
    """
    return (
        envelope.id,
        envelope.routing_key,
        envelope.to_json(),
        cause.request_id,
        envelope.occurred_at,
        envelope.tenant,
        envelope.type,
        envelope.source,
        cause.actor,
        envelope.data,
    )


async def add_events(
    conn: asyncpg.Connection, events: Sequence[Envelope | tuple[Envelope, Cause]]
) -> None:
    """Queue events, in this order, in the caller's :func:`shared.db.unit_of_work` (or as a
    statement of their own, atomic without a transaction); the relay is woken once they are
    committed.

    Each event is appended to the service's audit trail too, with the actor and request id of
    the operation that caused it: the running request's (:meth:`Cause.current`), or the cause
    given with the event as ``(event, cause)``.
    """
    if not events:
        return
    rows = []
    for event in events:
        envelope, cause = event if isinstance(event, tuple) else (event, Cause.current())
        rows.append(event_values(envelope, cause))
    await conn.execute(_ADD_EVENTS, *columns(rows, len(EVENT_COLUMNS)))
    after_commit(conn, wake_relays)


# The relays running in this process; an event written here wakes them after its commit.
_relays: weakref.WeakSet[OutboxRelay] = weakref.WeakSet()


def wake_relays() -> None:
    """Wake the relays of this process: new events have been committed."""
    for relay in _relays:
        relay.wake()


def _message(row: asyncpg.Record) -> Outgoing:
    """The AMQP message of an outbox row, without parsing its body: the type is in the routing
    key (``<type>.v<version>``), the time the event occurred in ``created_at``."""
    headers = {REQUEST_ID_HEADER: row["request_id"]} if row["request_id"] else {}
    properties = spec.Basic.Properties(
        content_type="application/json",
        message_id=str(row["event_id"]),
        message_type=row["routing_key"].rpartition(".v")[0],
        timestamp=row["created_at"],
        headers=headers,
        delivery_mode=PERSISTENT,
    )
    return Outgoing(row["routing_key"], bytes(row["body"]), properties)


class OutboxRelay:
    """Publishes a service's outbox; run one per replica (``start``/``stop``)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        broker: Broker,
        *,
        service: str,
        batch_size: int = 256,
        poll_interval: float = 1.0,
    ) -> None:
        self._pool = pool
        self._broker = broker
        self._service = service
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending_checked = 0.0
        self._pending_seen = True
        # created_at of the oldest pending event when last counted (epoch seconds), or None.
        self._oldest: float | None = None
        OLDEST_AGE.labels(service).set_function(self._oldest_age)

    def _oldest_age(self) -> float:
        # Computed at scrape time, so it grows during an outage between two counts.
        return 0.0 if self._oldest is None else max(0.0, time.time() - self._oldest)

    def start(self) -> None:
        """Start relaying in a background task; commits in this process wake it."""
        _relays.add(self)
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._service}")

    async def stop(self) -> None:
        """Stop relaying and wait for the task to end; unpublished rows stay for the next run."""
        _relays.discard(self)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        """Relay now rather than at the next poll (new events were committed)."""
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish up to one batch of pending events; returns how many were confirmed."""
        self._broker.exchange()  # BrokerUnavailable while disconnected: leave the rows alone
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT position, event_id, routing_key, body, request_id, created_at FROM outbox
                   ORDER BY position LIMIT $1 FOR UPDATE SKIP LOCKED""",
                self._batch_size,
            )
            if not rows:
                return 0
            # If any publish fails the transaction rolls back and the whole batch is retried:
            # consumers drop the duplicates by id. Not mandatory: an event nobody has
            # subscribed to yet is not an error.
            await self._broker.publish_confirmed([_message(row) for row in rows])
            await conn.execute(
                "DELETE FROM outbox WHERE position = ANY($1::bigint[])",
                [row["position"] for row in rows],
            )
        PUBLISHED.labels(self._service).inc(len(rows))
        return len(rows)

    async def _run(self) -> None:
        await self._broker.wait_connected()
        delay = 0.1
        while True:
            try:
                # Cleared before the query: a commit that lands while it runs wakes us again.
                self._wake.clear()
                sent = await self.relay_once()
                delay = 0.1
                if sent == self._batch_size:
                    continue
                if sent or self._pending_seen:
                    await self._record_pending()
            except asyncio.CancelledError:
                raise
            except BrokerUnavailable:
                # The broker connection logs its loss and return once; the rows wait, and the
                # gauges still count them.
                with contextlib.suppress(Exception):
                    await self._record_pending()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except Exception as exc:
                log.warning("outbox relay paused", error=type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            # Not asyncio.wait_for: on 3.11 it swallows a cancel that lands as the event is
            # set, and stop() would then wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()

    async def _record_pending(self) -> None:
        now = time.monotonic()
        if now - self._pending_checked < PENDING_REFRESH:
            return
        self._pending_checked = now
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow("SELECT count(*) AS n, min(created_at) AS oldest FROM outbox")
        PENDING.labels(self._service).set(row["n"])
        self._oldest = row["oldest"].timestamp() if row["oldest"] is not None else None
        self._pending_seen = row["n"] > 0
