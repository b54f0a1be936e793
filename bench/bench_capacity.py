"""CPU per request, per process, for the capacity page (docs/capacity.md).

    python -m bench.bench_capacity                  # 8 s per phase, concurrency 32
    python -m bench.bench_capacity --seconds 15

Starts ``tessera dev`` (one process per service), then for each operation drives it from this
process at a fixed concurrency and reads, from /proc, the CPU time each process used during
the phase: the four services, every PostgreSQL process and the RabbitMQ node of this machine
(both shared with whatever else runs here: on a busy machine their figures include others'
work). It also counts, from PostgreSQL's statistics, the rows written and transactions
committed in the service databases, and the events the outbox relays published.

Operations: Databricks create (one opaque token, one ``token.issued`` event), Databricks delete
(one revocation, one ``token.revoked`` event, the issuer's consumer marking the record), an
authenticated Databricks list (the gateway authenticates the caller, the issuer lists 10 tokens),
and in this process the subscriber library's JWT verification, cached and not.
Then the ceilings of the serialization points: revocations per second through the one sequence
counter row, creates per second of one owner (quota advisory lock), and events per second of
one outbox relay (see bench_outbox).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.report import result
from bench.stack import cli, dev_stack
from shared.settings import service_database_url

TICKS = os.sysconf("SC_CLK_TCK")
SERVICES = ("gateway", "issuer", "revocation", "keys")


def _cpu(pid: int, *, children: bool = False) -> float:
    """utime + stime of one process, seconds (0 once it is gone); with ``children``, plus that
    of its children that exited (PostgreSQL backends, reaped by the postmaster)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = int(fields[11]) + int(fields[12])
    reaped = int(fields[13]) + int(fields[14]) if children else 0
    return (own + reaped) / TICKS


def _total_cpu(name: str, pids: list[int]) -> float:
    """The CPU of a group; for PostgreSQL the postmaster (pid 1's child) counts its exited
    backends too, so a backend ending during a phase does not make the figure drop."""
    total = 0.0
    for pid in pids:
        postmaster = name == "postgres" and _parent(pid) == 1
        total += _cpu(pid, children=postmaster)
    return total


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def _processes() -> dict[str, list[int]]:
    """The pids of each service of the running stack, PostgreSQL and this machine's RabbitMQ."""
    found: dict[str, list[int]] = {name: [] for name in (*SERVICES, "postgres", "rabbitmq")}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        for service in SERVICES:
            if f"-m services.{service}" in cmdline and STACK_ROOT in _cwd(entry):
                found[service].append(int(entry.name))
        if comm == "postgres":
            found["postgres"].append(int(entry.name))
        elif comm == "beam.smp" and "-home /var/lib/rabbitmq" in cmdline:  # the machine's node
            found["rabbitmq"].append(int(entry.name))
    return found


def _cwd(entry: Path) -> str:
    try:
        return os.readlink(entry / "cwd")
    except OSError:
        return ""


STACK_ROOT = str(Path(__file__).resolve().parent.parent)


async def _db_counters(env: dict[str, str]) -> dict[str, float]:
    """Committed transactions and rows written in the three service databases."""
    totals = {"commits": 0.0, "rows": 0.0}
    url = service_database_url(env, "keys")
    conn = await asyncpg.connect(url)
    try:
        prefix = env["TESSERA_DATABASE_PREFIX"]
        rows = await conn.fetch(
            """SELECT xact_commit, tup_inserted + tup_updated + tup_deleted AS written
               FROM pg_stat_database WHERE datname LIKE $1""",
            f"{prefix}\\_%",
        )
    finally:
        await conn.close()
    for row in rows:
        totals["commits"] += row["xact_commit"]
        totals["rows"] += row["written"]
    return totals


async def _published(env: dict[str, str]) -> float:
    """Events published by the stack's relays so far (their Prometheus counters)."""
    total = 0.0
    async with aiohttp.ClientSession() as session:
        for service in ("issuer", "revocation", "keys"):
            # Metrics are on the ops listener (in clear), never on the API port.
            ops = f"http://127.0.0.1:{env[f'TESSERA_{service.upper()}_OPS_PORT']}"
            async with session.get(f"{ops}/metrics") as resp:
                for line in (await resp.text()).splitlines():
                    if line.startswith("tessera_outbox_published_total"):
                        total += float(line.rsplit(" ", 1)[1])
    return total


async def measure(
    name: str,
    env: dict[str, str],
    call: Callable[[aiohttp.ClientSession, int], Awaitable[None]],
    seconds: float,
    concurrency: int,
) -> dict[str, Any]:
    """Run ``call`` for ``seconds``; print and return the rate and the CPU per request."""
    pids = _processes()
    cpu_before = {name: _total_cpu(name, ps) for name, ps in pids.items()}
    own_before = time.process_time()
    db_before, events_before = await _db_counters(env), await _published(env)
    done = 0
    stop = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def worker(n: int) -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await call(s, n)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - started
    await asyncio.sleep(1.0)  # let the relays and consumers finish this phase's events
    db_after, events_after = await _db_counters(env), await _published(env)
    cpu = {
        name: (_total_cpu(name, ps) - cpu_before[name]) / done * 1e6 for name, ps in pids.items()
    }
    cpu["load generator"] = (time.process_time() - own_before) / done * 1e6
    figures = {
        "rate": done / elapsed,
        "cpu_us": cpu,
        "commits": (db_after["commits"] - db_before["commits"]) / done,
        "rows": (db_after["rows"] - db_before["rows"]) / done,
        "events": (events_after - events_before) / done,
    }
    parts = ", ".join(f"{k} {v:.0f}" for k, v in cpu.items())
    print(
        f"{name}: {figures['rate']:,.0f}/s; CPU µs per request: {parts}; per request "
        f"{figures['commits']:.2f} commits, {figures['rows']:.2f} rows written, "
        f"{figures['events']:.2f} events published",
        flush=True,
    )
    for service in SERVICES:
        result(f"{name}: {service} CPU per request", cpu[service], "µs")
    return figures


async def run(args: argparse.Namespace) -> None:
    async with dev_stack(TESSERA_RATE_LIMIT_FAILURES="0") as env:
        gateway = env["TESSERA_GATEWAY_URL"]
        cli(env, "tenant", "create", "bench", "--token-quota", "1000000")
        users = [f"u{n}" for n in range(args.concurrency)]
        dapi = [
            cli(env, "token", "create", "--tenant", "bench", "--subject", u, "--dialect",
                "databricks")
            for u in users
        ]  # fmt: skip
        created: list[list[str]] = [[] for _ in users]

        async def create(session: aiohttp.ClientSession, n: int) -> None:
            async with session.post(
                f"{gateway}/api/2.0/token/create",
                json={"comment": "bench", "lifetime_seconds": 3600},
                headers={"Authorization": f"Bearer {dapi[n]}"},
            ) as resp:
                assert resp.status == 200, await resp.text()
                created[n].append((await resp.json())["token_info"]["token_id"])

        async def delete(session: aiohttp.ClientSession, n: int) -> None:
            token_id = created[n].pop()
            async with session.post(
                f"{gateway}/api/2.0/token/delete",
                json={"token_id": token_id},
                headers={"Authorization": f"Bearer {dapi[n]}"},
            ) as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()

        async def list_tokens(session: aiohttp.ClientSession, n: int) -> None:
            async with session.get(
                f"{gateway}/api/2.0/token/list", headers={"Authorization": f"Bearer {dapi[n]}"}
            ) as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()

        print(f"stack: tessera dev, load: this process, concurrency {args.concurrency}")
        async with aiohttp.ClientSession() as session:
            for n in range(args.concurrency):
                for _ in range(9):
                    await create(session, n)
        await measure("list (10 tokens)", env, list_tokens, args.seconds, args.concurrency)
        await measure("create", env, create, args.seconds, args.concurrency)
        await measure("revoke", env, delete, args.seconds, args.concurrency)
        await one_owner_creates(env, gateway, dapi[0], args)
        await counter_ceiling(env, args)
        verification_cost()


async def one_owner_creates(
    env: dict[str, str], gateway: str, token: str, args: argparse.Namespace
) -> None:
    """Creates of one owner only: every one takes that owner's quota lock."""

    async def create(session: aiohttp.ClientSession, n: int) -> None:
        async with session.post(
            f"{gateway}/api/2.0/token/create",
            json={"lifetime_seconds": 3600},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            await resp.read()

    figures = await measure("create, one owner", env, create, args.seconds, args.concurrency)
    result("creates of one owner (quota lock)", figures["rate"], "/s")


async def counter_ceiling(env: dict[str, str], args: argparse.Namespace) -> None:
    """Revocation-counter transactions per second with nothing else in them: the ceiling of
    the one row every revocation updates (each holds its lock until its commit, durable)."""
    url = service_database_url(env, "revocation")
    pool = await asyncpg.create_pool(url, min_size=args.concurrency, max_size=args.concurrency)
    assert pool is not None
    done = 0
    stop = time.perf_counter() + args.seconds / 2

    async def worker() -> None:
        nonlocal done
        async with pool.acquire() as conn:
            while time.perf_counter() < stop:
                async with conn.transaction():
                    await conn.execute("UPDATE revocation_counter SET seq = seq WHERE singleton")
                done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    rate = done / (time.perf_counter() - started)
    await pool.close()
    print(f"revocation counter row alone: {rate:,.0f} transactions/s", flush=True)
    result("revocation counter row transactions", rate, "/s")


def verification_cost() -> None:
    """The subscriber library's JWT verification in this process: RS256 signature check, and
    a cached hit (what a verifying service pays per request once it has seen the token)."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 3600}, key, algorithm="RS256")
    public = key.public_key()
    n = 2000
    started = time.process_time()
    for _ in range(n):
        jwt.decode(token, public, algorithms=["RS256"])
    per = (time.process_time() - started) / n * 1e6
    print(f"RS256 JWT verification (PyJWT): {per:.0f} µs CPU each", flush=True)
    result("RS256 JWT verification CPU", per, "µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
