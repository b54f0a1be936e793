"""Private keys never appear in clear; a wrong KEK fails loudly; bad input writes nothing."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.keys.app import create_app
from services.keys.crypto import Keyring, private_from_der
from services.keys.settings import Settings
from shared.service import StartupError
from shared.settings import service_database_url
from tests.conftest import ROOT, private_env
from tests.integration.keys_support import call, running_keys

pytestmark = pytest.mark.integration
# The outbox drains on its own; audit_log keeps every event ever written, so it counts them.
TABLES = ("tenants", "signing_keys", "audit_log", "processed_events")


async def dump_database(url: str) -> bytes:
    """Every row of every table, as PostgreSQL's text form and as raw bytea values."""
    conn = await asyncpg.connect(url)
    try:
        chunks = []
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for table in tables:
            name = table["tablename"]
            for row in await conn.fetch(f'SELECT t::text AS text FROM "{name}" t'):
                chunks.append(row["text"].encode())
            for row in await conn.fetch(f'SELECT * FROM "{name}"'):
                chunks += [bytes(v) for v in row.values() if isinstance(v, bytes | memoryview)]
        return b"\n".join(chunks)
    finally:
        await conn.close()


def private_fragments(der: bytes) -> list[bytes]:
    """What would betray a private key: its DER, and its private numbers (raw and hex)."""
    key = private_from_der(der)
    numbers: list[int] = []
    if isinstance(key, rsa.RSAPrivateKey):
        n = key.private_numbers()
        numbers = [n.d, n.p, n.q]
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        numbers = [key.private_numbers().private_value]
    fragments = [der, der.hex().encode()]
    for number in numbers:
        raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
        fragments += [raw[:24], raw.hex().encode()[:48]]
    return fragments


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_no_private_key_material_in_clear_in_the_database(
    tessera_env: dict[str, str], alg: str
) -> None:
    env = private_env(tessera_env)
    async with running_keys(env) as (url, session):
        tenant = f"t-{uuid.uuid4().hex[:8]}"
        await call(session, "POST", f"{url}/internal/tenants", json={"id": tenant, "alg": alg})
        await call(
            session,
            "POST",
            f"{url}/internal/tenants/{tenant}/keys/rotate",
            json={"immediate": True},
        )
        await call(session, "POST", f"{url}/internal/tenants/{tenant}/keys/rotate", json={})
    database_url = service_database_url(env, "keys")
    dump = await dump_database(database_url)
    assert b"PRIVATE KEY" not in dump
    # Open each sealed key with the KEK (as only the keys service can) and look for any trace.
    keyring = Keyring(Settings.from_env(env).keks)
    conn = await asyncpg.connect(database_url)
    rows = await conn.fetch("SELECT kid, sealed_key, kek_id FROM signing_keys")
    await conn.close()
    assert len(rows) == 3
    for row in rows:
        der = keyring.decrypt(row["kid"], bytes(row["sealed_key"]), row["kek_id"])
        for fragment in private_fragments(der):
            assert fragment not in dump


async def test_a_wrong_kek_stops_the_service_loudly(tessera_env: dict[str, str]) -> None:
    env = private_env(tessera_env)
    async with running_keys(env) as (url, session):
        await call(session, "POST", f"{url}/internal/tenants", json={"id": "acme"})
    wrong = dict(env, TESSERA_KEK="w" * 40)
    server = TestServer(create_app(Settings.from_env(wrong)))
    with pytest.raises(StartupError, match="not configured"):
        await server.start_server()
    await server.close()
    # The same through the command line: one line, no traceback, non-zero exit.
    result = subprocess.run(
        [sys.executable, "-m", "services.keys"],
        env=dict(wrong, TESSERA_KEYS_PORT="0", TESSERA_KEYS_OPS_PORT="0"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "KEK" in result.stderr.strip().splitlines()[-1]


async def test_rewrap_moves_every_key_to_the_new_kek_while_the_service_runs(
    tessera_env: dict[str, str],
) -> None:
    env = private_env(tessera_env)
    new_kek = "n" * 40
    async with running_keys(env) as (url, session):
        await call(session, "POST", f"{url}/internal/tenants", json={"id": "acme"})
        await call(session, "POST", f"{url}/internal/tenants/acme/keys/rotate", json={})
        result = subprocess.run(
            [sys.executable, "-m", "services.cli", "keys", "rewrap"],
            env=dict(env, TESSERA_KEK=new_kek, TESSERA_KEK_PREVIOUS=env["TESSERA_KEK"]),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert result.returncode == 0, result.stderr
        assert "rewrapped 2" in result.stdout
        # The running service keeps signing throughout.
        status, _ = await call(
            session,
            "POST",
            f"{url}/internal/tenants/acme/sign",
            json={"claims": [{"sub": "a", "exp": int(time.time()) + 60}]},
        )
        assert status == 200
    conn = await asyncpg.connect(service_database_url(env, "keys"))
    kek_ids = {r["kek_id"] for r in await conn.fetch("SELECT kek_id FROM signing_keys")}
    await conn.close()
    assert kek_ids == {Keyring((new_kek,)).current.id}
    async with running_keys(dict(env, TESSERA_KEK=new_kek)) as (url, session):
        status, _ = await call(
            session, "POST", f"{url}/internal/tenants/acme/sign", json={"claims": [{"sub": "a"}]}
        )
        assert status == 200


async def test_bad_input_gets_a_clear_4xx_and_writes_nothing(tessera_env: dict[str, str]) -> None:
    env = private_env(tessera_env)
    async with running_keys(env) as (url, session):
        await call(session, "POST", f"{url}/internal/tenants", json={"id": "acme"})
        conn = await asyncpg.connect(service_database_url(env, "keys"))

        async def counts() -> dict[str, int]:
            return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}

        before = await counts()
        sign = f"{url}/internal/tenants/acme/sign"
        cases = [
            (
                "POST",
                f"{url}/internal/tenants/nope/sign",
                {"json": {"claims": [{}]}},
                404,
                "unknown_tenant",
            ),
            ("POST", sign, {"data": b"{not json"}, 400, "bad_request"),
            ("POST", sign, {"json": [1, 2]}, 400, "bad_request"),
            ("POST", sign, {"json": {"claims": {"sub": "x"}}}, 400, "invalid_claims"),
            ("POST", sign, {"json": {"claims": ["x"]}}, 400, "invalid_claims"),
            ("POST", sign, {"json": {"claims": []}}, 400, "invalid_claims"),
            ("POST", sign, {"json": {"claims": [{}] * 33}}, 400, "invalid_claims"),
            ("POST", sign, {"json": {"claims": [{"exp": "soon"}]}}, 400, "invalid_claims"),
            ("POST", sign, {"json": {"claims": [{"x": "y" * 9000}]}}, 400, "invalid_claims"),
            (
                "POST",
                sign,
                {"data": b'{"claims": "' + b"x" * (1024 * 1024 + 1) + b'"}'},  # over 1 MiB
                413,
                "payload_too_large",
            ),
            ("POST", f"{url}/internal/tenants/acme/keys/deadbeef/revoke", {}, 404, "unknown_kid"),
            (
                "POST",
                f"{url}/internal/tenants/nope/keys/rotate",
                {"json": {}},
                404,
                "unknown_tenant",
            ),
            (
                "POST",
                f"{url}/internal/tenants/acme/keys/rotate",
                {"json": {"immediate": "yes"}},
                400,
                "bad_request",
            ),
            ("GET", f"{url}/internal/tenants/nope/jwks", {}, 404, "unknown_tenant"),
            ("POST", f"{url}/internal/tenants", {"json": {"id": "Bad Id"}}, 400, "bad_request"),
            (
                "POST",
                f"{url}/internal/tenants",
                {"json": {"id": "ok", "alg": "HS256"}},
                400,
                "bad_request",
            ),
            (
                "POST",
                f"{url}/internal/tenants",
                {"json": {"id": "ok", "access_ttl": True}},
                400,
                "bad_request",
            ),
            (
                "POST",
                f"{url}/internal/tenants",
                {"json": {"id": "ok", "extra": 1}},
                400,
                "bad_request",
            ),
            ("POST", f"{url}/internal/tenants", {"json": {"id": "acme"}}, 409, "conflict"),
        ]
        for method, target, kwargs, status, code in cases:
            got, body = await call(session, method, target, **kwargs)
            assert (got, body.get("error")) == (status, code), (target, kwargs, body)
            assert "Traceback" not in str(body)
        assert await counts() == before
        await conn.close()
