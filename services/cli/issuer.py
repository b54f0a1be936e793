"""``tessera token create``: mint one credential and print only it (via the issuer's API).

The issuer is ``TESSERA_ISSUER_URL``, else the running ``tessera dev`` (found through its
descriptor, see ``shared.devstack``), else the default port on this machine.
"""

from __future__ import annotations

import argparse
from typing import Any

from shared.authz import OPERATOR
from shared.clients.issuer import IssuerClient, JwtRequest
from shared.clients.operator import operator_call
from shared.service import fail

DIALECT_KIND = {"opaque": "opaque", "databricks": "databricks", "jobmanager": "jobmanager"}
# CONTRACTS.md §0: Tessera's permissions, valid in every dialect.
PERMISSIONS = ("admin", "tokens:create-any", "keys:rotate")
# Lagrello's own names, meaningful only on the credential Lagrello uses (--dialect opaque).
LAGRELLO_PERMISSIONS = ("READ", "WRITE", "ADMIN")


def _check_permissions(permissions: list[str], dialect: str) -> None:
    """Refuse a misspelt permission (it would be stored and silently grant nothing)."""
    for permission in permissions:
        if permission in LAGRELLO_PERMISSIONS and dialect != "opaque":
            fail(
                f"--permission {permission} is a Lagrello permission: it needs --dialect opaque"
                " (the Lagrello credential)",
                2,
            )
        if permission not in PERMISSIONS + LAGRELLO_PERMISSIONS:
            fail(
                f"--permission {permission!r} is not a permission: use {', '.join(PERMISSIONS)}"
                f" (or, with --dialect opaque, Lagrello's {', '.join(LAGRELLO_PERMISSIONS)})",
                2,
            )


def cmd_token_create(args: argparse.Namespace) -> int:
    if args.ttl is not None and args.ttl <= 0:
        fail("--ttl must be a positive number of seconds", 2)
    _check_permissions(args.permission, args.dialect)
    if args.dialect == "tapis":
        request = JwtRequest(
            tenant=args.tenant,
            username=args.subject,
            account_type="user",
            minter=OPERATOR,
            permissions=tuple(args.permission),
            access_ttl=args.ttl,
        )
        result = operator_call(
            IssuerClient, lambda issuer: issuer.create_jwt(request), failed="token not created"
        )
        print(result["access_token"]["access_token"])
        return 0
    created = operator_call(
        IssuerClient,
        lambda issuer: issuer.create_token(
            args.tenant,
            args.subject,
            DIALECT_KIND[args.dialect],
            minter=OPERATOR,
            name=args.name or None,
            permissions=tuple(args.permission),
            ttl_seconds=args.ttl,
            created_by="operator",
        ),
        failed="token not created",
    )
    print(created.value)
    return 0


def register(sub: Any) -> None:
    token = sub.add_parser("token", help="mint credentials").add_subparsers(
        dest="token_command", required=True
    )
    create = token.add_parser("create", help="print one new credential and nothing else")
    create.add_argument("--tenant", required=True)
    create.add_argument("--subject", required=True)
    create.add_argument(
        "--permission",
        action="append",
        default=[],
        metavar="P",
        help="admin, tokens:create-any or keys:rotate; with --dialect opaque also Lagrello's"
        " READ, WRITE or ADMIN (repeatable; anything else is refused)",
    )
    create.add_argument(
        "--dialect",
        choices=("opaque", "databricks", "jobmanager", "tapis"),
        default="opaque",
        help="opaque (default): the generic Tessera token (tsr_…), which is the Lagrello"
        " credential; databricks: a dapi… token; jobmanager: a jobmanager API access token;"
        " tapis: a Tapis JWT access token",
    )
    create.add_argument(
        "--ttl",
        type=int,
        metavar="SECONDS",
        help="lifetime in seconds (default: a Tapis token gets the tenant's access TTL, any"
        " other credential the tenant's maximum lifetime)",
    )
    create.add_argument("--name")
    create.set_defaults(func=cmd_token_create)
