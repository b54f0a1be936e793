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
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from shared.clients.keys import KeysClient
from shared.clients.operator import operator_call
from shared.devstack import with_stack_secrets
from shared.ids import TENANT_ID_TEXT, is_kid, is_tenant_id
from shared.service import fail

T = TypeVar("T")


def _keys(call: Callable[[KeysClient], Awaitable[T]], what: str) -> T:
    return operator_call(KeysClient, call, failed=f"{what} failed")


def _checked(tenant: str, kid: str | None = None) -> None:
    """Refuse a malformed tenant id or kid before any call, saying what one looks like."""
    if not is_tenant_id(tenant) or (kid is not None and not is_kid(kid)):
        fail(f"malformed tenant id or kid: a tenant id matches {TENANT_ID_TEXT}")


def _print(payload: Any) -> int:
    print(json.dumps(payload, indent=2))
    return 0


def cmd_tenant_create(args: argparse.Namespace) -> int:
    settings: dict[str, Any] = {"alg": args.alg}
    if args.issuer:
        settings["issuer"] = args.issuer
    for name in ("access_ttl", "refresh_ttl", "token_quota", "max_lifetime"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    tenant = _keys(lambda keys: keys.create_tenant(args.id, **settings), "tenant create")
    return _print(tenant.to_json())


def cmd_tenant_list(_args: argparse.Namespace) -> int:
    tenants = _keys(lambda keys: keys.tenants(), "tenant list")
    return _print({"tenants": [t.to_json() for t in tenants]})


def cmd_tenant_show(args: argparse.Namespace) -> int:
    _checked(args.id)

    async def show(keys: KeysClient) -> dict[str, Any]:
        tenant = await keys.tenant(args.id)
        if tenant is None:
            fail(f"tenant show failed (404): unknown tenant {args.id!r}")
        return {**tenant.to_json(), "keys": await keys.keys(args.id)}

    return _print(_keys(show, "tenant show"))


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    _checked(args.tenant)
    rotation = _keys(lambda keys: keys.rotate(args.tenant, immediate=args.immediate), "rotate")
    return _print(rotation.to_json())


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    _checked(args.tenant, args.kid)
    return _print(_keys(lambda keys: keys.revoke_key(args.tenant, args.kid), "key revoke"))


def cmd_keys_rewrap(_args: argparse.Namespace) -> int:
    from services.keys.crypto import KeyDecryptionError, Keyring
    from services.keys.service import rewrap
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
