"""``tessera token create``: mint one credential and print only it (via the issuer's API)."""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

import aiohttp

from shared.authz import OPERATOR
from shared.service import fail
from shared.settings import service_url

DIALECT_KIND = {"opaque": "opaque", "databricks": "databricks", "jobmanager": "jobmanager"}


async def _post(path: str, body: dict[str, Any]) -> Any:
    url = service_url(os.environ, "issuer") + path
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.post(url, json=body) as resp,
        ):
            payload = await resp.json(content_type=None)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        fail(f"cannot reach the issuer service at {url}: {type(exc).__name__}")
    if resp.status >= 400:
        message = payload.get("message") if isinstance(payload, dict) else payload
        fail(f"token not created ({resp.status}): {message}")
    return payload


def cmd_token_create(args: argparse.Namespace) -> int:
    if args.ttl is not None and args.ttl <= 0:
        fail("--ttl must be a positive number of seconds", 2)
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
        help="admin, tokens:create-any or keys:rotate (repeatable)",
    )
    create.add_argument(
        "--dialect", choices=("opaque", "databricks", "jobmanager", "tapis"), default="opaque"
    )
    create.add_argument("--ttl", type=int, help="lifetime in seconds (default: never expires)")
    create.add_argument("--name")
    create.set_defaults(func=cmd_token_create)
