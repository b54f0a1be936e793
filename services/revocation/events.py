"""The events the revocation service publishes: ``token.revoked.v1``.

Schema of the payload: shared/schemas/token-revoked.v1.json (documented in docs/subscriber.md).
"""

from __future__ import annotations

from services.revocation.domain import Revocation
from shared.bus.envelope import Envelope

SOURCE = "revocation"


def token_revoked(revocation: Revocation) -> Envelope:
    """The ``token.revoked.v1`` envelope of one revocation: ``seq`` and tenant on the envelope."""
    return Envelope(
        type="token.revoked",
        source=SOURCE,
        tenant=revocation.tenant,
        seq=revocation.seq,
        data=revocation.event_data(),
        occurred_at=revocation.revoked_at,
    )
