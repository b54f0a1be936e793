"""The issuer's token records, reached over internal HTTP (never its database)."""

from __future__ import annotations

from typing import Any

from aiohttp import ClientSession

from services.revocation.domain import Target, target_from_record
from services.revocation.errors import UnknownToken
from shared.errors import Unavailable
from shared.http import call_service, raise_for_service_error

# The revoke request's selector names and the issuer's query parameter for each.
_LOOKUP_PARAM = {"token_id": "id", "display_id": "display_id", "token": "value"}


class IssuerClient:
    """Resolves revoke selectors to :class:`Target` records through the issuer."""

    def __init__(self, session: ClientSession, base_url: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")

    async def lookup(self, tenant: str, selector: str, value: str) -> Target:
        """The one token ``token_id``/``display_id``/``token`` names, or :class:`UnknownToken`."""
        status, body = await call_service(
            self._session,
            "GET",
            f"{self._base}/internal/tokens/lookup",
            service="issuer",
            params={"tenant": tenant, _LOOKUP_PARAM[selector]: value},
        )
        if status == 404:
            raise UnknownToken("no such token")
        raise_for_service_error(status, body, "issuer")
        return _target(body, tenant)

    async def active(self, tenant: str, selector: str, value: str) -> list[Target]:
        """Every unrevoked, unexpired token of a subject, refresh family or signing key."""
        status, body = await call_service(
            self._session,
            "GET",
            f"{self._base}/internal/tokens/active",
            service="issuer",
            params={"tenant": tenant, selector: value},
        )
        if status == 404 and isinstance(body, dict) and body.get("error") == "unknown_tenant":
            raise_for_service_error(status, body, "issuer")
        if status == 404:
            return []
        raise_for_service_error(status, body, "issuer")
        tokens = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(tokens, list):
            raise Unavailable("the issuer service answered an unexpected body")
        return [_target(record, tenant) for record in tokens]


def _target(record: Any, tenant: str) -> Target:
    try:
        return target_from_record(record, tenant)
    except ValueError:
        raise Unavailable("the issuer service answered an unexpected body") from None
