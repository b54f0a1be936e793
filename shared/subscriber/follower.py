"""The revocation follower: a local, event-fed copy of the revocation set.

Start-up binds the subscriber's own exclusive, auto-delete queue first (every replica needs
every event), then loads the snapshot, then reads the feed from the snapshot's ``as_of``: no
revocation committed in between can be missed. From then on ``token.revoked.v1`` events are
applied as they arrive, at once and whatever their order (a revocation only ever refuses more).
The sequence number tells the subscriber whether it has seen everything: a gap is filled from
the feed, a duplicate or a late event changes nothing, and the feed is also polled now and
then so even a lost last event is noticed. Key events (``key.revoked.v1``, ``key.rotated.v1``)
arrive on the same queue and are handed to key listeners (the JWT verifier).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
import structlog
from aio_pika.abc import AbstractIncomingMessage

from shared.bus.envelope import Envelope, EnvelopeError
from shared.bus.events import EventError, KeyRevoked, KeyRotated, TokenRevoked, parse_event
from shared.subscriber import metrics
from shared.subscriber.config import SubscriberConfig
from shared.subscriber.feed import FeedClient, FeedUnavailable
from shared.subscriber.queue import EventQueue
from shared.subscriber.revset import RevocationSet

log = structlog.get_logger("tessera.subscriber")

# What the follower's queue is bound to.
ROUTING_KEYS = (TokenRevoked.ROUTING_KEY, KeyRevoked.ROUTING_KEY, KeyRotated.ROUTING_KEY)
Listener = Callable[[dict[str, Any]], None]
KeyListener = Callable[[str, KeyRevoked | KeyRotated], None]


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).timestamp()


class RevocationFollower:
    """Holds the revocation set current: snapshot, feed and events; ``is_revoked`` asks it."""

    def __init__(self, config: SubscriberConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self._revoked = RevocationSet()
        self._feed = FeedClient(session, config.revocations_url, config.headers)
        self._listeners: list[Listener] = []
        self._key_listeners: list[KeyListener] = []
        self.seq = 0  # every revocation with a seq at or below this one has been applied
        self._ahead: set[int] = set()  # seqs applied beyond self.seq (a gap before them)
        self._bootstrapped = False
        self._current_at = time.monotonic()  # when this subscriber was last known current
        self._wake = asyncio.Event()
        self._must_sync = False  # read the feed on the next wake, gap or not
        self._sync_lock = asyncio.Lock()
        self._queue = EventQueue(
            config.amqp_url,
            config.amqp_names,
            config.name,
            ROUTING_KEYS,
            self._on_message,
            self._on_broker_lost,
            self._on_broker_back,
        )
        self._tasks: list[asyncio.Task[None]] = []
        labels = (config.name,)
        metrics.LAG.labels(*labels).set_function(lambda: self.lag_seconds)
        metrics.SEQ.labels(*labels).set_function(lambda: self.seq)
        metrics.HELD.labels(*labels).set_function(lambda: len(self._revoked))

    # --- public interface --------------------------------------------------------------

    async def start(self) -> None:
        """Bind the queue, load the snapshot (or catch up from the feed), then follow events.

        Raises :class:`FeedUnavailable` if the feed cannot be read within
        ``config.start_timeout``; the broker may be down (events then come from polling the
        feed until it returns).
        """
        timeout = self.config.start_timeout
        # Events flow before the snapshot is read, so none committed meanwhile is missed.
        await self._queue.start(wait=min(timeout, 5.0))
        deadline = time.monotonic() + timeout
        delay = 0.1
        while True:
            try:
                await self._catch_up()
                break
            except FeedUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("revocation feed unavailable, retrying", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self._tasks.append(asyncio.create_task(self._follow(), name="subscriber-sync"))

    async def close(self) -> None:
        """Stop following: the queue goes away with the connection."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self._queue.close()

    def is_revoked(self, token_id: str) -> bool:
        """True when a token known by this token id, jti or display id is revoked."""
        return token_id in self._revoked

    def add_listener(self, callback: Listener) -> None:
        """Call ``callback(revocation)`` for each newly applied revocation."""
        self._listeners.append(callback)

    def add_key_listener(self, callback: KeyListener) -> None:
        """Call ``callback(tenant, event)`` for each ``key.revoked`` and ``key.rotated`` event."""
        self._key_listeners.append(callback)

    def apply(self, revocation: dict[str, Any]) -> bool:
        """Apply a revocation known locally (e.g. a revoke reply) at once; True when new."""
        return self._accept(revocation)

    @property
    def lag_seconds(self) -> float:
        """Seconds since this subscriber was last known to hold every revocation (0: current)."""
        if self._bootstrapped and self._queue.up and not self._ahead:
            self._current_at = time.monotonic()
            return 0.0
        return time.monotonic() - self._current_at

    @property
    def size(self) -> int:
        """How many identifiers the set holds."""
        return len(self._revoked)

    # --- applying revocations ----------------------------------------------------------

    def _accept(self, revocation: dict[str, Any]) -> bool:
        """Apply a Revocation of the feed (or of :meth:`apply`): only ``token_id`` is required."""
        token_id = revocation.get("token_id")
        if not isinstance(token_id, str) or not token_id:
            raise ValueError("a revocation needs a token_id")
        return self._hold(
            token_id,
            revocation.get("jti"),
            revocation.get("display_id"),
            _epoch(revocation.get("expires_at")),
            _epoch(revocation.get("revoked_at")),
            revocation.get("seq"),
            revocation,
        )

    def _accept_event(self, envelope: Envelope, event: TokenRevoked) -> bool:
        # Listeners get the feed's Revocation shape, whichever way a revocation came.
        revocation = {"seq": envelope.seq, "tenant": envelope.tenant, **event.to_payload()}
        expires_at = event.expires_at.timestamp() if event.expires_at is not None else None
        return self._hold(
            event.token_id,
            event.jti,
            event.display_id,
            expires_at,
            event.revoked_at.timestamp(),
            envelope.seq,
            revocation,
        )

    def _hold(
        self,
        token_id: str,
        jti: str | None,
        display_id: str | None,
        expires_at: float | None,
        revoked_at: float | None,
        seq: Any,
        revocation: dict[str, Any],
    ) -> bool:
        now = time.time()
        new = self._revoked.add(token_id, jti, display_id, expires_at, now)
        if isinstance(seq, int) and seq > self.seq:
            self._advance(seq)
        if new:
            if revoked_at is not None:
                metrics.PROPAGATION.labels(self.config.name).observe(max(0.0, now - revoked_at))
            for listener in self._listeners:
                try:
                    listener(revocation)
                except Exception:
                    log.exception("revocation listener failed")
        return new

    def _advance(self, seq: int) -> None:
        if seq == self.seq + 1 and self._bootstrapped:
            self.seq = seq
            while self.seq + 1 in self._ahead:
                self.seq += 1
                self._ahead.discard(self.seq)
            return
        if not self._ahead and self._bootstrapped:
            # We were current until this event showed us a gap.
            self._current_at = time.monotonic()
        self._ahead.add(seq)
        self._wake.set()

    def _covered_through(self, seq: int) -> None:
        """Everything up to ``seq`` is applied (the feed or snapshot said so)."""
        if seq > self.seq:
            self.seq = seq
        self._ahead = {s for s in self._ahead if s > self.seq}
        while self.seq + 1 in self._ahead:
            self.seq += 1
            self._ahead.discard(self.seq)

    # --- bootstrap and catch-up --------------------------------------------------------

    async def _bootstrap(self) -> None:
        started = time.monotonic()
        as_of = 0
        add = self._revoked.add
        count = 0
        async for page_as_of, entries in self._feed.snapshot(self.config.snapshot_page):
            as_of = page_as_of
            now = time.time()
            for start in range(0, len(entries), 2000):
                for _seq, token_id, jti, display_id, expires in entries[start : start + 2000]:
                    add(token_id, jti, display_id, expires, now)
                # Let the request for the next page go out (and other tasks run).
                await asyncio.sleep(0)
            count += len(entries)
        self._bootstrapped = True
        self._covered_through(as_of)
        log.info(
            "revocations bootstrapped",
            subscriber=self.config.name,
            as_of=as_of,
            revocations=count,
            seconds=round(time.monotonic() - started, 3),
        )

    async def _catch_up(self, *, routine: bool = False) -> None:
        """Read the feed from ``seq`` to its end (or re-bootstrap when far behind)."""
        try:
            await self._read_feed(routine=routine)
        except (KeyError, TypeError, ValueError) as exc:
            raise FeedUnavailable(f"malformed feed or snapshot: {type(exc).__name__}") from None

    async def _read_feed(self, *, routine: bool = False) -> None:
        async with self._sync_lock:
            started = time.monotonic()
            if not self._bootstrapped:
                await self._bootstrap()
            had_gap = bool(self._ahead)
            while True:
                page = await self._feed.since(self.seq, self.config.feed_page, routine=routine)
                behind = page.current_seq - self.seq
                if page.current_seq < self.seq:
                    # The service's sequence went back (a restored database): start over from
                    # its snapshot, keeping what we hold (a revoked token stays revoked).
                    log.warning("revocation sequence went back, re-bootstrapping", seq=self.seq)
                    self.seq = 0
                    self._ahead.clear()
                    await self._bootstrap()
                    continue
                if behind > self.config.rebootstrap_after and self.seq < page.pruned_through:
                    log.warning("far behind the feed, re-bootstrapping", seq=self.seq)
                    await self._bootstrap()
                    continue
                for revocation in page.revocations:
                    self._accept(revocation)
                self._covered_through(page.next_since)
                if len(page.revocations) < self.config.feed_page:
                    break
            if had_gap:
                metrics.GAPS.labels(self.config.name).inc()
            if not self._ahead:
                self._current_at = started

    async def _follow(self) -> None:
        """Fill gaps when events reveal one, poll the feed now and then, drop expired entries."""
        while True:
            woken = False
            # Not asyncio.wait_for: on 3.11 it swallows a cancel that lands as the event is
            # set, and close() would then wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.poll_interval):
                    woken = await self._wake.wait()
            if woken and self._ahead:
                # Out-of-order deliveries usually close a gap by themselves within moments.
                await asyncio.sleep(self.config.gap_wait)
            self._wake.clear()
            if woken and not self._ahead and not self._must_sync:
                continue  # the gap closed by itself
            # The timer's poll is routine (logged at debug by the service); a read for a gap,
            # a reconnect or a retry is not.
            routine = not woken and not self._must_sync
            self._must_sync = False
            try:
                await self._catch_up(routine=routine)
            except FeedUnavailable as exc:
                log.warning("revocation feed unavailable", error=str(exc))
                await asyncio.sleep(min(self.config.poll_interval, 1.0))
                self._must_sync = True
                self._wake.set()
            except Exception:
                # A bug must not stop the subscriber for good: log it, retry after a pause.
                log.exception("revocation catch-up failed")
                await asyncio.sleep(min(self.config.poll_interval, 1.0))
            self._revoked.prune(time.time() - self.config.expiry_grace)

    # --- the broker --------------------------------------------------------------------

    def _on_broker_lost(self) -> None:
        self._current_at = time.monotonic()

    def _on_broker_back(self) -> None:
        # Events published while the queue was gone are in the feed: read it now.
        self._must_sync = True
        self._wake.set()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            envelope = Envelope.from_json(message.body)
            event = parse_event(envelope)
        except (EnvelopeError, EventError) as exc:
            log.warning("unparseable event ignored", reason=str(exc))
            return
        if isinstance(event, TokenRevoked):
            self._accept_event(envelope, event)
        elif isinstance(event, KeyRevoked | KeyRotated):
            for listener in self._key_listeners:
                try:
                    listener(envelope.tenant, event)
                except Exception:
                    log.exception("key listener failed")
