"""Who may do what: principals, named actions and the one table that decides.

Authentication says who is calling (a :class:`Principal`); this module alone says whether that
principal may perform an :class:`Action` on a :class:`Target`. Handlers name the action they
are about to perform and ask :func:`allowed`; nothing else in them is about rights. The same
table, and :func:`may_mint` for what a minted credential may hold, is used by the gateway and
re-checked by the issuer. docs/authorization.md is this module written for operators.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class Kind(StrEnum):
    """The kinds of principal. Refresh tokens are never principals."""

    USER = "user"  # a person's credential: opaque, Databricks, Lagrello, Tapis user JWT
    SERVICE = "service"  # a Tapis service account (a JWT with account_type "service")
    JOBMANAGER = "jobmanager"  # a jobmanager service identity: its own namespace
    OPERATOR = "operator"  # the operator CLI
    ANONYMOUS = "anonymous"  # no credential at all


ADMIN = "admin"
CREATE_ANY = "tokens:create-any"
ROTATE = "keys:rotate"
# Lagrello's own permission names; its ADMIN is the token-generator right (CONTRACTS.md §0).
LAGRELLO = ("READ", "WRITE", "ADMIN")
PERMISSIONS = (ADMIN, CREATE_ANY, ROTATE, *LAGRELLO)
# What each permission implies. READ is every credential's (Lagrello grants it always).
_IMPLIES: Mapping[str, frozenset[str]] = {
    ADMIN: frozenset(PERMISSIONS),
    CREATE_ANY: frozenset({CREATE_ANY, "ADMIN", "WRITE", "READ"}),
    "ADMIN": frozenset({CREATE_ANY, "ADMIN", "WRITE", "READ"}),
    ROTATE: frozenset({ROTATE}),
    "WRITE": frozenset({"WRITE"}),
    "READ": frozenset({"READ"}),
}


def rights(permissions: Iterable[str]) -> frozenset[str]:
    """Every right a set of permissions holds, implications included (unknown names none)."""
    held: set[str] = {"READ"}
    for permission in permissions:
        held |= _IMPLIES.get(permission, frozenset())
    return frozenset(held)


class Action(StrEnum):
    """Every operation of every dialect and of the operator CLI."""

    TOKEN_CREATE = "token.create"  # mint a credential for oneself
    TOKEN_CREATE_FOR_OTHER = "token.create_for_other"  # for another subject or account type
    TOKEN_LIST = "token.list"  # list tokens (one's own, or the tenant's Lagrello tokens)
    TOKEN_DELETE = "token.delete"  # delete / revoke one's own token
    TOKEN_DELETE_ANY = "token.delete_any"  # delete / revoke another subject's token
    TOKEN_INTROSPECT = "token.introspect"  # RFC 7662, within one's tenant
    TOKEN_REFRESH = "token.refresh"  # exchange a refresh token (possession is the proof)
    TOKEN_REVOKE_PRESENTED = "token.revoke_presented"  # Tapis revoke: possession is the proof
    JOBMANAGER_CREATE = "jobmanager.create"  # from an internal network, no credential
    JOBMANAGER_REVOKE = "jobmanager.revoke"  # from an internal network, with the token
    KEYS_ROTATE = "keys.rotate"  # Tapis update_keys, `tessera keys rotate`
    KEYS_REVOKE = "keys.revoke"  # a compromised key: `tessera keys revoke`
    KEYS_REWRAP = "keys.rewrap"  # `tessera keys rewrap`
    TENANT_CREATE = "tenant.create"  # `tessera tenant create`
    TENANT_READ = "tenant.read"  # `tessera tenant list|show`
    JWKS_READ = "jwks.read"  # a tenant's public keys
    REVOCATIONS_READ = "revocations.read"  # the revocation feed and snapshot


@dataclass(frozen=True)
class Rule:
    """Who may perform an action: the principal kinds, the right needed (None: none), whether
    the target must be the principal's own, and the kinds that may act across tenants."""

    kinds: frozenset[Kind]
    permission: str | None = None
    own_only: bool = False
    cross_tenant: frozenset[Kind] = frozenset()
    internal_network: bool = False  # the caller must be on an internal network


_PEOPLE = frozenset({Kind.USER, Kind.SERVICE})
_OPERATOR = frozenset({Kind.OPERATOR})
_ANYONE = frozenset(Kind)

TABLE: Mapping[Action, Rule] = {
    Action.TOKEN_CREATE: Rule(_PEOPLE | _OPERATOR, own_only=True),
    Action.TOKEN_CREATE_FOR_OTHER: Rule(_PEOPLE | _OPERATOR, permission=CREATE_ANY),
    Action.TOKEN_LIST: Rule(_PEOPLE | _OPERATOR),
    Action.TOKEN_DELETE: Rule(_PEOPLE | {Kind.JOBMANAGER} | _OPERATOR, own_only=True),
    Action.TOKEN_DELETE_ANY: Rule(_PEOPLE | _OPERATOR, permission=CREATE_ANY),
    Action.TOKEN_INTROSPECT: Rule(_PEOPLE | {Kind.JOBMANAGER} | _OPERATOR),
    Action.TOKEN_REFRESH: Rule(_ANYONE),
    Action.TOKEN_REVOKE_PRESENTED: Rule(_ANYONE),
    Action.JOBMANAGER_CREATE: Rule(frozenset({Kind.ANONYMOUS}), internal_network=True),
    Action.JOBMANAGER_REVOKE: Rule(frozenset({Kind.ANONYMOUS}), internal_network=True),
    Action.KEYS_ROTATE: Rule(
        _PEOPLE | _OPERATOR, permission=ROTATE, cross_tenant=frozenset({Kind.SERVICE})
    ),
    Action.KEYS_REVOKE: Rule(_OPERATOR),
    Action.KEYS_REWRAP: Rule(_OPERATOR),
    Action.TENANT_CREATE: Rule(_OPERATOR),
    Action.TENANT_READ: Rule(_OPERATOR),
    Action.JWKS_READ: Rule(_ANYONE),
    Action.REVOCATIONS_READ: Rule(_PEOPLE | {Kind.JOBMANAGER} | _OPERATOR),
}


class OwnedRecord(Protocol):
    """What an owner is read from: a token record's tenant, subject and kind."""

    @property
    def tenant(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def kind(self) -> str: ...


def namespace_of(token_kind: str | None) -> str:
    """Whose names a token's subject is in: jobmanager identities have their own."""
    return "jobmanager" if token_kind == "jobmanager" else "user"


@dataclass(frozen=True)
class Target:
    """What an action is performed on: a tenant, and for one token or a mint its owner."""

    tenant: str | None = None
    subject: str | None = None
    namespace: str = "user"
    account_type: str | None = None  # Tapis mints: the account type asked for

    @classmethod
    def of_record(cls, record: OwnedRecord) -> Target:
        """The owner of an issuer TokenRecord (``shared.clients.issuer.TokenRecord``)."""
        return cls(
            tenant=record.tenant, subject=record.subject, namespace=namespace_of(record.kind)
        )


@dataclass(frozen=True)
class Principal:
    """Who is calling, as authenticated: never taken from anything the caller merely says."""

    kind: Kind
    tenant: str  # "" for the operator and anonymous callers, who belong to no tenant
    subject: str
    permissions: frozenset[str] = frozenset()
    token_id: str = ""
    token_kind: str | None = None  # the credential's kind: opaque, databricks, jwt_access, …
    expires_at: datetime | None = None
    display_id: str | None = None
    account_type: str | None = None  # Tapis JWTs: "user" or "service"
    internal_network: bool = False
    rights: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rights", rights(self.permissions))

    @property
    def namespace(self) -> str:
        """Whose names the subject is in: jobmanager identities have their own."""
        return "jobmanager" if self.kind is Kind.JOBMANAGER else "user"

    @property
    def actor(self) -> str:
        """How the audit trail names this principal."""
        if self.kind is Kind.OPERATOR:
            return "operator"
        if self.kind is Kind.ANONYMOUS:
            return f"anonymous@{self.subject}"
        prefix = "jobmanager:" if self.kind is Kind.JOBMANAGER else ""
        return f"{prefix}{self.subject}@{self.tenant}"

    def owns(self, target: Target) -> bool:
        """Whether the target is this principal's own (same tenant, name and namespace)."""
        return (
            target.tenant == self.tenant
            and target.subject == self.subject
            and target.namespace == self.namespace
            and (
                target.account_type is None
                or self.account_type is None
                or target.account_type == self.account_type
            )
        )

    def to_json(self) -> dict[str, Any]:
        """The minter as the issuer's internal API takes it (``minter``)."""
        return {
            "kind": str(self.kind),
            "tenant": self.tenant,
            "subject": self.subject,
            "permissions": sorted(self.permissions),
            "account_type": self.account_type,
            "internal_network": self.internal_network,
        }

    @classmethod
    def from_json(cls, body: Any) -> Principal:
        """A ``minter`` from an internal request; ValueError when malformed."""
        if not isinstance(body, dict):
            raise ValueError("minter must be an object")
        kind = Kind(str(body.get("kind")))
        tenant, subject = body.get("tenant") or "", body.get("subject", "")
        permissions = body.get("permissions") or []
        account_type = body.get("account_type")
        if not isinstance(tenant, str):
            raise ValueError("minter.tenant must be a string")
        if not isinstance(subject, str) or not isinstance(permissions, list):
            raise ValueError("minter.subject must be a string, permissions a list")
        if not all(isinstance(p, str) for p in permissions):
            raise ValueError("minter.permissions must be strings")
        if account_type is not None and account_type not in ("user", "service"):
            raise ValueError("minter.account_type must be user or service")
        if kind not in (Kind.OPERATOR, Kind.ANONYMOUS) and not tenant:
            raise ValueError("minter.tenant is required")
        return cls(
            kind=kind,
            tenant=tenant,
            subject=subject,
            permissions=frozenset(permissions),
            account_type=account_type,
            internal_network=body.get("internal_network") is True,
        )


OPERATOR = Principal(Kind.OPERATOR, "", "operator", frozenset({ADMIN}))


@dataclass(frozen=True)
class Decision:
    """An answer of :func:`allowed`: truthy when allowed; a refusal says why (for logs only:
    a refusal reveals nothing to the caller)."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


ALLOW = Decision(True)


def allowed(principal: Principal, action: Action, target: Target | None = None) -> Decision:
    """Whether ``principal`` may perform ``action`` on ``target``: the one place that decides."""
    rule = TABLE[action]
    if principal.kind not in rule.kinds:
        return Decision(False, f"a {principal.kind} principal may not {action}")
    if rule.internal_network and not principal.internal_network:
        return Decision(False, f"{action} is only for internal networks")
    if principal.kind is Kind.OPERATOR:
        return ALLOW
    target = target or Target()
    if (
        target.tenant is not None
        and principal.kind is not Kind.ANONYMOUS
        and target.tenant != principal.tenant
        and principal.kind not in rule.cross_tenant
    ):
        return Decision(False, f"{action} on another tenant")
    if rule.own_only and not principal.owns(target):
        return Decision(False, f"{action} on what is not the caller's own")
    if rule.permission is not None and rule.permission not in principal.rights:
        return Decision(False, f"{action} needs {rule.permission}")
    return ALLOW


def create_action(principal: Principal, target: Target) -> Action:
    """Minting for oneself, or for another subject or account type."""
    return Action.TOKEN_CREATE if principal.owns(target) else Action.TOKEN_CREATE_FOR_OTHER


def delete_action(principal: Principal, target: Target) -> Action:
    """Deleting one's own token, or another subject's."""
    return Action.TOKEN_DELETE if principal.owns(target) else Action.TOKEN_DELETE_ANY


# The tenant's maximum credential lifetime when it sets none: Databricks' default, 2 years.
DEFAULT_MAX_LIFETIME = 2 * 365 * 86400


@dataclass(frozen=True)
class Mint:
    """A credential about to be minted: for whom, of what kind, with what, for how long."""

    tenant: str
    subject: str
    token_kind: str
    permissions: frozenset[str]
    lifetime: int | None  # seconds; None: no expiry asked
    account_type: str | None = None


def may_mint(minter: Principal, mint: Mint, max_lifetime: int) -> Decision:
    """Whether ``minter`` may mint ``mint``: never more than it holds (permissions ⊆ its
    rights, its own tenant), never beyond the tenant's maximum lifetime, and a jobmanager
    token only from the jobmanager API."""
    if mint.lifetime is None or mint.lifetime > max_lifetime:
        return Decision(False, f"the lifetime must be at most {max_lifetime} seconds")
    target = Target(mint.tenant, mint.subject, namespace_of(mint.token_kind), mint.account_type)
    if mint.token_kind == "jobmanager":
        if minter.kind is Kind.OPERATOR or (
            minter.kind is Kind.ANONYMOUS and minter.internal_network and not mint.permissions
        ):
            return ALLOW
        return Decision(False, "jobmanager tokens come only from the jobmanager API")
    if minter.kind is Kind.OPERATOR:
        return ALLOW
    decision = allowed(minter, create_action(minter, target), target)
    if not decision:
        return decision
    beyond = sorted(mint.permissions - minter.rights)
    if beyond:
        return Decision(False, f"a credential cannot grant what it does not hold: {beyond}")
    return ALLOW
