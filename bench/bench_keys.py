"""Signatures per second through the keys service's signing endpoint, against raw PyJWT.

    python -m bench.bench_keys                # 3 s per measurement
    python -m bench.bench_keys --seconds 10 --concurrency 32

The keys service runs as its own process (``tessera serve keys``) on a database with a random
name, dropped at the end. The client keeps ``--concurrency`` requests in flight over keep-alive
connections, one claim set per request (and, as a second figure, two per request: what a Tapis
create with a refresh token asks for). The raw primitive is ``jwt.encode`` with a key of the
same algorithm, on one core in this process, measured in the same run. Both compete for the
same two cores, so the ratio is what this machine gives, load generator included.

The last figure per algorithm is the endpoint as the issuer uses it: ``--concurrency`` callers
each asking the issuer's own ``TenantKeys`` for one signature at a time, which coalesces the
calls waiting behind the requests in flight into one request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import jwt

from bench.report import result
from services.cli.migrate import migrate_all
from services.issuer.tenants import TenantKeys
from services.keys.crypto import generate_private_key
from shared.clients.base import client_session
from shared.clients.keys import KeysClient
from shared.db import drop_database
from shared.http import internal_session
from shared.pki import init_pki
from shared.tls import ReloadingTls, TlsFiles

ROOT = Path(__file__).resolve().parent.parent


def claims() -> dict[str, object]:
    return {
        "jti": secrets.token_hex(16),
        "iss": "http://localhost:8080/v3/tokens",
        "sub": "alice@bench",
        "tapis/tenant_id": "bench",
        "tapis/token_type": "access",
        "exp": int(time.time()) + 300,
    }


def raw_signs_per_second(alg: str, seconds: float) -> float:
    key = generate_private_key(alg)
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        jwt.encode(claims(), key, algorithm=alg, headers={"kid": "k"})
        count += 1
    return count / elapsed


PKI_DIR = Path(tempfile.mkdtemp(prefix="tessera-bench-keys-pki-"))


def tls_of(identity: str) -> ReloadingTls:
    """The benchmark's certificate as ``identity`` (of its own PKI)."""
    return ReloadingTls(TlsFiles.from_dir(PKI_DIR, identity))


async def endpoint_signs_per_second(
    url: str, tenant: str, seconds: float, concurrency: int, per_request: int
) -> float:
    signed = 0
    stop = time.perf_counter() + seconds
    # The issuer's certificate: only the issuer may ask keys to sign (mutual TLS, issue 16).
    async with internal_session(tls_of("issuer"), limit=concurrency) as session:

        async def worker() -> None:
            nonlocal signed
            while time.perf_counter() < stop:
                body = {"claims": [claims() for _ in range(per_request)]}
                async with session.post(f"{url}/internal/tenants/{tenant}/sign", json=body) as r:
                    assert r.status == 200, await r.text()
                    await r.read()
                signed += per_request

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return signed / (time.perf_counter() - started)


async def coalesced_signs_per_second(
    url: str, tenant: str, seconds: float, concurrency: int
) -> float:
    signed = 0
    stop = time.perf_counter() + seconds
    async with client_session(tls_of("issuer")) as session:
        client = TenantKeys(KeysClient(session, url), cache_seconds=60)

        async def worker() -> None:
            nonlocal signed
            while time.perf_counter() < stop:
                tokens = (await client.sign(tenant, [claims()])).tokens
                assert len(tokens) == 1
                signed += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return signed / (time.perf_counter() - started)


async def run(args: argparse.Namespace) -> None:
    run_id = secrets.token_hex(4)
    env = dict(os.environ)
    env.setdefault("TESSERA_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    env.setdefault("TESSERA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    env.update(
        TESSERA_DATABASE_PREFIX=f"bench_{run_id}",
        TESSERA_AMQP_EXCHANGE=f"bench.{run_id}",
        TESSERA_AMQP_DLX=f"bench.dlx.{run_id}",
        TESSERA_KEK=secrets.token_urlsafe(32),
        TESSERA_KEYS_PORT=str(args.port),
        TESSERA_KEYS_OPS_PORT=str(args.port + 1),
        TESSERA_LOG_LEVEL="warning",
        TESSERA_TLS_DIR=str(PKI_DIR),
    )
    init_pki(PKI_DIR)
    await migrate_all(env, ["keys"])
    database = urlunsplit(
        urlsplit(env["TESSERA_DATABASE_URL"])._replace(path=f"/bench_{run_id}_keys")
    )
    service = subprocess.Popen(
        [sys.executable, "-m", "services.keys"], env=env, stdout=subprocess.DEVNULL, cwd=ROOT
    )
    url = f"https://127.0.0.1:{args.port}"
    try:
        async with (
            aiohttp.ClientSession() as probe,
            client_session(tls_of("operator")) as session,
        ):
            deadline = time.monotonic() + 20
            while True:
                try:
                    async with probe.get(f"http://127.0.0.1:{args.port + 1}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "keys service did not start"
                await asyncio.sleep(0.1)
            for alg in ("RS256", "ES256"):
                async with session.post(
                    f"{url}/internal/tenants", json={"id": alg.lower(), "alg": alg}
                ) as r:
                    assert r.status == 200
        print(f"keys signing, concurrency {args.concurrency}, {args.seconds:.0f} s each")
        print(f"{'figure':<44}{'per second':>12}{'raw PyJWT':>12}{'ratio':>8}")
        for alg in ("RS256", "ES256"):
            raw = raw_signs_per_second(alg, args.seconds)
            for per_request in (1, 2, 10):
                rate = await endpoint_signs_per_second(
                    url, alg.lower(), args.seconds, args.concurrency, per_request
                )
                figure = f"{alg} signatures via /sign ({per_request} per request)"
                print(f"{figure:<44}{rate:>12,.0f}{raw:>12,.0f}{rate / raw:>8.2f}")
                result(figure, rate, "/s", f"pyjwt_{alg.lower()}_sign")
            rate = await coalesced_signs_per_second(
                url, alg.lower(), args.seconds, args.concurrency
            )
            figure = f"{alg} signatures via the issuer's TenantKeys"
            print(f"{figure:<44}{rate:>12,.0f}{raw:>12,.0f}{rate / raw:>8.2f}")
            result(figure, rate, "/s", f"pyjwt_{alg.lower()}_sign")
    finally:
        service.terminate()
        service.wait(timeout=20)
        await drop_database(database)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--port", type=int, default=18483)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
