"""``tessera tenant …`` and ``tessera keys …``: operator commands of the keys service.

Tenant and rotation commands call the running keys service (``TESSERA_KEYS_URL``, else the
running ``tessera dev`` found through its descriptor, see ``shared.devstack``); ``keys rewrap``
works on the database directly, with the KEKs of the environment (or, when none is set, the
running dev stack's database and dev secrets), while the service keeps running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
from typing import Any

import aiohttp
import asyncpg

from shared.devstack import operator_tls, service_endpoint, with_stack_secrets
from shared.http import internal_session
from shared.ids import TENANT_ID_TEXT, InvalidIdentifier, tenant_url
from shared.service import fail
from shared.tls import ReloadingTls


async def _call(method: str, path: str, body: Any = None) -> Any:
    endpoint = service_endpoint(os.environ, "keys")
    url = endpoint.url + path
    tls = ReloadingTls(operator_tls(os.environ))
    try:
        async with (
            internal_session(tls, timeout=30) as session,
            session.request(method, url, json=body) as resp,
        ):
            payload = await resp.json(content_type=None)
            if resp.status >= 400:
                message = payload.get("message") if isinstance(payload, dict) else payload
                fail(f"{method} {path} failed ({resp.status}): {message}")
            return payload
    except (aiohttp.ClientError, OSError, ValueError, ssl.SSLError) as exc:
        fail(
            f"cannot reach the keys service at {endpoint.url} ({endpoint.source}):"
            f" {type(exc).__name__}"
        )


def _tenant_path(tenant: str, *rest: str) -> str:
    """``/internal/tenants/{tenant}/…`` from checked, quoted segments."""
    try:
        return tenant_url("", tenant, *rest)
    except InvalidIdentifier:
        fail(f"malformed tenant id or kid: a tenant id matches {TENANT_ID_TEXT}")


def _print(payload: Any) -> int:
    print(json.dumps(payload, indent=2))
    return 0


def cmd_tenant_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"id": args.id, "alg": args.alg}
    if args.issuer:
        body["issuer"] = args.issuer
    for name in ("access_ttl", "refresh_ttl", "token_quota", "max_lifetime"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    return _print(asyncio.run(_call("POST", "/internal/tenants", body)))


def cmd_tenant_list(_args: argparse.Namespace) -> int:
    return _print(asyncio.run(_call("GET", "/internal/tenants")))


def cmd_tenant_show(args: argparse.Namespace) -> int:
    tenant = asyncio.run(_call("GET", _tenant_path(args.id)))
    keys = asyncio.run(_call("GET", _tenant_path(args.id, "keys")))
    return _print({**tenant, "keys": keys["keys"]})


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    body = {"immediate": args.immediate}
    result = asyncio.run(_call("POST", _tenant_path(args.tenant, "keys", "rotate"), body))
    return _print(result)


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    path = _tenant_path(args.tenant, "keys", args.kid, "revoke")
    return _print(asyncio.run(_call("POST", path)))


def cmd_keys_rewrap(_args: argparse.Namespace) -> int:
    from services.keys.crypto import KeyDecryptionError, Keyring
    from services.keys.rotation import rewrap
    from services.keys.settings import Settings
    from shared.db import create_pool, describe_database

    env, stack = with_stack_secrets(os.environ)
    settings = Settings.from_env(env)
    database_url = settings.common.database_url
    assert database_url is not None

    async def run() -> int:
        async with create_pool(database_url, min_size=1, max_size=2) as pool:
            return await rewrap(pool, Keyring(settings.keks))

    try:
        count = asyncio.run(run())
    except (OSError, asyncpg.PostgresError) as exc:
        fail(f"cannot reach the keys database at {describe_database(database_url)}: {exc}")
    except KeyDecryptionError as exc:
        where = f" (the KEKs of {stack.describe()})" if stack is not None else ""
        fail(f"rewrap stopped, nothing changed: {exc}{where}")
    print(f"rewrapped {count} signing key(s) under the current KEK")
    return 0


def register(sub: Any) -> None:
    tenant = sub.add_parser("tenant", help="manage tenants").add_subparsers(
        dest="tenant_command", required=True
    )
    create = tenant.add_parser("create", help="create a tenant and its first signing key")
    create.add_argument("id")
    create.add_argument("--issuer", help="JWT issuer URL (default <TESSERA_PUBLIC_URL>/v3/tokens)")
    create.add_argument("--alg", choices=("RS256", "ES256", "EdDSA"), default="RS256")
    create.add_argument("--access-ttl", dest="access_ttl", type=int)
    create.add_argument("--refresh-ttl", dest="refresh_ttl", type=int)
    create.add_argument("--token-quota", dest="token_quota", type=int)
    create.add_argument(
        "--max-lifetime",
        dest="max_lifetime",
        type=int,
        help="longest lifetime of any credential minted in the tenant, seconds (default 2 years)",
    )
    create.set_defaults(func=cmd_tenant_create)
    tenant.add_parser("list", help="list tenants").set_defaults(func=cmd_tenant_list)
    show = tenant.add_parser("show", help="show a tenant and its keys")
    show.add_argument("id")
    show.set_defaults(func=cmd_tenant_show)

    keys = sub.add_parser("keys", help="signing-key operations").add_subparsers(
        dest="keys_command", required=True
    )
    rotate = keys.add_parser("rotate", help="rotate a tenant's signing key")
    rotate.add_argument("--tenant", required=True)
    rotate.add_argument("--immediate", action="store_true", help="sign with the new key at once")
    rotate.set_defaults(func=cmd_keys_rotate)
    revoke = keys.add_parser("revoke", help="revoke a compromised key (its tokens die)")
    revoke.add_argument("--tenant", required=True)
    revoke.add_argument("--kid", required=True)
    revoke.set_defaults(func=cmd_keys_revoke)
    keys.add_parser(
        "rewrap",
        help="re-encrypt every key under TESSERA_KEK (old KEKs in TESSERA_KEK_PREVIOUS);"
        " with no KEK set, those of the running `tessera dev`",
    ).set_defaults(func=cmd_keys_rewrap)
