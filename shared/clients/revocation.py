"""The revocation service's API (docs/internal-api.md, "revocation"): revoking, and the feed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.clients.base import ServiceClient, checked_tenant


@dataclass(frozen=True)
class VerifiedJwt:
    """A JWT the caller has verified, named by what the revocation service needs of it."""

    jti: str
    subject: str | None
    expires_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        """The shape the revocation service takes (``expires_at`` in ISO 8601, or null)."""
        return {
            "jti": self.jti,
            "subject": self.subject,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


@dataclass(frozen=True)
class Revoked:
    """The revocation of each token named (Revocation objects, as the feed carries them) and
    how many of them are new."""

    revocations: list[dict[str, Any]]
    created: int


class RevocationClient(ServiceClient):
    """``/internal/revocations…`` of the revocation service."""

    service = "revocation"

    async def revoke(
        self,
        tenant: str,
        *,
        token_id: str | None = None,
        display_id: str | None = None,
        family_id: str | None = None,
        subject: str | None = None,
        kid: str | None = None,
        jwt: VerifiedJwt | None = None,
        owner: str | None = None,
        reason: str | None = None,
        actor: str | None = None,
    ) -> Revoked:
        """Revoke what exactly one selector names (``owner``: only if it is this subject's);
        revoking again returns the same revocations with ``created`` 0."""
        selectors: dict[str, Any] = {
            "token_id": token_id,
            "display_id": display_id,
            "family_id": family_id,
            "subject": subject,
            "kid": kid,
            "jwt": jwt.to_json() if jwt is not None else None,
        }
        given = {name: value for name, value in selectors.items() if value is not None}
        if len(given) != 1:
            raise ValueError("give exactly one selector")
        extra = {"owner": owner, "reason": reason, "actor": actor}
        body = {
            "tenant": checked_tenant(tenant),
            **given,
            **{name: value for name, value in extra.items() if value is not None},
        }
        answer = await self.call("POST", "revocations", json=body)
        try:
            revocations, created = answer["revocations"], answer["created"]
        except (KeyError, TypeError):
            raise self.unexpected() from None
        if not isinstance(revocations, list) or not isinstance(created, int):
            raise self.unexpected()
        if not all(isinstance(r, dict) for r in revocations):
            raise self.unexpected()
        return Revoked(revocations, created)

    async def feed(
        self, tenant: str, *, since: int | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """One page of the tenant's revocation feed, as the service answers it."""
        params = _params(tenant, since=since, limit=limit)
        return await self._page(params)

    async def snapshot(
        self,
        tenant: str,
        *,
        after_seq: int | None = None,
        limit: int | None = None,
        as_of: int | None = None,
        compact: bool = False,
    ) -> dict[str, Any]:
        """One page of the tenant's revocation snapshot, as the service answers it."""
        params = _params(tenant, after_seq=after_seq, limit=limit, as_of=as_of)
        params["format"] = "compact" if compact else "full"
        return await self._page(params, "snapshot")

    async def _page(self, params: dict[str, str], *page: str) -> dict[str, Any]:
        body = await self.call("GET", "revocations", *page, params=params)
        if not isinstance(body, dict):
            raise self.unexpected()
        return body


def _params(tenant: str, **numbers: int | None) -> dict[str, str]:
    params = {"tenant": checked_tenant(tenant)}
    params.update({name: str(value) for name, value in numbers.items() if value is not None})
    return params
