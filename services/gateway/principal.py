"""Who is calling: the principal behind a verified credential, and what it may do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

ADMIN = "admin"
CREATE_ANY = "tokens:create-any"
ROTATE = "keys:rotate"
# Lagrello's own permission names; its ADMIN is the token-generator right of CONTRACTS.md §0.
LAGRELLO = ("READ", "WRITE", "ADMIN")


@dataclass(frozen=True)
class Principal:
    tenant: str
    subject: str
    token_id: str
    kind: str
    permissions: frozenset[str]
    expires_at: datetime | None
    display_id: str | None = None
    account_type: str | None = None

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.permissions

    @property
    def can_create_any(self) -> bool:
        return bool(self.permissions & {ADMIN, CREATE_ANY, "ADMIN"})

    @property
    def can_rotate_keys(self) -> bool:
        return bool(self.permissions & {ADMIN, ROTATE})

    @property
    def actor(self) -> str:
        return f"{self.subject}@{self.tenant}"

    @classmethod
    def from_issuer(cls, body: dict[str, Any]) -> Principal:
        expires = body.get("expires_at")
        return cls(
            tenant=str(body["tenant"]),
            subject=str(body["subject"]),
            token_id=str(body["token_id"]),
            kind=str(body["kind"]),
            permissions=frozenset(body.get("permissions") or ()),
            expires_at=datetime.fromisoformat(expires) if expires else None,
            display_id=body.get("display_id"),
        )

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Principal:
        from datetime import UTC

        permissions = claims.get("tessera/permissions") or []
        return cls(
            tenant=str(claims["tapis/tenant_id"]),
            subject=str(claims.get("tapis/username") or str(claims["sub"]).rsplit("@", 1)[0]),
            token_id=str(claims["jti"]),
            kind="jwt_refresh" if claims.get("tapis/token_type") == "refresh" else "jwt_access",
            permissions=frozenset(p for p in permissions if isinstance(p, str)),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
            account_type=claims.get("tapis/account_type"),
        )
