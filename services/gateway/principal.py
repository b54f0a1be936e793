"""Who is calling: the :class:`shared.authz.Principal` behind a verified JWT (an opaque
credential's comes from the issuer, ``shared.clients.issuer.principal_from_json``).

Refresh tokens are never principals: a refresh JWT is refused here, whatever the dialect.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.authz import Kind, Principal
from shared.errors import Unauthenticated

__all__ = ["Principal", "from_claims"]


def from_claims(claims: dict[str, Any]) -> Principal:
    """The principal of a verified Tessera JWT; :class:`Unauthenticated` for a refresh token
    or one without Tessera's claims."""
    if claims.get("tapis/token_type") != "access":
        raise Unauthenticated(
            "a refresh token is not a credential: send an access token",
            details={"reason": "refresh_token"},
        )
    try:
        permissions = claims.get("tessera/permissions") or []
        account_type = claims.get("tapis/account_type")
        return Principal(
            kind=Kind.SERVICE if account_type == "service" else Kind.USER,
            tenant=str(claims["tapis/tenant_id"]),
            subject=str(claims.get("tapis/username") or str(claims["sub"]).rsplit("@", 1)[0]),
            token_id=str(claims["jti"]),
            token_kind="jwt_access",
            permissions=frozenset(p for p in permissions if isinstance(p, str)),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            account_type=account_type if account_type in ("user", "service") else "user",
        )
    except (KeyError, TypeError, ValueError):
        raise Unauthenticated(
            "the token lacks Tessera's claims", details={"reason": "missing_claim"}
        ) from None
