"""Validation and pure rules of the keys service (no I/O; time comes in as ``now``)."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.keys.crypto import ALGORITHMS
from services.keys.errors import InvalidClaims
from shared.errors import BadRequest

TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MAX_CLAIM_SETS = 10
MAX_CLAIMS_BYTES = 8 * 1024
# The watermark of a key that signed a token without ``exp``: it stays published for good.
NEVER = datetime(9000, 1, 1, tzinfo=UTC)
DEFAULTS = {"access_ttl": 300, "refresh_ttl": 600, "token_quota": 600}


def _positive_int(body: dict[str, Any], name: str) -> int:
    value = body.get(name, DEFAULTS[name])
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise BadRequest(f"{name} must be a positive integer")
    return value


def parse_tenant(body: dict[str, Any], public_url: str) -> dict[str, Any]:
    """A new tenant's settings from a request body, with defaults filled in."""
    tenant_id = body.get("id")
    if not isinstance(tenant_id, str) or not TENANT_ID.match(tenant_id):
        raise BadRequest("id must match ^[a-z0-9][a-z0-9-]{0,62}$")
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


def parse_claim_sets(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The claim sets of a sign request: 1 to 10 JSON objects of at most 8 KiB each."""
    claims = body.get("claims")
    if not isinstance(claims, list) or not 1 <= len(claims) <= MAX_CLAIM_SETS:
        raise InvalidClaims(f"claims must be a list of 1 to {MAX_CLAIM_SETS} objects")
    for claim_set in claims:
        if not isinstance(claim_set, dict):
            raise InvalidClaims("each claim set must be a JSON object")
        if len(json.dumps(claim_set)) > MAX_CLAIMS_BYTES:
            raise InvalidClaims(f"a claim set is larger than {MAX_CLAIMS_BYTES} bytes")
        exp = claim_set.get("exp")
        if exp is not None and (
            not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= 0
        ):
            raise InvalidClaims("exp must be a number of seconds since the epoch")
    return claims


def latest_exp(claim_sets: list[dict[str, Any]]) -> datetime:
    """The latest expiry among claim sets; a set without ``exp`` never expires."""
    if any("exp" not in c for c in claim_sets):
        return NEVER
    return datetime.fromtimestamp(max(float(c["exp"]) for c in claim_sets), UTC)


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


def tenant_json(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "issuer": row["issuer"],
        "alg": row["alg"],
        "access_ttl": row["access_ttl"],
        "refresh_ttl": row["refresh_ttl"],
        "token_quota": row["token_quota"],
        "created_at": row["created_at"].isoformat(),
    }
