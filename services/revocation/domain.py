"""Revocations as values: parsing a revoke request, turning token records into targets.

Pure: no I/O, and the current time comes in as ``now``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.revocation.errors import InvalidSelector, UnknownToken
from shared.bus.envelope import Envelope
from shared.bus.events import TokenRevoked
from shared.clients.issuer import TokenRecord
from shared.errors import BadRequest
from shared.ids import is_tenant_id
from shared.tokens import classify

# Selectors resolved through the issuer to one token, and those that may match many.
SINGLE_SELECTORS = ("token_id", "display_id", "token")
BULK_SELECTORS = ("family_id", "subject", "kid")
# "jwt" names a token the caller already knows in full (a JWT it verified), so no issuer
# lookup is needed for it. Every other token is looked up at the issuer, whose records are the
# only ones believed: no caller's copy of a record is.
SELECTORS = (*SINGLE_SELECTORS, *BULK_SELECTORS, "jwt")
JWT_KINDS = frozenset({"jwt_access", "jwt_refresh"})
MAX_ID = 256
MAX_REASON = 500
DISPLAY_ID = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class RevokeCommand:
    """``RevokeToken``: what the caller asked to revoke, already validated."""

    tenant: str
    selector: str
    value: str
    owner: str | None = None
    reason: str | None = None
    actor: str | None = None
    jwt: Target | None = None


@dataclass(frozen=True)
class Target:
    """One token to revoke, with every identifier a client may know it by."""

    token_id: str
    jti: str | None
    display_id: str | None
    subject: str | None
    kind: str | None
    family_id: str | None
    kid: str | None
    expires_at: datetime | None


@dataclass(frozen=True)
class Revocation:
    seq: int
    tenant: str
    token_id: str
    jti: str | None
    display_id: str | None
    subject: str | None
    kind: str | None
    family_id: str | None
    expires_at: datetime | None
    revoked_at: datetime
    reason: str | None
    kid: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The internal API's Revocation shape: the event's payload with ``seq`` and ``tenant``."""
        return {"seq": self.seq, "tenant": self.tenant, **self.event().to_payload()}

    def event(self) -> TokenRevoked:
        """The ``token.revoked.v1`` event of this revocation (times in UTC)."""
        return TokenRevoked(
            token_id=self.token_id,
            jti=self.jti,
            display_id=self.display_id,
            subject=self.subject,
            kind=self.kind,
            family_id=self.family_id,
            expires_at=_utc(self.expires_at),
            revoked_at=self.revoked_at.astimezone(UTC),
            reason=self.reason,
        )


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _string(body: dict[str, Any], name: str, *, limit: int = MAX_ID) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidSelector(f"{name} must be a non-empty string of at most {limit} characters")
    return value


def parse_timestamp(value: Any, name: str) -> datetime | None:
    """An RFC 3339 string (or epoch seconds) as an aware UTC datetime; None stays None."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise BadRequest(f"{name} is out of range") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise BadRequest(f"{name} must be an RFC 3339 timestamp") from None
        if parsed.tzinfo is None:
            raise BadRequest(f"{name} must carry a UTC offset")
        return parsed.astimezone(UTC)
    raise BadRequest(f"{name} must be an RFC 3339 timestamp")


def _parse_jwt(value: Any) -> Target:
    if not isinstance(value, dict):
        raise InvalidSelector("jwt must be an object {jti, subject, expires_at}")
    jti = _string(value, "jti")
    if jti is None:
        raise InvalidSelector("jwt.jti is required")
    kind = _string(value, "kind")
    if kind is not None and kind not in JWT_KINDS:
        raise InvalidSelector("jwt.kind must be jwt_access or jwt_refresh")
    return Target(
        token_id=jti,
        jti=jti,
        display_id=None,
        subject=_string(value, "subject"),
        kind=kind,
        family_id=_string(value, "family_id"),
        kid=_string(value, "kid"),
        expires_at=parse_timestamp(value.get("expires_at"), "jwt.expires_at"),
    )


def parse_revoke(body: dict[str, Any]) -> RevokeCommand:
    """Validate a ``POST /internal/revocations`` body into a :class:`RevokeCommand`."""
    tenant = body.get("tenant")
    if not is_tenant_id(tenant):
        raise BadRequest("tenant is required and must match ^[a-z0-9][a-z0-9-]{0,62}$")
    given = [name for name in SELECTORS if body.get(name) is not None]
    if len(given) != 1:
        raise InvalidSelector(f"give exactly one selector of {', '.join(SELECTORS)}")
    selector = given[0]
    owner = _string(body, "owner")
    reason = _string(body, "reason", limit=MAX_REASON)
    actor = _string(body, "actor")
    if selector == "jwt":
        target = _parse_jwt(body["jwt"])
        if owner is not None and target.subject != owner:
            raise UnknownToken("no such token")
        return RevokeCommand(tenant, selector, target.token_id, owner, reason, actor, target)
    value = _string(body, selector)
    assert value is not None
    if selector == "token" and classify(value) not in ("opaque", "databricks"):
        # A JWT goes through the "jwt" selector once its caller has verified it.
        raise BadRequest("token is not a well-formed Tessera opaque or Databricks token")
    if selector == "display_id" and not DISPLAY_ID.match(value):
        raise BadRequest("display_id must be 64 lower-case hex characters")
    return RevokeCommand(tenant, selector, value, owner, reason, actor)


def target_from_record(record: Any, tenant: str) -> Target:
    """A TokenRecord in an issuer event as a :class:`Target` (checked: it is this tenant's)."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        raise ValueError("malformed token record")
    if record.get("tenant") != tenant:
        # The issuer scopes lookups by tenant; this is a second fence, never expected to trip.
        raise UnknownToken("no such token")
    kind = record.get("kind") if isinstance(record.get("kind"), str) else None

    def text(name: str) -> str | None:
        value = record.get(name)
        return value if isinstance(value, str) else None

    return Target(
        token_id=record["id"],
        jti=record["id"] if kind in JWT_KINDS else None,
        display_id=text("display_id"),
        subject=text("subject"),
        kind=kind,
        family_id=text("family_id"),
        kid=text("kid"),
        expires_at=parse_timestamp(record.get("expires_at"), "expires_at"),
    )


def target_of(record: TokenRecord, tenant: str) -> Target:
    """A TokenRecord the issuer answered as a :class:`Target` (checked: it is this tenant's)."""
    if record.tenant != tenant:
        # The issuer scopes lookups by tenant; this is a second fence, never expected to trip.
        raise UnknownToken("no such token")
    expires_at = record.expires_at
    return Target(
        token_id=record.id,
        jti=record.id if record.kind in JWT_KINDS else None,
        display_id=record.display_id,
        subject=record.subject,
        kind=record.kind,
        family_id=record.family_id,
        kid=record.kid,
        expires_at=expires_at.astimezone(UTC) if expires_at is not None else None,
    )


def owned_by(targets: list[Target], owner: str | None) -> list[Target]:
    """The targets ``owner`` may revoke (all of them when no owner is given)."""
    if owner is None:
        return targets
    return [t for t in targets if t.subject == owner]


def new_revocation(
    seq: int, tenant: str, target: Target, reason: str | None, now: datetime
) -> Revocation:
    return Revocation(
        seq=seq,
        tenant=tenant,
        token_id=target.token_id,
        jti=target.jti,
        display_id=target.display_id,
        subject=target.subject,
        kind=target.kind,
        family_id=target.family_id,
        expires_at=target.expires_at,
        revoked_at=now,
        reason=reason,
        kid=target.kid,
    )


def parse_int(raw: str | None, name: str, default: int, lo: int, hi: int) -> int:
    """A query parameter as an integer in [lo, hi], or :class:`BadRequest` naming it."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}")
    return value


def parse_tenant_filter(raw: str | None) -> str | None:
    if raw is None or raw == "":
        return None
    if not is_tenant_id(raw):
        raise BadRequest("tenant must match ^[a-z0-9][a-z0-9-]{0,62}$")
    return raw


def token_revoked(revocation: Revocation) -> Envelope:
    """The ``token.revoked.v1`` envelope of one revocation: ``seq`` and tenant on the envelope,
    and the revoking transaction's time as the event's."""
    return revocation.event().to_envelope(
        revocation.tenant, seq=revocation.seq, occurred_at=revocation.revoked_at
    )
