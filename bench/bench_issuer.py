"""The issuer's internal API: listing under 100,000 tokens, creations and authentications.

    python -m bench.bench_issuer            # 20,000 tokens for the listed owner, 5 s loads
    python -m bench.bench_issuer --full     # 100,000 tokens

Runs the whole stack (``tessera dev``) but calls the issuer directly, as the gateway does.
The owner's tokens are inserted with one INSERT … SELECT generate_series (each with its own
random keyed hash). Figures: page-of-20 latency (first page and a deep keyset page), opaque
creations per second with durable commits at concurrency 32, authentications per second; the
raw primitive, single-row durable asyncpg inserts at 16 connections, is measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
import asyncpg

from bench.primitives import asyncpg_inserts_per_second
from bench.report import result
from bench.stack import dev_stack
from shared.settings import service_database_url


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def rate(seconds: float, concurrency: int, call) -> float:  # type: ignore[no-untyped-def]
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await call(n)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return done / (time.perf_counter() - started)


async def run(args: argparse.Namespace) -> None:
    count = 100_000 if args.full else 20_000
    async with dev_stack() as env:
        issuer = env["TESSERA_ISSUER_URL"]
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.post(
                f"{env['TESSERA_KEYS_URL']}/internal/tenants",
                json={"id": "bench", "token_quota": 10_000_000},
            ) as resp:
                assert resp.status == 200
            conn = await asyncpg.connect(service_database_url(env, "issuer"))
            await conn.execute(
                """INSERT INTO tokens (id, tenant, subject, kind, name, created_at, secret_hash)
                   SELECT gen_random_uuid(), 'bench', 'owner', 'opaque', 'bulk',
                          now() - make_interval(secs => n),
                          sha256(convert_to(gen_random_uuid()::text, 'UTF8'))
                   FROM generate_series(1, $1) AS n""",
                count,
            )
            await conn.execute("ANALYZE tokens")
            await conn.close()

            async def page(cursor: str | None) -> tuple[float, str | None]:
                url = f"{issuer}/internal/tokens?tenant=bench&subject=owner&limit=20"
                started = time.perf_counter()
                async with session.get(url + (f"&cursor={cursor}" if cursor else "")) as resp:
                    body = await resp.json()
                return time.perf_counter() - started, body["next_cursor"]

            first = [(await page(None))[0] for _ in range(args.requests)]
            cursor = None
            for _ in range(50):
                _, cursor = await page(cursor)
            deep = [(await page(cursor))[0] for _ in range(args.requests)]
            print(
                f"issuer, {count:,} tokens for one owner, {args.requests} sequential requests each"
            )
            for name, values in (
                ("first page of 20", first),
                ("51st page of 20 (keyset cursor)", deep),
            ):
                p50, p99 = pct(values, 0.5) * 1000, pct(values, 0.99) * 1000
                print(f"  {name:<34} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
                result(f"issuer list {name} p99 ({count:,} tokens)", p99, "ms")

            values: list[str] = []

            async def create(n: int) -> None:
                async with session.post(
                    f"{issuer}/internal/tokens",
                    json={"tenant": "bench", "subject": f"u{n}", "minter": {"kind": "operator"}},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    values.append((await resp.json())["value"])

            async def authenticate(n: int) -> None:
                async with session.post(
                    f"{issuer}/internal/authenticate", json={"token": values[n % len(values)]}
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    await resp.read()

            raw = await asyncpg_inserts_per_second(min(args.seconds, 3.0))
            creates = await rate(args.seconds, 32, create)
            auths = await rate(args.seconds, 32, authenticate)
            print(f"  {'raw asyncpg durable inserts (16 connections)':<46}{raw:>9,.0f}/s")
            for name, value in (
                ("opaque creations, durable (c=32)", creates),
                ("authentications (c=32)", auths),
            ):
                print(f"  {name:<46}{value:>9,.0f}/s   ratio {value / raw:.2f}")
            result("issuer opaque creations (durable, c=32)", creates, "/s", "asyncpg_insert")
            result("issuer authentications (c=32)", auths, "/s", "asyncpg_insert")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
