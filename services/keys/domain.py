"""Validation and pure rules of the keys service (no I/O; time comes in as ``now``)."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.keys.crypto import ALGORITHMS
from services.keys.errors import InvalidClaims, RotationLimited, TooManyKeys
from shared.authz import DEFAULT_MAX_LIFETIME
from shared.errors import BadRequest
from shared.ids import TENANT_ID_TEXT, is_tenant_id

MAX_CLAIM_SETS = 32
MAX_CLAIMS_BYTES = 8 * 1024
# The watermark of a key that signed a token without ``exp``: it stays published for good.
NEVER = datetime(9000, 1, 1, tzinfo=UTC)
MAX_EXP = NEVER.timestamp()
WATERMARK_SLACK = 3600.0
DEFAULTS = {
    "access_ttl": 300,
    "refresh_ttl": 600,
    "token_quota": 600,
    "max_lifetime": DEFAULT_MAX_LIFETIME,
}


def _positive_int(body: dict[str, Any], name: str) -> int:
    value = body.get(name, DEFAULTS[name])
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BadRequest(f"{name} must be a positive integer")
    return value


def parse_tenant(body: dict[str, Any], public_url: str) -> dict[str, Any]:
    """A new tenant's settings from a request body, with defaults filled in."""
    tenant_id = body.get("id")
    if not is_tenant_id(tenant_id):
        raise BadRequest(f"id must match {TENANT_ID_TEXT}")
    alg = body.get("alg", "RS256")
    if alg not in ALGORITHMS:
        raise BadRequest(f"alg must be one of {', '.join(ALGORITHMS)}")
    issuer = body.get("issuer", f"{public_url}/v3/tokens")
    if not isinstance(issuer, str) or not re.match(r"^https?://[^\s]{1,500}$", issuer):
        raise BadRequest("issuer must be an http(s) URL")
    unknown = set(body) - {"id", "alg", "issuer", *DEFAULTS}
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")
    return {
        "id": tenant_id,
        "alg": alg,
        "issuer": issuer,
        **{name: _positive_int(body, name) for name in DEFAULTS},
    }


@dataclass(frozen=True)
class ClaimSets:
    """The claim sets of a sign request, each serialised once, in the order sent."""

    payloads: list[bytes]
    # The latest ``exp`` in epoch seconds, or None when a set has none (it never expires).
    latest_exp: float | None


def parse_claim_sets(body: dict[str, Any]) -> ClaimSets:
    """The claim sets of a sign request: 1 to 32 JSON objects of at most 8 KiB each.

    Claims are serialised exactly as they arrived (JSON objects keep their order, which the
    Tapis contract fixes); the bytes checked for size are the bytes signed.
    """
    claims = body.get("claims")
    if not isinstance(claims, list) or not 1 <= len(claims) <= MAX_CLAIM_SETS:
        raise InvalidClaims(f"claims must be a list of 1 to {MAX_CLAIM_SETS} objects")
    unknown = set(body) - {"claims"}
    if unknown:
        raise InvalidClaims(f"unknown fields: {', '.join(sorted(unknown))}")
    payloads: list[bytes] = []
    latest: float | None = 0.0
    for claim_set in claims:
        if not isinstance(claim_set, dict):
            raise InvalidClaims("each claim set must be a JSON object")
        try:
            # allow_nan=False: NaN and Infinity parse in Python but are not JSON.
            payload = json.dumps(claim_set, separators=(",", ":"), allow_nan=False).encode()
        except ValueError:
            raise InvalidClaims("claims must not hold NaN or Infinity") from None
        if len(payload) > MAX_CLAIMS_BYTES:
            raise InvalidClaims(f"a claim set is larger than {MAX_CLAIMS_BYTES} bytes")
        payloads.append(payload)
        if "exp" not in claim_set:
            latest = None
            continue
        exp = claim_set["exp"]
        if not isinstance(exp, int | float) or isinstance(exp, bool) or not 0 < exp < MAX_EXP:
            raise InvalidClaims("exp must be a number of seconds since the epoch")
        if latest is not None:
            latest = max(latest, float(exp))
    return ClaimSets(payloads, latest)


def next_watermark(latest_exp: float | None, watermark: float | None) -> float | None:
    """The ``max_exp`` to record before signing tokens that expire by ``latest_exp`` with a
    key whose recorded watermark is ``watermark``; None when the recorded one covers them.

    The mark moves an hour past the expiry asked for, so only one signature in many writes.
    """
    wanted = MAX_EXP if latest_exp is None else latest_exp
    if watermark is not None and wanted <= watermark:
        return None
    return min(wanted + WATERMARK_SLACK, MAX_EXP)


def new_kid() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class KeyView:
    """What anyone may see of a key: never the private part."""

    kid: str
    alg: str
    state: str
    created_at: datetime
    activates_at: datetime
    retired_at: datetime | None
    revoked_at: datetime | None
    publish_until: datetime | None

    def to_json(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "kid": self.kid,
            "alg": self.alg,
            "state": self.state,
            "created_at": iso(self.created_at),
            "activates_at": iso(self.activates_at),
            "retired_at": iso(self.retired_at),
            "publish_until": iso(self.publish_until),
            "revoked_at": iso(self.revoked_at),
        }


def publish_until(
    state: str, retired_at: datetime | None, max_exp: datetime | None
) -> datetime | None:
    """Until when a key must stay in the JWKS: a retired key until the last token it signed
    has expired (at once if it never signed); active and pending keys indefinitely (None)."""
    if state != "retired":
        return None
    assert retired_at is not None
    return max(retired_at, max_exp) if max_exp else retired_at


def is_published(
    state: str, retired_at: datetime | None, max_exp: datetime | None, now: datetime
) -> bool:
    if state in ("active", "pending"):
        return True
    until = publish_until(state, retired_at, max_exp)
    return state == "retired" and until is not None and until > now


@dataclass(frozen=True)
class RotationLimits:
    """Per tenant: new keys an hour, and keys published at once (0: no limit)."""

    per_hour: int = 10
    max_published: int = 20


def check_rotation(keys: list[Any], now: datetime, limits: RotationLimits) -> None:
    """Refuse a requested rotation past the tenant's limits (issue 14: twenty update_keys
    calls left twenty-one keys published for as long as their tokens live).

    ``keys`` are the tenant's key rows; every key created in the last hour counts as a
    rotation, and a rotation publishes one key more (the retired one stays published while
    tokens it signed live)."""
    hour_ago = now - timedelta(hours=1)
    recent = sorted(k["created_at"] for k in keys if k["created_at"] > hour_ago)
    if limits.per_hour and len(recent) >= limits.per_hour:
        wait = recent[-limits.per_hour] + timedelta(hours=1) - now
        raise RotationLimited(
            f"at most {limits.per_hour} key rotations an hour for a tenant: retry later",
            details={"retry_after": max(1, int(wait.total_seconds()) + 1)},
        )
    published = sum(
        is_published(k["state"], k["retired_at"], k["max_exp"], now)
        for k in keys
        if k["state"] != "pending"  # an immediate rotation drops a pending key
    )
    if limits.max_published and published + 1 > limits.max_published:
        raise TooManyKeys(
            f"the tenant already publishes {published} keys (at most {limits.max_published}):"
            " revoke retired keys before rotating again"
        )


def tenant_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "issuer": row["issuer"],
        "alg": row["alg"],
        "access_ttl": row["access_ttl"],
        "refresh_ttl": row["refresh_ttl"],
        "token_quota": row["token_quota"],
        "max_lifetime": row["max_lifetime"],
        "created_at": row["created_at"].isoformat(),
    }
