"""Requests, records and the Tapis claim sets, as plain data (no I/O; time comes in as ``now``)."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.authz import Principal
from shared.errors import BadRequest

OPAQUE_KINDS = ("opaque", "databricks", "jobmanager")
JWT_KINDS = ("jwt_access", "jwt_refresh")
KINDS = OPAQUE_KINDS + JWT_KINDS
MAX_TTL = 100 * 365 * 86400
PERMISSION = re.compile(r"^[A-Za-z0-9:_.-]{1,64}$")
MAX_PERMISSIONS = 16
# Extra Tapis claims may never set, shadow or spell a right (CONTRACTS.md §1): the registered
# JWT claims, the Tapis claims of §1 under their bare names, and anything under tapis/ or
# tessera/ (where the permissions live). Compared case-insensitively and without spaces.
REGISTERED_CLAIMS = ("iss", "sub", "aud", "exp", "nbf", "iat", "jti")
TAPIS_CLAIMS = (
    "tenant_id",
    "token_type",
    "delegation",
    "delegation_sub",
    "username",
    "account_type",
    "target_site",
    "initial_ttl",
    "access_token",
)
RESERVED_CLAIMS = frozenset((*REGISTERED_CLAIMS, "tenant", "ttl", *TAPIS_CLAIMS))
RESERVED_PREFIXES = ("tapis/", "tessera/")


def reserved_claims(claims: dict[str, Any]) -> list[str]:
    """The names among ``claims`` that an extra claim may not use."""
    found = []
    for name in claims:
        plain = "".join(name.split()).lower()
        if plain in RESERVED_CLAIMS or plain.startswith(RESERVED_PREFIXES):
            found.append(name)
    return sorted(found)


def parse_minter(body: dict[str, Any]) -> Principal:
    """Who asks for the mint, as the calling service authenticated it (CONTRACTS.md §0)."""
    try:
        return Principal.from_json(body.get("minter"))
    except ValueError as exc:
        raise BadRequest(f"minter: {exc}") from None


def _text(body: dict[str, Any], name: str, *, required: bool, max_len: int = 255) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise BadRequest(f"{name} must be a string of 1 to {max_len} characters")
    return value


def _ttl(value: Any, name: str) -> int | None:
    """A lifetime in seconds: a positive integer (never a boolean), or None."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_TTL:
        raise BadRequest(f"{name} must be a positive integer of seconds (at most {MAX_TTL})")
    return value


def _instant(value: Any, name: str) -> datetime | None:
    """An RFC 3339 instant with its offset, or None."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise BadRequest(f"{name} must be an RFC 3339 time with an offset")
    return when


def parse_permissions(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_PERMISSIONS:
        raise BadRequest(f"permissions must be a list of at most {MAX_PERMISSIONS} strings")
    if not all(isinstance(p, str) and PERMISSION.match(p) for p in value):
        raise BadRequest("each permission must be 1 to 64 of A-Z a-z 0-9 : _ . -")
    return list(dict.fromkeys(value))


@dataclass(frozen=True)
class CreateOpaque:
    tenant: str
    subject: str
    kind: str
    name: str | None
    permissions: list[str]
    ttl_seconds: int | None
    created_by: str | None
    minter: Principal
    expires_at: datetime | None = None  # an exact expiry asked for, instead of ttl_seconds

    @classmethod
    def parse(cls, body: dict[str, Any]) -> CreateOpaque:
        kind = body.get("kind", "opaque")
        if kind not in OPAQUE_KINDS:
            raise BadRequest(f"kind must be one of {', '.join(OPAQUE_KINDS)}")
        return cls(
            tenant=_text(body, "tenant", required=True, max_len=63) or "",
            subject=_text(body, "subject", required=True) or "",
            kind=kind,
            name=_text(body, "name", required=False),
            permissions=parse_permissions(body.get("permissions")),
            ttl_seconds=_ttl(body.get("ttl_seconds"), "ttl_seconds"),
            created_by=_text(body, "created_by", required=False),
            minter=parse_minter(body),
            expires_at=_instant(body.get("expires_at"), "expires_at"),
        )


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false")
    return value


def _tapis_ttl(body: dict[str, Any], name: str, public: str) -> int | None:
    """Tapis TTLs: absent or ≤ 0 means the tenant default; otherwise a positive integer.
    Errors name the field as the client sent it (``public``), not our internal name."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{public} must be an integer of seconds")
    if value <= 0:
        return None
    return _ttl(value, public)


@dataclass(frozen=True)
class CreateJwt:
    tenant: str
    username: str
    account_type: str
    target_site: str | None
    delegation: bool
    delegation_sub: str | None
    access_ttl: int | None
    refresh: bool
    refresh_ttl: int | None
    claims: dict[str, Any]
    permissions: list[str]
    minter: Principal

    @classmethod
    def parse(cls, body: dict[str, Any]) -> CreateJwt:
        account_type = body.get("account_type")
        if account_type not in ("user", "service"):
            raise BadRequest("account_type must be 'user' or 'service'")
        target_site = _text(body, "target_site", required=account_type == "service")
        delegation = _flag(body, "delegation")
        delegation_sub = None
        if delegation:
            sub_tenant = _text(body, "delegation_sub_tenant_id", required=True)
            sub_user = _text(body, "delegation_sub_username", required=True)
            delegation_sub = f"{sub_user}@{sub_tenant}"
        claims = body.get("claims") or {}
        if not isinstance(claims, dict):
            raise BadRequest("claims must be an object")
        reserved = reserved_claims(claims)
        if reserved:
            raise BadRequest(f"claims may not set reserved claims: {', '.join(reserved)}")
        return cls(
            tenant=_text(body, "tenant", required=True, max_len=63) or "",
            username=_text(body, "username", required=True) or "",
            account_type=account_type,
            target_site=target_site,
            delegation=delegation,
            delegation_sub=delegation_sub,
            access_ttl=_tapis_ttl(body, "access_ttl", "access_token_ttl"),
            refresh=_flag(body, "generate_refresh_token"),
            refresh_ttl=_tapis_ttl(body, "refresh_ttl", "refresh_token_ttl"),
            claims=claims,
            permissions=parse_permissions(body.get("permissions")),
            minter=parse_minter(body),
        )


def access_claims(request: CreateJwt, issuer: str, ttl: int, now: datetime) -> dict[str, Any]:
    """The Tapis access claim set, in the order CONTRACTS.md fixes."""
    claims: dict[str, Any] = {
        "jti": str(uuid.uuid4()),
        "iss": issuer,
        "sub": f"{request.username}@{request.tenant}",
        "tapis/tenant_id": request.tenant,
        "tapis/token_type": "access",
        "tapis/delegation": request.delegation,
        "tapis/delegation_sub": request.delegation_sub,
        "tapis/username": request.username,
        "tapis/account_type": request.account_type,
        "exp": int((now + timedelta(seconds=ttl)).timestamp()),
    }
    if request.target_site is not None:
        claims["tapis/target_site"] = request.target_site
    claims.update(request.claims)
    if request.permissions:
        claims["tessera/permissions"] = request.permissions
    return claims


def refresh_claims(
    access: dict[str, Any], access_ttl: int, refresh_ttl: int, now: datetime
) -> dict[str, Any]:
    """The Tapis refresh claim set for an access claim set, in the order CONTRACTS.md fixes."""
    inner = {k: v for k, v in access.items() if k != "exp"}
    inner["ttl"] = access_ttl
    return {
        "jti": str(uuid.uuid4()),
        "iss": access["iss"],
        "sub": access["sub"],
        "tapis/initial_ttl": refresh_ttl,
        "tapis/tenant_id": access["tapis/tenant_id"],
        "tapis/token_type": "refresh",
        "exp": int((now + timedelta(seconds=refresh_ttl)).timestamp()),
        "tapis/access_token": inner,
    }


def rotated_pair(refresh: dict[str, Any], now: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pair a refresh token is exchanged for: new jtis and expiries, all else carried over."""
    inner = dict(refresh["tapis/access_token"])
    access_ttl = int(inner.pop("ttl"))
    exp = int((now + timedelta(seconds=access_ttl)).timestamp())
    access: dict[str, Any] = {}
    for name, value in inner.items():
        access[name] = value
        if name == "tapis/account_type":  # exp comes right after it, as in a fresh token
            access["exp"] = exp
    access["jti"] = str(uuid.uuid4())
    access.setdefault("exp", exp)
    return access, refresh_claims(access, access_ttl, int(refresh["tapis/initial_ttl"]), now)


def token_response(token: str, claims: dict[str, Any], ttl: int, key: str) -> dict[str, Any]:
    """One half of a Tapis NewTokenResponse."""
    from datetime import UTC

    expires = datetime.fromtimestamp(claims["exp"], UTC)
    return {key: token, "jti": claims["jti"], "expires_in": ttl, "expires_at": expires.isoformat()}


def encode_cursor(created_at: datetime, token_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{token_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, token_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created), uuid.UUID(token_id)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("cursor is not one this service gave out") from None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# A TokenRecord's fields, in the order record_json writes them.
RECORD_ORDER = (
    "id",
    "display_id",
    "tenant",
    "subject",
    "kind",
    "name",
    "permissions",
    "created_at",
    "expires_at",
    "last_used_at",
    "revoked_at",
    "created_by",
    "family_id",
    "kid",
)
RECORD_FIELDS = frozenset(RECORD_ORDER)
_TIMES = frozenset(("created_at", "expires_at", "last_used_at", "revoked_at"))
_UUIDS = frozenset(("id", "family_id"))


def record_fields(row: Any, fields: Sequence[str]) -> dict[str, Any]:
    """Only the named fields of a TokenRecord (each as :func:`record_json` writes it), for
    callers that list many and read few."""
    out: dict[str, Any] = {}
    for name in fields:
        value = row[name]
        if name in _TIMES:
            value = _iso(value)
        elif name in _UUIDS:
            value = str(value) if value else None
        elif name == "permissions":
            value = list(value)
        out[name] = value
    return out


def record_json(row: Any) -> dict[str, Any]:
    """A TokenRecord (docs/internal-api.md): never a secret."""
    return record_fields(row, RECORD_ORDER)


def principal_json(row: Any) -> dict[str, Any]:
    return {
        "tenant": row["tenant"],
        "subject": row["subject"],
        "token_id": str(row["id"]),
        "kind": row["kind"],
        "permissions": list(row["permissions"]),
        "expires_at": _iso(row["expires_at"]),
        "display_id": row["display_id"],
    }


def is_active(row: Any, now: datetime) -> bool:
    return row["revoked_at"] is None and (row["expires_at"] is None or row["expires_at"] > now)


# A used refresh token presented again inside the grace window gets its pair again, at most
# this many times; then it counts as reuse.
MAX_GRACE_RETRIES = 3


class RefreshStep(StrEnum):
    """What presenting a refresh token does, decided from its row (see :func:`refresh_step`)."""

    INVALID = "invalid"  # unknown, expired or revoked: refused
    ROTATE = "rotate"  # its first use: a new pair in the same family
    RETRY = "retry"  # used a moment ago: the same pair again (a client that lost the answer)
    REUSE = "reuse"  # used before, and not a retry: theft, the whole family is revoked


def refresh_step(row: Any, now: datetime, grace_seconds: int) -> RefreshStep:
    """The step a refresh token's row (None: no such token) calls for at ``now``."""
    if row is None or not is_active(row, now):
        return RefreshStep.INVALID
    if row["used_at"] is None:
        return RefreshStep.ROTATE
    within = now - row["used_at"] <= timedelta(seconds=grace_seconds)
    if within and row["retries"] < MAX_GRACE_RETRIES:
        return RefreshStep.RETRY
    return RefreshStep.REUSE
