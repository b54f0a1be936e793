"""Events the issuer publishes, and the ``token.revoked`` events it applies."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from services.issuer import store
from services.issuer.domain import record_json
from shared.bus.envelope import Envelope
from shared.bus.events import TokenIssued, TokenRefreshReused, TokenRevoked

log = structlog.get_logger("tessera.issuer")


def token_issued(row: Any) -> Envelope:
    """``token.issued``: who got what kind of token until when; never its value."""
    return TokenIssued(
        token_id=str(row["id"]),
        display_id=row["display_id"],
        subject=row["subject"],
        kind=row["kind"],
        expires_at=row["expires_at"],
        family_id=str(row["family_id"]) if row["family_id"] else None,
    ).to_envelope(row["tenant"])


def refresh_reused(row: Any, revoked: list[Any]) -> Envelope:
    """``token.refresh_reused``: a used refresh token came back, so its whole family was
    revoked here; the revocation service revokes the listed tokens for every subscriber."""
    return TokenRefreshReused(
        family_id=str(row["family_id"]),
        token_id=str(row["id"]),
        subject=row["subject"],
        tokens=tuple(record_json(r) for r in revoked),
    ).to_envelope(row["tenant"])


def revoked_mark(
    tenant: str, revocation: Mapping[str, Any], default_at: datetime
) -> tuple[str, uuid.UUID, datetime] | None:
    """What a Revocation posted by the gateway (``POST /internal/tokens/revoked``) changes here,
    for :func:`store.mark_revoked`; None when it names no token we could have issued. A
    missing or unusable ``revoked_at`` (not ISO 8601, or out of PostgreSQL's range) is
    ``default_at``: the token is revoked either way."""
    try:
        token_id = uuid.UUID(str(revocation["token_id"]))
    except (KeyError, ValueError):
        return None
    raw = revocation.get("revoked_at")
    try:
        at = datetime.fromisoformat(str(raw))
        # No zone means UTC; astimezone raises for the years PostgreSQL could not take.
        revoked_at = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        if raw is not None:
            log.warning("unusable revoked_at, using the event time", token_id=str(token_id))
        revoked_at = default_at
    return tenant, token_id, revoked_at


async def on_token_revoked(conn: asyncpg.Connection, envelope: Envelope) -> None:
    """Keep our records' revoked state current (a token we never issued is ignored)."""
    event = TokenRevoked.from_envelope(envelope)
    try:
        token_id = uuid.UUID(event.token_id)
    except ValueError:
        return  # not an id this issuer hands out
    await store.mark_revoked(conn, [(envelope.tenant, token_id, event.revoked_at.astimezone(UTC))])


HANDLERS = {"issuer.on_token_revoked": {TokenRevoked.ROUTING_KEY: on_token_revoked}}
