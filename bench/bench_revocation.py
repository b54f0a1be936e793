"""Revocation propagation and subscriber bootstrap, across real processes.

    python -m bench.bench_revocation            # small: 200 revocations, 10,000 to bootstrap
    python -m bench.bench_revocation --full     # 1,000 revocations, 1,000,000 to bootstrap

Three processes: the revocation service (``tessera serve revocation``), a subscriber in a child
process, and this one, which first loads the bootstrap set with COPY, then starts the child
(which bootstraps from the snapshot and reports its time and RSS), then revokes one token at a
time through the internal API and waits until the child reports it applied. Latency is
``revoked_at`` (set in the revoking transaction, just before its commit) → applied in the
child, so it slightly overstates commit → applied. The raw primitive is one RabbitMQ hop
between the same two processes (publish → consume), measured in the same run.

Everything runs in databases and exchanges with a random prefix, removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg

from bench.report import result

ROOT = Path(__file__).resolve().parent.parent
PING_KEY = "bench.ping.v1"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _stats(values: list[float]) -> str:
    return f"p50 {_ms(_pct(values, 0.5))}, p99 {_ms(_pct(values, 0.99))}, max {_ms(max(values))}"


def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB."""
    status = Path("/proc/self/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


# --- the child: a subscriber in its own process -------------------------------------------


async def child_main(args: argparse.Namespace) -> None:
    from shared.settings import AmqpNames
    from shared.subscriber import Subscriber, SubscriberConfig

    names = AmqpNames(
        exchange=args.exchange, dead_letter_exchange=args.dlx, queue_prefix=args.prefix
    )
    out = sys.stdout

    def emit(*parts: object) -> None:
        out.write(" ".join(str(p) for p in parts) + "\n")
        out.flush()

    # The revocation service's feed is on the internal plane: present a certificate the
    # callers table admits (the gateway's), from the stack's PKI. Plain HTTP otherwise.
    if args.url.startswith("https://"):
        from shared.clients.base import client_session
        from shared.tls import ReloadingTls, TlsFiles

        tls = ReloadingTls(TlsFiles.from_dir(Path(os.environ["TESSERA_TLS_DIR"]), "gateway"))
        opened = client_session(tls)
    else:
        opened = aiohttp.ClientSession()
    async with opened as session:
        sub = Subscriber(
            SubscriberConfig(
                revocations_url=args.url,
                jwks_url_template="http://127.0.0.1:9/{tenant}",
                amqp_url=args.amqp,
                amqp_names=names,
                name="bench",
            ),
            session,
        )

        def on_revocation(revocation: dict[str, Any]) -> None:
            # The check a verifier makes: is this token refused now?
            emit(
                "applied",
                revocation["token_id"],
                repr(time.time()),
                sub.is_revoked(revocation["token_id"]),
            )

        sub.add_listener(on_revocation)
        rss_before, _ = _rss_mb()
        started = time.perf_counter()
        await sub.start()
        elapsed = time.perf_counter() - started
        rss, peak = _rss_mb()
        emit(
            "bootstrapped",
            repr(elapsed),
            sub.size,
            repr(rss_before),
            repr(rss),
            repr(peak),
            sub.seq,
        )

        # The raw primitive: one broker hop from the parent to this process.
        connection = await aio_pika.connect(args.amqp)
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            args.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, PING_KEY)

        async def on_ping(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            emit("ping", message.body.decode(), repr(time.time()))

        await queue.consume(on_ping, no_ack=True)
        emit("ready")
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await connection.close()
        await sub.close()


# --- the parent ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load_revocations(database_url: str, count: int) -> None:
    """Insert ``count`` unexpired revocations with COPY (seq 1..count) and set the sequence."""
    now = datetime.now(UTC)
    conn = await asyncpg.connect(database_url)
    try:
        rows = []
        for seq in range(1, count + 1):
            token_id = str(uuid.uuid4())
            expires = now + timedelta(seconds=3600 + seq % 7200)
            rows.append(
                (
                    seq,
                    "bench",
                    token_id,
                    token_id,
                    None,
                    f"user{seq % 1000}",
                    "jwt_access",
                    None,
                    None,
                    expires,
                    now,
                    "bench",
                )
            )
        await conn.copy_records_to_table(
            "revocations",
            records=rows,
            columns=[
                "seq",
                "tenant",
                "token_id",
                "jti",
                "display_id",
                "subject",
                "kind",
                "family_id",
                "kid",
                "expires_at",
                "revoked_at",
                "reason",
            ],
        )
        await conn.execute("UPDATE revocation_counter SET seq = $1", count)
        await conn.execute("ANALYZE revocations")
    finally:
        await conn.close()


class Child:
    """The subscriber process and the lines it reports, by kind."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: asyncio.Queue[list[str]] = asyncio.Queue()
        self.applied: dict[str, tuple[float, bool]] = {}
        self.pings: dict[str, float] = {}
        self._events: dict[str, asyncio.Event] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            parts = raw.decode().split()
            if not parts:
                continue
            if parts[0] == "applied":
                self.applied[parts[1]] = (float(parts[2]), parts[3] == "True")
                self._signal(parts[1])
            elif parts[0] == "ping":
                self.pings[parts[1]] = float(parts[2])
                self._signal(parts[1])
            else:
                await self.lines.put(parts)

    def _signal(self, key: str) -> None:
        self._events.setdefault(key, asyncio.Event()).set()

    async def wait(self, key: str, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self._events.setdefault(key, asyncio.Event()).wait(), timeout)

    async def expect(self, kind: str, timeout: float) -> list[str]:
        while True:
            parts = await asyncio.wait_for(self.lines.get(), timeout)
            if parts[0] == kind:
                return parts


async def run(args: argparse.Namespace) -> int:
    from services.cli.migrate import migrate_all
    from shared.settings import service_database_url

    database = os.environ.get("TESSERA_BENCH_DATABASE_URL") or os.environ.get(
        "TESSERA_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    amqp = os.environ.get("TESSERA_BENCH_AMQP_URL") or os.environ.get(
        "TESSERA_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"
    )
    tag = "b" + secrets.token_hex(4)
    port, ops_port = _free_port(), _free_port()
    # The revocation API is mutual TLS: a PKI of the benchmark's own.
    from shared.clients.base import client_session
    from shared.pki import init_pki
    from shared.tls import ReloadingTls, TlsFiles

    pki = Path(tempfile.mkdtemp(prefix="tessera-bench-revocation-pki-"))
    init_pki(pki)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env.update(
        TESSERA_DATABASE_URL=database,
        TESSERA_AMQP_URL=amqp,
        TESSERA_DATABASE_PREFIX=f"tessera_{tag}",
        TESSERA_AMQP_EXCHANGE=f"tessera.events.{tag}",
        TESSERA_AMQP_DLX=f"tessera.dlx.{tag}",
        TESSERA_AMQP_QUEUE_PREFIX=f"{tag}.",
        TESSERA_REVOCATION_PORT=str(port),
        TESSERA_REVOCATION_OPS_PORT=str(ops_port),
        TESSERA_TLS_DIR=str(pki),
        TESSERA_HOST="127.0.0.1",
        TESSERA_LOG_LEVEL="warning",
        TESSERA_ISSUER_URL="https://127.0.0.1:9",
    )
    db_url = service_database_url(env, "revocation")
    service: subprocess.Popen[bytes] | None = None
    child: Child | None = None
    try:
        await migrate_all(env, ["revocation"])
        started = time.perf_counter()
        await load_revocations(db_url, args.bootstrap)
        loaded = time.perf_counter() - started
        print(f"loaded {args.bootstrap:,} revocations with COPY in {loaded:.1f} s")

        service = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "revocation"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"https://127.0.0.1:{port}"
        # Revokes as the gateway would (its certificate); readiness on the ops listener.
        async with (
            aiohttp.ClientSession() as probe,
            client_session(ReloadingTls(TlsFiles.from_dir(pki, "gateway"))) as session,
        ):
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with probe.get(f"http://127.0.0.1:{ops_port}/readyz") as resp:
                        if resp.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError("revocation service not ready in 30 s")
                await asyncio.sleep(0.1)

            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.bench_revocation",
                "--child",
                "--url",
                f"{base}/internal/revocations",
                "--amqp",
                amqp,
                "--exchange",
                env["TESSERA_AMQP_EXCHANGE"],
                "--dlx",
                env["TESSERA_AMQP_DLX"],
                "--prefix",
                env["TESSERA_AMQP_QUEUE_PREFIX"],
                cwd=ROOT,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            child = Child(proc)
            boot = await child.expect("bootstrapped", timeout=120)
            seconds, size, rss_before, rss, peak = (
                float(boot[1]),
                int(boot[2]),
                float(boot[3]),
                float(boot[4]),
                float(boot[5]),
            )
            await child.expect("ready", timeout=30)
            print(
                f"bootstrap: {size:,} revocations in {seconds:.2f} s (target ≤ 10 s for 1,000,000)"
            )
            print(
                f"subscriber RSS: {rss:.0f} MB after bootstrap ({rss_before:.0f} MB before it;"
                f" peak {peak:.0f} MB) (target ≤ 200 MB)"
            )

            # The raw primitive: one RabbitMQ hop between the same two processes.
            connection = await aio_pika.connect(amqp)
            channel = await connection.channel(publisher_confirms=False)
            exchange = await channel.declare_exchange(
                env["TESSERA_AMQP_EXCHANGE"], aio_pika.ExchangeType.TOPIC, durable=True
            )
            raw: list[float] = []
            for i in range(min(args.revocations, 300)):
                key = f"p{i}"
                sent = time.time()
                await exchange.publish(aio_pika.Message(key.encode()), routing_key=PING_KEY)
                await child.wait(key)
                raw.append(child.pings[key] - sent)
            await connection.close()

            latencies: list[float] = []
            client_view: list[float] = []
            committed: list[float] = []
            refused = 0
            for _ in range(args.revocations):
                jti = str(uuid.uuid4())
                body = {
                    "tenant": "bench",
                    "jwt": {
                        "jti": jti,
                        "subject": "alice",
                        "expires_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
                    },
                }
                sent = time.time()
                async with session.post(f"{base}/internal/revocations", json=body) as resp:
                    reply = await resp.json()
                    assert resp.status == 200, reply
                answered = time.time()
                revoked_at = datetime.fromisoformat(
                    reply["revocations"][0]["revoked_at"]
                ).timestamp()
                await child.wait(jti)
                applied, is_revoked = child.applied[jti]
                refused += is_revoked
                latencies.append(applied - revoked_at)
                client_view.append(applied - sent)
                committed.append(answered - revoked_at)

        n = len(latencies)
        ratio = statistics.median(latencies) / statistics.median(raw)
        print(f"raw RabbitMQ hop between the processes ({len(raw)}): {_stats(raw)}")
        # revoked_at is the transaction's clock, read before the commit: an upper bound.
        print(
            f"revoked_at (in the transaction) → applied in the other process ({n}):"
            f" {_stats(latencies)} (target p99 ≤ 10 ms)"
        )
        print(f"  request sent → applied: {_stats(client_view)}")
        print(f"  revoked_at → revoke reply received: {_stats(committed)}")
        print(f"  ratio to the raw hop (p50): {ratio:.1f}x")
        print(f"  refused by the subscriber when applied: {refused}/{n}")
        # For `python -m bench`: latencies have no rate primitive; the raw hop is the reference.
        result("revocation raw RabbitMQ hop p50", _pct(raw, 0.5) * 1000, "ms")
        result("revocation commit→applied p50", _pct(latencies, 0.5) * 1000, "ms")
        result("revocation commit→applied p99", _pct(latencies, 0.99) * 1000, "ms")
        result(f"subscriber bootstrap of {size:,}", seconds, "s")
        result(f"subscriber RSS holding {size:,}", rss, "MB")
        return 0 if refused == n else 1
    finally:
        if child is not None:
            with contextlib.suppress(Exception):
                assert child.proc.stdin is not None
                child.proc.stdin.close()
                await asyncio.wait_for(child.proc.wait(), 10)
            if child.proc.returncode is None:
                child.proc.kill()
        if service is not None:
            service.terminate()
            try:
                service.wait(timeout=15)
            except subprocess.TimeoutExpired:
                service.kill()
        await _cleanup(env, db_url, amqp)


async def _cleanup(env: dict[str, str], db_url: str, amqp: str) -> None:
    from shared.db import drop_database

    with contextlib.suppress(Exception):
        await drop_database(db_url)
    with contextlib.suppress(Exception):
        connection = await aio_pika.connect(amqp)
        channel = await connection.channel()
        prefix = env["TESSERA_AMQP_QUEUE_PREFIX"]
        for queue in ("revocation.on_key_revoked", "tessera.dead-letter"):
            await channel.queue_delete(f"{prefix}{queue}.quorum")
        for exchange in (env["TESSERA_AMQP_EXCHANGE"], env["TESSERA_AMQP_DLX"]):
            await channel.exchange_delete(exchange)
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--full", action="store_true", help="1,000 revocations and a 1,000,000 bootstrap"
    )
    parser.add_argument("--revocations", type=int, default=None)
    parser.add_argument("--bootstrap", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("--url", "--amqp", "--exchange", "--dlx", "--prefix"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child_main(args))
        return
    args.revocations = args.revocations or (1000 if args.full else 200)
    args.bootstrap = (
        args.bootstrap if args.bootstrap is not None else (1_000_000 if args.full else 10_000)
    )
    raise SystemExit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
