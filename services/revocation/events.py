"""Events the revocation service consumes: ``key.revoked.v1`` on ``revocation.on_key_revoked``
and ``token.refresh_reused.v1`` on ``revocation.on_refresh_reused``.

A compromised key's tokens, and a reused refresh token's family, are revoked: foreign events
become our own ``RevokeToken`` here. A key's tokens are asked of the issuer before the
consumer's transaction opens (a :class:`Resolving` handler); while the issuer is away the event
waits in its queue (:class:`RetryLater`). A reused family needs no call: the issuer's event
lists its tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import asyncpg
import structlog

from services.revocation.domain import Target, target_from_record, target_of
from services.revocation.service import record_revocations
from shared.bus.consumer import Handler, Resolving, RetryLater
from shared.bus.envelope import Envelope
from shared.bus.events import KeyRevoked, TokenRefreshReused
from shared.clients.issuer import IssuerClient
from shared.errors import Unavailable

log = structlog.get_logger("tessera.revocation.events")

ON_KEY_REVOKED = "revocation.on_key_revoked"
ON_REFRESH_REUSED = "revocation.on_refresh_reused"


def consumers(issuer: Callable[[], IssuerClient]) -> Mapping[str, Mapping[str, Handler]]:
    """``{consumer: {routing key: handler}}`` for ``shared.service.event_consumers``."""

    async def key_tokens(envelope: Envelope) -> list[Target]:
        kid = KeyRevoked.from_envelope(envelope).kid
        try:
            records = await issuer().active(envelope.tenant, kid=kid)
        except Unavailable as exc:
            raise RetryLater(exc.message) from None
        return [target_of(record, envelope.tenant) for record in records]

    async def revoke_key_tokens(
        conn: asyncpg.Connection, envelope: Envelope, targets: list[Target]
    ) -> None:
        revocations, created = await record_revocations(
            conn, envelope.tenant, targets, reason="key_revoked", actor=None, now=datetime.now(UTC)
        )
        log.info(
            "key revoked",
            tenant=envelope.tenant,
            kid=envelope.data.get("kid"),
            tokens=len(revocations),
            created=created,
        )

    async def on_refresh_reused(conn: asyncpg.Connection, envelope: Envelope) -> None:
        # The issuer lists the family's tokens in the event: nothing to ask it, so the family
        # is revoked whenever this service gets the event, however long it was away.
        event = TokenRefreshReused.from_envelope(envelope)
        targets = [target_from_record(record, envelope.tenant) for record in event.tokens]
        revocations, created = await record_revocations(
            conn,
            envelope.tenant,
            targets,
            reason="refresh_reuse",
            actor=None,
            now=datetime.now(UTC),
        )
        log.warning(
            "refresh family revoked after reuse",
            tenant=envelope.tenant,
            family_id=event.family_id,
            tokens=len(revocations),
            created=created,
        )

    return {
        ON_KEY_REVOKED: {KeyRevoked.ROUTING_KEY: Resolving(key_tokens, revoke_key_tokens)},
        ON_REFRESH_REUSED: {TokenRefreshReused.ROUTING_KEY: on_refresh_reused},
    }
