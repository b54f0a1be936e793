"""The events the revocation service publishes: ``token.revoked.v1``.

The payload is :class:`shared.bus.events.TokenRevoked` (schema:
shared/schemas/token-revoked.v1.json, documented in docs/subscriber.md).
"""

from __future__ import annotations

from services.revocation.domain import Revocation
from shared.bus.envelope import Envelope


def token_revoked(revocation: Revocation) -> Envelope:
    """The ``token.revoked.v1`` envelope of one revocation: ``seq`` and tenant on the envelope,
    and the revoking transaction's time as the event's."""
    return revocation.event().to_envelope(
        revocation.tenant, seq=revocation.seq, occurred_at=revocation.revoked_at
    )
