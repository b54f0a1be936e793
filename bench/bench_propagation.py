"""Revocation propagation through the whole stack: revoke at the gateway, refused elsewhere.

    python -m bench.bench_propagation              # 200 revocations
    python -m bench.bench_propagation --count 1000

``tessera dev`` runs the stack; a subscriber (the shared library, as any other service would
use it) runs in a process of its own and reports the moment each revocation is applied and
the token refused there. For each token, this process sends ``POST /oauth2/revoke`` to the
gateway and measures from sending the request to the subscriber applying it (one machine, so
one clock). One at a time, so each figure is a latency, not a queueing delay.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import aiohttp

from bench.bench_revocation import Child
from bench.report import result
from bench.stack import ROOT, cli, dev_stack


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(count: int) -> None:
    async with dev_stack() as env, aiohttp.ClientSession() as session:
        gateway = env["TESSERA_GATEWAY_URL"]
        # A tenant of its own, whose quota lets one user hold every victim token at once.
        cli(env, "tenant", "create", "bench", "--token-quota", str(count + 10))
        admin = cli(
            env, "token", "create", "--tenant", "bench", "--subject", "ops", "--permission", "admin"
        )
        auth = {"Authorization": f"Bearer {admin}"}
        victims: list[tuple[str, str]] = []
        user = cli(
            env,
            "token",
            "create",
            "--tenant",
            "bench",
            "--subject",
            "victim",
            "--dialect",
            "databricks",
        )
        for _ in range(count):
            async with session.post(
                f"{gateway}/api/2.0/token/create",
                json={},
                headers={"Authorization": f"Bearer {user}"},
            ) as resp:
                created = await resp.json()
                assert resp.status == 200, created
                value = created["token_value"]
            async with session.post(
                f"{gateway}/oauth2/introspect", data={"token": value}, headers=auth
            ) as resp:
                victims.append((value, (await resp.json())["jti"]))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.bench_revocation",
            "--child",
            "--url",
            f"{env['TESSERA_REVOCATION_URL']}/internal/revocations",
            "--amqp",
            env["TESSERA_AMQP_URL"],
            "--exchange",
            env["TESSERA_AMQP_EXCHANGE"],
            "--dlx",
            env["TESSERA_AMQP_DLX"],
            "--prefix",
            env["TESSERA_AMQP_QUEUE_PREFIX"] + "sub.",
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        child = Child(proc)
        try:
            await child.expect("ready", timeout=60)
            latencies = []
            for value, token_id in victims:
                sent = time.time()
                async with session.post(
                    f"{gateway}/oauth2/revoke", data={"token": value}, headers=auth
                ) as resp:
                    assert resp.status == 200
                await child.wait(token_id)
                applied, refused = child.applied[token_id]
                assert refused, "the subscriber did not refuse the revoked token"
                latencies.append(applied - sent)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 10)
    p50, p99 = pct(latencies, 0.5) * 1000, pct(latencies, 0.99) * 1000
    print(f"revoke at the gateway → refused in another process, {count} revocations:")
    print(f"  p50 {p50:.2f} ms   p99 {p99:.2f} ms   max {max(latencies) * 1000:.2f} ms")
    result("revocation gateway → subscriber p50 (ms)", p50, "ms")
    result("revocation gateway → subscriber p99 (ms)", p99, "ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    asyncio.run(run(parser.parse_args().count))


if __name__ == "__main__":
    main()
