"""Events the keys service publishes (through the outbox): see :mod:`shared.bus.events`."""

from __future__ import annotations

from datetime import datetime

from shared.bus.envelope import Envelope
from shared.bus.events import KeyRevoked, KeyRotated, TenantCreated


def tenant_created(tenant: str, alg: str) -> Envelope:
    """``tenant.created``: a tenant and the algorithm of its keys."""
    return TenantCreated(id=tenant, alg=alg).to_envelope(tenant)


def key_rotated(
    tenant: str, kid: str, alg: str, previous_kid: str | None, activates_at: datetime
) -> Envelope:
    """``key.rotated``: a new signing key of ``tenant``, signing from ``activates_at``."""
    return KeyRotated(
        kid=kid, alg=alg, previous_kid=previous_kid, activates_at=activates_at
    ).to_envelope(tenant)


def key_revoked(tenant: str, kid: str) -> Envelope:
    """``key.revoked``: a compromised signing key of ``tenant``."""
    return KeyRevoked(kid=kid).to_envelope(tenant)
