"""Events the keys service publishes (through the outbox)."""

from __future__ import annotations

from datetime import datetime

from shared.bus.envelope import Envelope


def tenant_created(tenant: str, alg: str) -> Envelope:
    return Envelope(
        type="tenant.created", source="keys", tenant=tenant, data={"id": tenant, "alg": alg}
    )


def key_rotated(
    tenant: str, kid: str, alg: str, previous_kid: str | None, activates_at: datetime
) -> Envelope:
    return Envelope(
        type="key.rotated",
        source="keys",
        tenant=tenant,
        data={
            "kid": kid,
            "alg": alg,
            "previous_kid": previous_kid,
            "activates_at": activates_at.isoformat(),
        },
    )


def key_revoked(tenant: str, kid: str) -> Envelope:
    return Envelope(type="key.revoked", source="keys", tenant=tenant, data={"kid": kid})
