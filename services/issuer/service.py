"""Issuing and checking credentials: opaque tokens, Tapis JWT pairs and refresh rotation."""

from __future__ import annotations

import hmac
import json
import math
import secrets
import uuid
from base64 import urlsafe_b64decode
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from services.issuer import store
from services.issuer.domain import (
    MAX_GRACE_RETRIES,
    OPAQUE_KINDS,
    CreateJwt,
    CreateOpaque,
    RefreshStep,
    access_claims,
    is_active,
    principal_json,
    record_json,
    refresh_claims,
    refresh_step,
    rotated_pair,
    token_response,
)
from services.issuer.errors import InvalidCredential
from services.issuer.events import refresh_reused
from services.issuer.tenants import TenantKeys
from services.issuer.writer import TokenWriter
from shared.authz import Mint, Principal, may_mint
from shared.bus.outbox import add_events
from shared.clients.keys import Signed
from shared.db import unit_of_work
from shared.errors import BadRequest, Forbidden, Unavailable
from shared.tokens import Pepper, classify, new_databricks_token, new_opaque_token

log = structlog.get_logger("tessera.issuer")
__all__ = ["MAX_GRACE_RETRIES", "authenticate", "create_opaque", "issue_jwt", "refresh"]


async def create_opaque(
    writer: TokenWriter, keys: TenantKeys, pepper: Pepper, request: CreateOpaque
) -> tuple[dict[str, Any], str]:
    """A new opaque token within the owner's quota: (its record, its value shown once)."""
    tenant = await keys.tenant(request.tenant)
    max_lifetime = tenant.lifetime_limit
    now = datetime.now(UTC)
    if request.expires_at is not None:
        # An exact instant (a jobmanager expiration): stored as asked, not re-derived from a
        # rounded number of seconds.
        expires_at = request.expires_at
        ttl = math.ceil((expires_at - now).total_seconds())
        if ttl <= 0:
            raise BadRequest("expires_at must be in the future")
        check_lifetime(ttl, max_lifetime, "expires_at")
    else:
        ttl = request.ttl_seconds or max_lifetime
        check_lifetime(ttl, max_lifetime, "ttl_seconds")
        expires_at = now + timedelta(seconds=ttl)
    check_mint(
        request.minter,
        Mint(request.tenant, request.subject, request.kind, frozenset(request.permissions), ttl),
        max_lifetime,
    )
    value = new_databricks_token() if request.kind == "databricks" else new_opaque_token()
    token = {
        "id": uuid.uuid4(),
        "display_id": secrets.token_hex(32) if request.kind == "databricks" else None,
        "tenant": request.tenant,
        "subject": request.subject,
        "kind": request.kind,
        "name": request.name,
        "permissions": request.permissions,
        "created_at": now,
        "expires_at": expires_at,
        "created_by": request.created_by,
        "secret_hash": pepper.hash(value),
    }
    [row] = await writer.insert([token], quota=tenant.token_quota)
    return record_json(row), value


def check_lifetime(ttl: int, max_lifetime: int, name: str) -> None:
    """Raise :class:`BadRequest`, naming ``name``, when ``ttl`` is over the maximum lifetime."""
    if ttl > max_lifetime:
        raise BadRequest(
            f"{name} must be at most the tenant's maximum lifetime, {max_lifetime} seconds"
        )


def check_mint(minter: Principal, mint: Mint, max_lifetime: int) -> None:
    """Re-check the minting rules here, whoever called: a credential never mints one with more
    than it holds (shared.authz.may_mint)."""
    decision = may_mint(minter, mint, max_lifetime)
    if not decision:
        log.warning("mint refused", minter=minter.actor, reason=decision.reason)
        raise Forbidden(f"not allowed: {decision.reason}")


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
    writer: TokenWriter, keys: TenantKeys, pepper: Pepper, request: CreateJwt
) -> dict[str, Any]:
    """A Tapis access token (and refresh token if asked), signed by the keys service."""
    tenant = await keys.tenant(request.tenant)
    now = datetime.now(UTC)
    max_lifetime = tenant.lifetime_limit
    access_ttl = request.access_ttl or tenant.access_ttl
    refresh_ttl = request.refresh_ttl or tenant.refresh_ttl
    check_lifetime(access_ttl, max_lifetime, "access_token_ttl")
    if request.refresh:
        check_lifetime(refresh_ttl, max_lifetime, "refresh_token_ttl")
    mint = Mint(
        request.tenant,
        request.username,
        "jwt_access",
        frozenset(request.permissions),
        max(access_ttl, refresh_ttl) if request.refresh else access_ttl,
        request.account_type,
    )
    check_mint(request.minter, mint, max_lifetime)
    access = access_claims(request, tenant.issuer, access_ttl, now)
    claim_sets = [access]
    if request.refresh:
        claim_sets.append(refresh_claims(access, access_ttl, refresh_ttl, now))
    signed = await keys.sign(request.tenant, claim_sets)
    tokens = signed.tokens
    family = uuid.uuid4() if request.refresh else None
    records = _jwt_records(
        request.tenant,
        request.username,
        request.permissions,
        list(zip(tokens, claim_sets, strict=True)),
        signed.kid,
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
    writer: TokenWriter,
    keys: TenantKeys,
    pepper: Pepper,
    value: str,
    *,
    grace_seconds: int,
) -> dict[str, Any]:
    """Exchange a refresh token for a new pair, once; a retry inside the grace window gets the
    same pair again (a few times); any other reuse revokes the whole family, durably: the
    family is marked revoked and ``token.refresh_reused`` is written to the outbox in the
    transaction that detects it, and the revocation service revokes it for every subscriber
    from that event, however long it was away.

    No row is locked while a signature is awaited: the token is read, what its step needs is
    signed, and only then is its row locked, its step decided again and claimed, in a short
    transaction. Two racing first uses both sign; one claims, and the other, finding the token
    used, goes round again as a retry of the winner's pair."""
    if classify(value) != "jwt":
        raise InvalidCredential("not a valid refresh token")
    hashes = pepper.candidate_hashes(value)
    now = datetime.now(UTC)
    # Each round that loses its claim saw the row move on (unused, used, reused or revoked):
    # it can do so three times at most, and a reuse or a refusal always ends the loop.
    for _ in range(4):
        async with pool.acquire() as conn:
            row = await store.fetch_refresh(conn, hashes, lock=False)
        step = refresh_step(row, now, grace_seconds)
        if step is RefreshStep.INVALID:
            raise InvalidCredential("not a valid refresh token")
        pair = None if step is RefreshStep.REUSE else await _sign_for(step, keys, row, value, now)
        async with unit_of_work(pool) as conn:
            row = await store.fetch_refresh(conn, hashes)
            if row is None or refresh_step(row, now, grace_seconds) is not step:
                continue
            if pair is not None:
                return await _claim(conn, writer, step, pepper, row, pair, now)
            revoked = await store.revoke_family(conn, row["family_id"], now)
            await add_events(conn, [refresh_reused(row, revoked)])
        log.warning(
            "refresh token reused: family revoked",
            tenant=row["tenant"],
            family_id=str(row["family_id"]),
            tokens=len(revoked),
        )
        raise InvalidCredential("refresh token already used; its family is revoked")
    raise Unavailable("the refresh token is changing too fast; try again")


# A pair to hand out: its claim sets (access, refresh) and their signature.
Pair = tuple[dict[str, Any], dict[str, Any], Signed]


async def _sign_for(
    step: RefreshStep, keys: TenantKeys, row: Any, value: str, now: datetime
) -> Pair:
    """The pair a rotation or a retry hands out, signed: a new one to rotate to, the one given
    before to a retry. Called with no transaction open."""
    if step is RefreshStep.ROTATE:
        access, refresh = rotated_pair(_payload(value), now)
    else:
        access, refresh = row["replaced_by"]["access"], row["replaced_by"]["refresh"]
    return access, refresh, await keys.sign(row["tenant"], [access, refresh])


async def _claim(
    conn: asyncpg.Connection,
    writer: TokenWriter,
    step: RefreshStep,
    pepper: Pepper,
    row: Any,
    pair: Pair,
    now: datetime,
) -> dict[str, Any]:
    """In the claiming transaction: record what ``step`` handed out; the answer."""
    access, refresh, signed = pair
    if step is RefreshStep.ROTATE:
        # The first use: a new pair in the same family.
        records = _jwt_records(
            row["tenant"],
            row["subject"],
            list(row["permissions"]),
            list(zip(signed.tokens, (access, refresh), strict=True)),
            signed.kid,
            row["family_id"],
            pepper,
            now,
        )
        await writer.insert_within(conn, records)
        await store.mark_used(conn, row["id"], now, {"access": access, "refresh": refresh})
    else:
        # A client retrying after a lost answer: the same claims, signed again. RS256 gives the
        # very tokens it missed; ECDSA signs differently each time, so the new copy of the
        # refresh token is recorded (as a keyed hash) to refresh like the first.
        await store.count_retry(conn, row["id"])
        await store.add_refresh_alias(
            conn, pepper.hash(signed.tokens[1]), uuid.UUID(refresh["jti"])
        )
    return _pair_response(signed.tokens, access, refresh)
