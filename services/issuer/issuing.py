"""Issuing and checking credentials: opaque tokens, Tapis JWT pairs and refresh rotation."""

from __future__ import annotations

import hmac
import json
import secrets
import uuid
from base64 import urlsafe_b64decode
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from aiohttp import ClientSession

from services.issuer import store
from services.issuer.domain import (
    OPAQUE_KINDS,
    CreateJwt,
    CreateOpaque,
    access_claims,
    is_active,
    principal_json,
    record_json,
    refresh_claims,
    rotated_pair,
    token_response,
)
from services.issuer.errors import InvalidCredential
from services.issuer.events import token_issued
from services.issuer.tenants import KeysClient
from services.issuer.writer import TokenWriter
from shared.bus.outbox import add_event
from shared.errors import Unavailable
from shared.http import call_service
from shared.tokens import Pepper, classify, new_databricks_token, new_opaque_token

log = structlog.get_logger("tessera.issuer")


async def create_opaque(
    writer: TokenWriter, keys: KeysClient, pepper: Pepper, request: CreateOpaque
) -> tuple[dict[str, Any], str]:
    """A new opaque token within the owner's quota: (its record, its value shown once)."""
    tenant = await keys.tenant(request.tenant)
    value = new_databricks_token() if request.kind == "databricks" else new_opaque_token()
    now = datetime.now(UTC)
    token = {
        "id": uuid.uuid4(),
        "display_id": secrets.token_hex(32) if request.kind == "databricks" else None,
        "tenant": request.tenant,
        "subject": request.subject,
        "kind": request.kind,
        "name": request.name,
        "permissions": request.permissions,
        "created_at": now,
        "expires_at": now + timedelta(seconds=request.ttl_seconds) if request.ttl_seconds else None,
        "created_by": request.created_by,
        "secret_hash": pepper.hash(value),
    }
    [row] = await writer.insert([token], quota=int(tenant["token_quota"]))
    return record_json(row), value


async def authenticate(pool: asyncpg.Pool, pepper: Pepper, value: str) -> dict[str, Any]:
    """The principal an opaque token stands for, or :class:`InvalidCredential`."""
    if classify(value) not in ("opaque", "databricks"):
        raise InvalidCredential("not a valid credential")  # no database query for junk
    hashes = pepper.candidate_hashes(value)
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        row = await store.fetch_by_hash(conn, hashes, OPAQUE_KINDS)
        if row is None or not any(
            hmac.compare_digest(bytes(row["secret_hash"]), h) for h in hashes
        ):
            raise InvalidCredential("not a valid credential")
        if not is_active(row, now):
            raise InvalidCredential("not a valid credential")
        last = row["last_used_at"]
        if last is None or now - last > timedelta(seconds=60):
            await store.touch_last_used(conn, row["id"])
    return principal_json(row)


def _jwt_records(
    request_tenant: str,
    subject: str,
    permissions: list[str],
    signed: list[tuple[str, dict[str, Any]]],
    kid: str,
    family_id: uuid.UUID | None,
    pepper: Pepper,
    now: datetime,
) -> list[dict[str, Any]]:
    records = []
    for token, claims in signed:
        refresh = claims["tapis/token_type"] == "refresh"
        records.append(
            {
                "id": uuid.UUID(claims["jti"]),
                "tenant": request_tenant,
                "subject": subject,
                "kind": "jwt_refresh" if refresh else "jwt_access",
                "permissions": permissions,
                "created_at": now,
                "expires_at": datetime.fromtimestamp(claims["exp"], UTC),
                "family_id": family_id,
                "kid": kid,
                # Only a refresh token is ever presented back to us; keep its keyed hash.
                "secret_hash": pepper.hash(token) if refresh else None,
            }
        )
    return records


async def issue_jwt(
    writer: TokenWriter, keys: KeysClient, pepper: Pepper, request: CreateJwt
) -> dict[str, Any]:
    """A Tapis access token (and refresh token if asked), signed by the keys service."""
    tenant = await keys.tenant(request.tenant)
    now = datetime.now(UTC)
    access_ttl = request.access_ttl or int(tenant["access_ttl"])
    access = access_claims(request, tenant["issuer"], access_ttl, now)
    claim_sets = [access]
    refresh_ttl = request.refresh_ttl or int(tenant["refresh_ttl"])
    if request.refresh:
        claim_sets.append(refresh_claims(access, access_ttl, refresh_ttl, now))
    tokens, kid = await keys.sign(request.tenant, claim_sets)
    family = uuid.uuid4() if request.refresh else None
    records = _jwt_records(
        request.tenant,
        request.username,
        request.permissions,
        list(zip(tokens, claim_sets, strict=True)),
        kid,
        family,
        pepper,
        now,
    )
    await writer.insert(records)
    result = {"access_token": token_response(tokens[0], access, access_ttl, "access_token")}
    if request.refresh:
        result["refresh_token"] = token_response(
            tokens[1], claim_sets[1], refresh_ttl, "refresh_token"
        )
    return result


def _payload(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    body: dict[str, Any] = json.loads(urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return body


def _pair_response(
    tokens: list[str], access: dict[str, Any], refresh: dict[str, Any]
) -> dict[str, Any]:
    access_ttl = int(refresh["tapis/access_token"]["ttl"])
    return {
        "access_token": token_response(tokens[0], access, access_ttl, "access_token"),
        "refresh_token": token_response(
            tokens[1], refresh, int(refresh["tapis/initial_ttl"]), "refresh_token"
        ),
    }


async def refresh(
    pool: asyncpg.Pool,
    keys: KeysClient,
    pepper: Pepper,
    value: str,
    *,
    grace_seconds: int,
    session: ClientSession,
    revocation_url: str,
) -> dict[str, Any]:
    """Exchange a refresh token for a new pair, once; a retry inside the grace window gets the
    same pair again; any later reuse revokes the whole family."""
    if classify(value) != "jwt":
        raise InvalidCredential("not a valid refresh token")
    hashes = pepper.candidate_hashes(value)
    now = datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        row = await store.fetch_by_hash(conn, hashes, ("jwt_refresh",), lock=True)
        if row is None or not is_active(row, now):
            raise InvalidCredential("not a valid refresh token")
        if row["used_at"] is None:
            access, new_refresh = rotated_pair(_payload(value), now)
            tokens, kid = await keys.sign(row["tenant"], [access, new_refresh])
            records = _jwt_records(
                row["tenant"],
                row["subject"],
                list(row["permissions"]),
                [(tokens[0], access), (tokens[1], new_refresh)],
                kid,
                row["family_id"],
                pepper,
                now,
            )
            for record in records:
                await add_event(conn, token_issued(await store.insert_token(conn, record)))
            await store.mark_used(conn, row["id"], now, {"access": access, "refresh": new_refresh})
            return _pair_response(tokens, access, new_refresh)
        if now - row["used_at"] <= timedelta(seconds=grace_seconds):
            # A client retrying after a lost answer: the same claims, signed again. RS256 is
            # deterministic, so the tokens are the very ones it missed.
            pair = row["replaced_by"]
            tokens, _ = await keys.sign(row["tenant"], [pair["access"], pair["refresh"]])
            return _pair_response(tokens, pair["access"], pair["refresh"])
        tenant, family = row["tenant"], row["family_id"]
    # Reuse: the revocation service resolves the family through us (so while its tokens are
    # still active here) and tells every subscriber; then we mark them revoked ourselves too.
    log.warning("refresh token reused: revoking its family", tenant=tenant, family_id=str(family))
    await _announce_family_revoked(session, revocation_url, tenant, family)
    async with pool.acquire() as conn:
        await store.revoke_family(conn, family, now)
    raise InvalidCredential("refresh token already used; its family is revoked")


async def _announce_family_revoked(
    session: ClientSession, revocation_url: str, tenant: str, family: uuid.UUID
) -> None:
    """Tell the revocation service, so every subscriber refuses the family's tokens too."""
    try:
        status, _ = await call_service(
            session,
            "POST",
            f"{revocation_url}/internal/revocations",
            service="revocation",
            json_body={"tenant": tenant, "family_id": str(family), "reason": "refresh_reuse"},
        )
        if status >= 400:
            log.error("revocation of a reused family refused", status=status, family_id=str(family))
    except Unavailable:
        log.error("revocation service unreachable; family revoked here only", family_id=str(family))
