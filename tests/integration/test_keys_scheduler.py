"""Two keys-service processes share the scheduled rotation: one rotation per period."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import urllib.request

import asyncpg
import pytest

from services.cli.migrate import migrate_all
from shared.settings import service_database_url
from tests.conftest import ROOT, free_port_block, private_env
from tests.tls import tls_for
from tests.waiting import wait_for, wait_until

pytestmark = pytest.mark.integration
PERIOD = 2


def _ready(port: int, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, "keys service exited"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


async def test_two_replicas_rotate_exactly_once_per_period(tessera_env: dict[str, str]) -> None:
    env = private_env(
        tessera_env,
        TESSERA_KEY_ROTATION_PERIOD=str(PERIOD),
        TESSERA_KEY_ACTIVATION_DELAY="0",
        TESSERA_KEY_MAINTENANCE_MS="50",
    )
    await migrate_all(env, ["keys"])
    port = free_port_block(4)
    replicas = [
        subprocess.Popen(
            [sys.executable, "-m", "services.keys"],
            env=dict(env, TESSERA_KEYS_PORT=str(port + i), TESSERA_KEYS_OPS_PORT=str(port + 2 + i)),
            stdout=subprocess.DEVNULL,
            cwd=ROOT,
        )
        for i in range(2)
    ]
    try:
        for i, proc in enumerate(replicas):
            wait_until(lambda: _ready(port + 2 + i, proc), timeout=20, what="keys ready")  # noqa: B023
        request = urllib.request.Request(
            f"https://127.0.0.1:{port}/internal/tenants",
            data=json.dumps({"id": "acme"}).encode(),
            method="POST",
        )
        operator = tls_for(env, "operator").client()
        with urllib.request.urlopen(request, timeout=10, context=operator) as resp:
            assert resp.status == 200
        conn = await asyncpg.connect(service_database_url(env, "keys"))

        async def five_keys() -> list[asyncpg.Record]:
            # A key's created_at is its transaction's start, which is where a replica claims
            # the period; event times also include key generation, which varies.
            keys = await conn.fetch("SELECT created_at FROM signing_keys ORDER BY created_at")
            return keys if len(keys) >= 5 else []  # the first key and four rotations

        keys = await wait_for(five_keys, timeout=4 * PERIOD + 10, what="four rotations")
        events = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'key.rotated'")
        await conn.close()
    finally:
        for proc in replicas:
            proc.terminate()
            proc.wait(timeout=20)
    assert events >= len(keys) - 1  # every rotation was announced
    times = [r["created_at"] for r in keys]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    # Never two rotations in one period, and no period skipped by much.
    assert all(gap >= PERIOD - 0.05 for gap in gaps), gaps
    assert all(gap < PERIOD + 1.5 for gap in gaps), gaps
