"""Throughput and latency through the whole stack: gateway → issuer → keys, durable commits.

    python -m bench.bench_gateway                 # 5 s per figure, concurrency 32
    python -m bench.bench_gateway --seconds 15

Starts ``tessera dev`` (all four services as their own processes) on a random database
prefix, then drives it from this process with keep-alive aiohttp connections:

- Databricks ``POST /api/2.0/token/create`` (one durable insert + outbox event each);
- Tapis ``POST /v3/tokens`` with a refresh token (two RS256 signatures) and without (one);
- authenticated Databricks ``GET /api/2.0/token/list``, each user holding ``--list-size`` tokens
  (measured first, before the create phases give every user hundreds).

The raw primitive, PyJWT RS256 signing on one core, is measured in the same run. The load
generator shares the machine's two cores with the five server processes.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp

from bench.primitives import jwt_figures
from bench.report import result
from bench.stack import cli, dev_stack


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def load(
    name: str,
    call: Callable[[aiohttp.ClientSession, int], Awaitable[None]],
    seconds: float,
    concurrency: int,
) -> float:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(n: int) -> None:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                await call(session, n)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started
    rate = len(latencies) / elapsed
    p50, p99 = pct(latencies, 0.5) * 1000, pct(latencies, 0.99) * 1000
    print(f"{name:<46}{rate:>10,.0f}/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms", flush=True)
    return rate


class Workload:
    """One stack's benchmark users and the calls the figures time: ``concurrency`` users, each
    with a Databricks PAT and a Tapis JWT of tenant ``bench``."""

    def __init__(self, env: dict[str, str], concurrency: int) -> None:
        self.gateway = env["TESSERA_GATEWAY_URL"]
        cli(env, "tenant", "create", "bench", "--token-quota", "1000000")
        self.users = [f"u{n}" for n in range(concurrency)]
        self.dapi = [
            cli(
                env,
                "token",
                "create",
                "--tenant",
                "bench",
                "--subject",
                u,
                "--dialect",
                "databricks",
            )
            for u in self.users
        ]
        self.jwts = [
            cli(env, "token", "create", "--tenant", "bench", "--subject", u, "--dialect", "tapis")
            for u in self.users
        ]

    async def fill(self, list_size: int) -> None:
        """Give every user ``list_size`` tokens to list."""
        async with aiohttp.ClientSession() as session:
            for n in range(len(self.users)):
                for _ in range(list_size - 1):
                    await self.databricks_create(session, n)

    async def databricks_create(self, session: aiohttp.ClientSession, n: int) -> None:
        async with session.post(
            f"{self.gateway}/api/2.0/token/create",
            json={"comment": "bench", "lifetime_seconds": 3600},
            headers={"Authorization": f"Bearer {self.dapi[n]}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            await resp.read()

    def tapis_create(
        self, refresh: bool
    ) -> Callable[[aiohttp.ClientSession, int], Awaitable[None]]:
        async def call(session: aiohttp.ClientSession, n: int) -> None:
            body = {
                "account_type": "user",
                "token_tenant_id": "bench",
                "token_username": self.users[n],
                "generate_refresh_token": refresh,
            }
            async with session.post(
                f"{self.gateway}/v3/tokens", json=body, headers={"X-Tapis-Token": self.jwts[n]}
            ) as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()

        return call

    async def databricks_list(self, session: aiohttp.ClientSession, n: int) -> None:
        async with session.get(
            f"{self.gateway}/api/2.0/token/list",
            headers={"Authorization": f"Bearer {self.dapi[n]}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            await resp.read()


async def run(args: argparse.Namespace) -> None:
    async with dev_stack() as env:
        work = Workload(env, args.concurrency)
        raw = jwt_figures(min(args.seconds, 3.0))["pyjwt_rs256_sign"]
        print(
            f"stack: tessera dev (5 processes), load: this process, concurrency {args.concurrency}"
        )
        print(f"{'raw PyJWT RS256 sign (one core)':<46}{raw:>10,.0f}/s")
        await work.fill(args.list_size)
        rate = await load(
            f"authenticated Databricks lists ({args.list_size} tokens)",
            work.databricks_list,
            args.seconds,
            args.concurrency,
        )
        result("authenticated Databricks lists via gateway", rate, "/s", None)
        rate = await load(
            "Databricks creates", work.databricks_create, args.seconds, args.concurrency
        )
        result("Databricks creates via gateway (c=32)", rate, "/s", "asyncpg_insert")
        rate = await load(
            "Tapis create_token, access + refresh (2 sigs)",
            work.tapis_create(True),
            args.seconds,
            args.concurrency,
        )
        print(f"{'  ratio to raw RS256 signing (2 sigs each)':<46}{2 * rate / raw:>10.2f}")
        result("Tapis create_token with refresh (2 RS256 sigs)", rate, "/s", "pyjwt_rs256_sign")
        rate = await load(
            "Tapis create_token, access only (1 sig)",
            work.tapis_create(False),
            args.seconds,
            args.concurrency,
        )
        result("Tapis create_token access only (1 RS256 sig)", rate, "/s", "pyjwt_rs256_sign")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--list-size", type=int, default=10, help="tokens per listing user")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
