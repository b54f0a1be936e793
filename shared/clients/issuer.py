"""The issuer service's API (docs/internal-api.md, "issuer"): minting, authenticating and
reading token records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.authz import Kind, Principal
from shared.batching import Batcher
from shared.clients.base import ServiceClient, checked_tenant
from shared.errors import NotFound, Unauthenticated
from shared.ids import DISPLAY_ID, TOKEN_ID


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class TokenSummary:
    """What an owner's token list shows of a token (``SUMMARY_FIELDS``)."""

    id: str
    display_id: str | None
    name: str | None
    created_at: datetime
    expires_at: datetime | None

    @classmethod
    def from_json(cls, body: Any) -> TokenSummary:
        """KeyError / TypeError / ValueError for a body that is not a TokenSummary."""
        return cls(
            id=str(body["id"]),
            display_id=_text(body.get("display_id")),
            name=_text(body.get("name")),
            created_at=datetime.fromisoformat(body["created_at"]),
            expires_at=_time(body.get("expires_at")),
        )


SUMMARY_FIELDS = ["id", "display_id", "name", "created_at", "expires_at"]


@dataclass(frozen=True)
class TokenRecord:
    """A TokenRecord: everything the issuer keeps about a token but its secret."""

    id: str
    display_id: str | None
    tenant: str
    subject: str
    kind: str
    name: str | None
    permissions: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_by: str | None
    family_id: str | None
    kid: str | None

    @classmethod
    def from_json(cls, body: Any) -> TokenRecord:
        """KeyError / TypeError / ValueError for a body that is not a TokenRecord."""
        return cls(
            id=str(body["id"]),
            display_id=_text(body.get("display_id")),
            tenant=str(body["tenant"]),
            subject=str(body["subject"]),
            kind=str(body["kind"]),
            name=_text(body.get("name")),
            permissions=tuple(str(p) for p in body.get("permissions") or ()),
            created_at=datetime.fromisoformat(body["created_at"]),
            expires_at=_time(body.get("expires_at")),
            last_used_at=_time(body.get("last_used_at")),
            revoked_at=_time(body.get("revoked_at")),
            created_by=_text(body.get("created_by")),
            family_id=_text(body.get("family_id")),
            kid=_text(body.get("kid")),
        )

    def expired(self, now: datetime | None = None) -> bool:
        """Whether its expiry has passed (a token without one never expires)."""
        return self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC))


@dataclass(frozen=True)
class TokenPage:
    """One page of a tenant's token records; ``next_cursor`` asks for the next (None: the last)."""

    tokens: list[TokenRecord]
    next_cursor: str | None


@dataclass(frozen=True)
class CreatedToken:
    """A new opaque credential: its record, and its value (shown this once, never logged)."""

    token: TokenRecord
    value: str = field(repr=False)


@dataclass(frozen=True)
class JwtRequest:
    """``POST /internal/jwt``: a Tapis access token (and a refresh token if asked) for
    ``username``, minted by ``minter``."""

    tenant: str
    username: str
    account_type: str
    minter: Principal
    generate_refresh_token: bool = False
    delegation: bool = False
    delegation_sub_tenant_id: str | None = None
    delegation_sub_username: str | None = None
    target_site: str | None = None
    access_ttl: int | None = None
    refresh_ttl: int | None = None
    claims: Mapping[str, Any] | None = None
    permissions: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The request body; optional members only when set, ``permissions`` only when not empty."""
        body: dict[str, Any] = {
            "tenant": self.tenant,
            "username": self.username,
            "account_type": self.account_type,
            "delegation": self.delegation,
            "generate_refresh_token": self.generate_refresh_token,
            "minter": self.minter.to_json(),
        }
        optional = {
            "delegation_sub_tenant_id": self.delegation_sub_tenant_id,
            "delegation_sub_username": self.delegation_sub_username,
            "target_site": self.target_site,
            "access_ttl": self.access_ttl,
            "refresh_ttl": self.refresh_ttl,
            "claims": dict(self.claims) if self.claims is not None else None,
        }
        body.update({name: value for name, value in optional.items() if value is not None})
        if self.permissions:
            body["permissions"] = list(self.permissions)
        return body


def principal_from_json(body: Any) -> Principal:
    """The principal of an opaque credential, as ``/internal/authenticate`` answers it."""
    token_kind = str(body["kind"])
    return Principal(
        kind=Kind.JOBMANAGER if token_kind == "jobmanager" else Kind.USER,
        tenant=str(body["tenant"]),
        subject=str(body["subject"]),
        token_id=str(body["token_id"]),
        token_kind=token_kind,
        permissions=frozenset(body.get("permissions") or ()),
        expires_at=_time(body.get("expires_at")),
        display_id=_text(body.get("display_id")),
    )


OwnerQuery = tuple[str, str, tuple[str, ...], int]


class IssuerClient(ServiceClient):
    """``/internal/tokens…``, ``/internal/jwt…`` and ``/internal/authenticate`` of the issuer.

    Owners' token lists asked for concurrently are coalesced into one request
    (``POST /internal/tokens/lists``)."""

    service = "issuer"

    def __init__(self, session: Any, base_url: str) -> None:
        super().__init__(session, base_url)
        self._owner_lists: Batcher[OwnerQuery, list[TokenSummary]] = Batcher(
            self._owner_lists_batch, max_batch=32, max_in_flight=1
        )

    async def create_token(
        self,
        tenant: str,
        subject: str,
        kind: str,
        *,
        minter: Principal,
        name: str | None = None,
        permissions: tuple[str, ...] = (),
        ttl_seconds: int | None = None,
        expires_at: datetime | None = None,
        created_by: str | None = None,
    ) -> CreatedToken:
        """A new opaque credential (``kind`` opaque, databricks or jobmanager) within its
        owner's quota (:class:`shared.errors.QuotaExceeded` past it). Without ``ttl_seconds``
        or ``expires_at`` it lives for the tenant's maximum lifetime."""
        body: dict[str, Any] = {
            "tenant": checked_tenant(tenant),
            "subject": subject,
            "kind": kind,
            "permissions": list(permissions),
            "minter": minter.to_json(),
        }
        optional = {
            "name": name,
            "ttl_seconds": ttl_seconds,
            "expires_at": expires_at.isoformat() if expires_at else None,
            "created_by": created_by,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        answer = await self.call("POST", "tokens", json=body)
        try:
            return CreatedToken(TokenRecord.from_json(answer["token"]), str(answer["value"]))
        except (KeyError, TypeError, ValueError):
            raise self.unexpected() from None

    async def create_jwt(self, request: JwtRequest) -> dict[str, Any]:
        """The Tapis ``NewTokenResponse`` result (the tokens and their expiries)."""
        checked_tenant(request.tenant)
        return await self._object("POST", "jwt", json=request.to_json())

    async def refresh_jwt(self, refresh_token: str) -> dict[str, Any]:
        """A new pair for a refresh token; :class:`Unauthenticated` for one unknown, expired,
        revoked or reused."""
        return await self._object("POST", "jwt", "refresh", json={"refresh_token": refresh_token})

    async def authenticate(self, token: str) -> Principal | None:
        """The principal behind an opaque credential; None when it is not a valid one."""
        try:
            body = await self.call("POST", "authenticate", json={"token": token})
        except Unauthenticated:
            return None
        try:
            return principal_from_json(body)
        except (KeyError, TypeError, ValueError):
            raise self.unexpected() from None

    async def lookup(
        self,
        tenant: str,
        *,
        token_id: str | None = None,
        display_id: str | None = None,
        value: str | None = None,
    ) -> TokenRecord | None:
        """The token of ``tenant`` one selector names (revoked and expired ones included);
        None when there is none (a malformed id: no call)."""
        selectors = {"id": token_id, "display_id": display_id, "value": value}
        given = {name: v for name, v in selectors.items() if v is not None}
        if len(given) != 1:
            raise ValueError("give exactly one of token_id, display_id or value")
        if (token_id is not None and not TOKEN_ID.fullmatch(token_id)) or (
            display_id is not None and not DISPLAY_ID.fullmatch(display_id)
        ):
            return None
        try:
            body = await self.call(
                "GET", "tokens", "lookup", params={"tenant": checked_tenant(tenant), **given}
            )
        except NotFound:
            return None
        return self._record(body)

    async def active(
        self,
        tenant: str,
        *,
        subject: str | None = None,
        family_id: str | None = None,
        kid: str | None = None,
    ) -> list[TokenRecord]:
        """Every unrevoked, unexpired token of a subject, refresh family or signing key."""
        selectors = {"subject": subject, "family_id": family_id, "kid": kid}
        given = {name: v for name, v in selectors.items() if v is not None}
        if len(given) != 1:
            raise ValueError("give exactly one of subject, family_id or kid")
        body = await self.call(
            "GET", "tokens", "active", params={"tenant": checked_tenant(tenant), **given}
        )
        return self._records(body)

    async def list_tokens(
        self,
        tenant: str,
        *,
        kinds: tuple[str, ...] | None = None,
        subject: str | None = None,
        limit: int = 20,
        offset: int = 0,
        cursor: str | None = None,
        include_inactive: bool = False,
    ) -> TokenPage:
        """One page of the tenant's tokens, newest first (active ones unless asked)."""
        params = {"tenant": checked_tenant(tenant), "limit": str(limit), "offset": str(offset)}
        if kinds is not None:
            params["kind"] = ",".join(kinds)
        if subject is not None:
            params["subject"] = subject
        if cursor is not None:
            params["cursor"] = cursor
        if include_inactive:
            params["include_inactive"] = "1"
        body = await self.call("GET", "tokens", params=params)
        cursor_next = body.get("next_cursor") if isinstance(body, dict) else None
        return TokenPage(self._records(body), cursor_next if isinstance(cursor_next, str) else None)

    async def owner_tokens(
        self, tenant: str, subject: str, kinds: tuple[str, ...], limit: int
    ) -> list[TokenSummary]:
        """One owner's active tokens of these kinds, newest first, as summaries. Concurrent
        calls share one request."""
        return await self._owner_lists.submit((checked_tenant(tenant), subject, kinds, limit))

    async def mark_revoked(self, revocations: list[dict[str, Any]]) -> int:
        """Have the issuer count these revocations (the revocation service's Revocation
        objects) now; how many of its tokens changed."""
        body = await self.call("POST", "tokens", "revoked", json={"revocations": revocations})
        marked = body.get("marked") if isinstance(body, dict) else None
        if not isinstance(marked, int):
            raise self.unexpected()
        return marked

    async def _owner_lists_batch(
        self, queries: list[OwnerQuery]
    ) -> list[list[TokenSummary] | Exception]:
        lists = [
            {"tenant": tenant, "subject": subject, "kinds": list(kinds), "limit": limit}
            for tenant, subject, kinds, limit in queries
        ]
        body = await self.call(
            "POST", "tokens", "lists", json={"lists": lists, "fields": SUMMARY_FIELDS}
        )
        try:
            results = [
                [TokenSummary.from_json(t) for t in found["tokens"]] for found in body["results"]
            ]
        except (KeyError, TypeError, ValueError):
            raise self.unexpected() from None
        if len(results) != len(queries):
            raise self.unexpected()
        return list(results)

    async def _object(self, method: str, *segments: str, json: Any) -> dict[str, Any]:
        body = await self.call(method, *segments, json=json)
        if not isinstance(body, dict):
            raise self.unexpected()
        return body

    def _record(self, body: Any) -> TokenRecord:
        try:
            return TokenRecord.from_json(body)
        except (KeyError, TypeError, ValueError):
            raise self.unexpected() from None

    def _records(self, body: Any) -> list[TokenRecord]:
        tokens = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(tokens, list):
            raise self.unexpected()
        return [self._record(t) for t in tokens]
