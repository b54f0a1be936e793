"""``tessera token create``: mint one credential and print only it (via the issuer's API).

The issuer is ``TESSERA_ISSUER_URL``, else the running ``tessera dev`` (found through its
descriptor, see ``shared.devstack``), else the default port on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
from typing import Any

import aiohttp

from shared.authz import OPERATOR
from shared.devstack import operator_tls, service_endpoint
from shared.http import internal_session
from shared.service import fail
from shared.tls import ReloadingTls

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


async def _post(path: str, body: dict[str, Any]) -> Any:
    endpoint = service_endpoint(os.environ, "issuer")
    url = endpoint.url + path
    tls = ReloadingTls(operator_tls(os.environ))
    try:
        async with (
            internal_session(tls, timeout=30) as session,
            session.post(url, json=body) as resp,
        ):
            payload = await resp.json(content_type=None)
    except (aiohttp.ClientError, OSError, ValueError, ssl.SSLError) as exc:
        fail(
            f"cannot reach the issuer service at {endpoint.url} ({endpoint.source}):"
            f" {type(exc).__name__}"
        )
    if resp.status >= 400:
        message = payload.get("message") if isinstance(payload, dict) else payload
        fail(f"token not created ({resp.status}): {message}")
    return payload


def cmd_token_create(args: argparse.Namespace) -> int:
    if args.ttl is not None and args.ttl <= 0:
        fail("--ttl must be a positive number of seconds", 2)
    _check_permissions(args.permission, args.dialect)
    if args.dialect == "tapis":
        body: dict[str, Any] = {
            "tenant": args.tenant,
            "username": args.subject,
            "account_type": "user",
            "permissions": args.permission,
            "minter": OPERATOR.to_json(),
        }
        if args.ttl:
            body["access_ttl"] = args.ttl
        print(asyncio.run(_post("/internal/jwt", body))["access_token"]["access_token"])
        return 0
    body = {
        "tenant": args.tenant,
        "subject": args.subject,
        "kind": DIALECT_KIND[args.dialect],
        "permissions": args.permission,
        "ttl_seconds": args.ttl,
        "created_by": "operator",
        "minter": OPERATOR.to_json(),
    }
    if args.name:
        body["name"] = args.name
    print(asyncio.run(_post("/internal/tokens", body))["value"])
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
