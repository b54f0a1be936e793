"""Factories for what tests build over and over: names, principals and their credentials'
headers, the issuer's internal create bodies, each dialect's public create body, JWT claims
and revoke requests.

Each returns plain data with sensible defaults; a test names only what it is about
(``token_body(tenant, kind="databricks", ttl_seconds=1)``) and keyword arguments override or
add fields. The shapes are the wire contracts' (CONTRACTS.md, docs/internal-api.md).
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.authz import Kind, Principal

JSON = {"Content-Type": "application/json"}
ISSUER = "https://tessera.example/v3/tokens"


# --- names -------------------------------------------------------------------------------------


def unique(prefix: str) -> str:
    """A name no other test uses: ``prefix-<8 hex>``."""
    return f"{prefix}-{secrets.token_hex(4)}"


def tenant_id() -> str:
    """A fresh tenant id (``t`` and 8 hex digits: a valid tenant name in every dialect)."""
    return f"t{secrets.token_hex(4)}"


# --- principals and credentials ----------------------------------------------------------------


def principal(
    kind: Kind | str = Kind.USER,
    tenant: str = "acme",
    subject: str = "alice",
    permissions: tuple[str, ...] | frozenset[str] = (),
    **fields: Any,
) -> Principal:
    """An authenticated caller (``shared.authz.Principal``): alice of acme, a plain user."""
    return Principal(Kind(kind), tenant, subject, frozenset(permissions), **fields)


def minter(
    kind: Kind | str = Kind.OPERATOR,
    tenant: str = "",
    subject: str = "",
    permissions: tuple[str, ...] = (),
    **fields: Any,
) -> dict[str, Any]:
    """The ``minter`` of an issuer create request: the operator unless told otherwise."""
    body: dict[str, Any] = {"kind": str(Kind(kind))}
    if tenant:
        body["tenant"] = tenant
    if subject:
        body["subject"] = subject
    if permissions:
        body["permissions"] = list(permissions)
    body.update(fields)
    return body


def bearer(token: str | None) -> dict[str, str]:
    """The Authorization header of a bearer credential (none for None)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def tapis_headers(token: str | None) -> dict[str, str]:
    """A JSON request carrying a Tapis JWT as Tapis clients send it (X-Tapis-Token)."""
    return {**JSON, **({"X-Tapis-Token": token} if token else {})}


def basic(user: str, secret: str) -> dict[str, str]:
    """HTTP Basic credentials."""
    encoded = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


# --- the issuer's internal API -----------------------------------------------------------------


def token_body(
    tenant: str, subject: str = "alice", kind: str = "opaque", **fields: Any
) -> dict[str, Any]:
    """``POST /internal/tokens``: an opaque, Databricks or jobmanager token, minted by the
    operator unless ``minter=`` says otherwise."""
    return {"tenant": tenant, "subject": subject, "kind": kind, "minter": minter(), **fields}


def jwt_body(
    tenant: str,
    username: str = "alice",
    *,
    account_type: str = "user",
    refresh: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """``POST /internal/jwt``: a Tapis access token (and refresh token with ``refresh``),
    minted by the operator unless ``minter=`` says otherwise."""
    body: dict[str, Any] = {
        "tenant": tenant,
        "username": username,
        "account_type": account_type,
        "minter": minter(),
    }
    if refresh:
        body["generate_refresh_token"] = True
    body.update(fields)
    return body


# --- each dialect's public create body ---------------------------------------------------------


def databricks_body(comment: str = "test", **fields: Any) -> dict[str, Any]:
    """Databricks ``POST /api/2.0/token/create``."""
    return {"comment": comment, **fields}


def tapis_body(
    tenant: str,
    username: str,
    *,
    account_type: str = "user",
    refresh: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """Tapis ``POST /v3/tokens`` (a service account needs ``target_site_id=``)."""
    body: dict[str, Any] = {
        "account_type": account_type,
        "token_tenant_id": tenant,
        "token_username": username,
    }
    if refresh:
        body["generate_refresh_token"] = True
    body.update(fields)
    return body


def lagrello_body(name: str | None = None, **fields: Any) -> dict[str, Any]:
    """Lagrello ``POST /v1/tokens``."""
    return {"tokenName": name or unique("t"), **fields}


def jobmanager_body(identity: str | None = None, **fields: Any) -> dict[str, Any]:
    """jobmanager ``POST /v1/api_access_token``."""
    return {"identity": identity or unique("jm"), **fields}


# --- JWT claims and revocations ----------------------------------------------------------------


def access_claims(
    tenant: str = "acme",
    *,
    issuer: str = ISSUER,
    username: str = "alice",
    ttl: float = 300,
    **overrides: Any,
) -> dict[str, Any]:
    """The claims of a Tapis access token of ``username@tenant`` expiring in ``ttl`` seconds;
    an override of None leaves that claim out."""
    claims: dict[str, Any] = {
        "jti": str(uuid.uuid4()),
        "iss": issuer,  # verifiers require the tenant's own issuer
        "sub": f"{username}@{tenant}",
        "tapis/tenant_id": tenant,
        "tapis/token_type": "access",
        "exp": int(time.time() + ttl),
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def revoke_jwt_body(
    tenant: str = "acme",
    *,
    jti: str | None = None,
    subject: str = "alice",
    expires_in: float = 3600,
    **extra: Any,
) -> dict[str, Any]:
    """A revocation service revoke request for a JWT the caller has verified."""
    expires_at = datetime.now(UTC) + timedelta(seconds=expires_in)
    return {
        "tenant": tenant,
        "jwt": {
            "jti": jti or str(uuid.uuid4()),
            "subject": subject,
            "expires_at": expires_at.isoformat(),
        },
        **extra,
    }
