"""``tessera dev``: migrations, then all four services as child processes on this machine.

It checks PostgreSQL and RabbitMQ first (one clear line and a non-zero exit if either cannot
be reached), creates the ``dev`` tenant, prints where the gateway listens, and on Ctrl-C or
SIGTERM stops every child before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from shared.settings import SERVICES, ConfigError, require, service_database_url

DEV_TENANT = "dev"
START_ORDER = ("keys", "issuer", "revocation", "gateway")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
DEV_SECRETS_DIR = Path(".tessera-dev")


def _die_with_parent() -> None:
    """Children get SIGTERM if `tessera dev` itself dies, so none is ever left behind."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _dev_secret(env: dict[str, str], name: str) -> None:
    """Use the operator's secret if set; else one kept in .tessera-dev/ so restarts keep keys."""
    if env.get(name) or env.get(f"{name}_FILE"):
        return
    DEV_SECRETS_DIR.mkdir(mode=0o700, exist_ok=True)
    path = DEV_SECRETS_DIR / name.lower()
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    env[f"{name}_FILE"] = str(path.resolve())


def dev_environment(base: Mapping[str, str], host: str, port: int) -> dict[str, str]:
    env = dict(base)
    for offset, service in enumerate(SERVICES):
        env[f"TESSERA_{service.upper()}_PORT"] = str(port + offset)
        env[f"TESSERA_{service.upper()}_URL"] = f"http://{host}:{port + offset}"
    env.setdefault("TESSERA_HOST", host)
    env.setdefault("TESSERA_DEFAULT_TENANT", DEV_TENANT)
    _dev_secret(env, "TESSERA_KEK")
    _dev_secret(env, "TESSERA_TOKEN_PEPPER")
    return env


async def check_dependencies(env: Mapping[str, str]) -> str | None:
    """None when PostgreSQL and RabbitMQ answer, else one line saying which does not."""
    import asyncpg

    from shared.bus.amqp import connect_once, describe_amqp
    from shared.db import describe_database

    server = urlsplit(service_database_url(env, "keys"))
    admin_url = urlunsplit(server._replace(path="/postgres"))
    try:
        conn = await asyncpg.connect(admin_url, timeout=5)
        await conn.close()
    except Exception as exc:
        where = describe_database(admin_url)
        return f"cannot reach PostgreSQL at {where}: {type(exc).__name__}: {exc}"
    amqp_url = require(env, "TESSERA_AMQP_URL")
    try:
        await connect_once(amqp_url)
    except Exception as exc:
        return f"cannot reach RabbitMQ at {describe_amqp(amqp_url)}: {type(exc).__name__}: {exc}"
    return None


async def wait_ready(url: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with code {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                async with session.get(
                    f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=2)
                ) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"not ready after {READY_TIMEOUT:.0f}s")


async def ensure_tenant(keys_url: str, tenant: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{keys_url}/internal/tenants", json={"id": tenant}) as resp,
    ):
        if resp.status not in (200, 409):
            body = await resp.text()
            raise RuntimeError(f"creating tenant {tenant!r} failed: {resp.status} {body}")


def stop_children(children: Mapping[str, subprocess.Popen[bytes]]) -> None:
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for proc in children.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_dev(base_env: Mapping[str, str], *, port: int, host: str) -> int:
    """Run the whole stack until interrupted; returns the exit code."""
    from services.cli import migrate_all
    from shared.service import fail

    env = dev_environment(base_env, host, port)
    problem = asyncio.run(check_dependencies(env))
    if problem:
        fail(problem)
    applied = asyncio.run(migrate_all(env, ["keys", "issuer", "revocation"]))
    print(f"tessera dev: migrations applied: {len(applied)}", file=sys.stderr, flush=True)

    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for service in START_ORDER:
            children[service] = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", f"services.{service}"], env=env, preexec_fn=_die_with_parent
            )
        deadline = time.monotonic() + READY_TIMEOUT
        for service in START_ORDER:
            url = env[f"TESSERA_{service.upper()}_URL"]
            try:
                asyncio.run(wait_ready(url, children[service], deadline))
            except RuntimeError as exc:
                fail(f"the {service} service did not start: {exc}")
        asyncio.run(ensure_tenant(env["TESSERA_KEYS_URL"], DEV_TENANT))
        print(f"Tessera gateway listening on {env['TESSERA_GATEWAY_URL']}", flush=True)
        print(
            "tessera dev: "
            + ", ".join(f"{s} {env[f'TESSERA_{s.upper()}_URL']}" for s in SERVICES)
            + f"; tenant {DEV_TENANT!r}. Ctrl-C stops.",
            file=sys.stderr,
            flush=True,
        )
        while not stopping:
            for service, proc in children.items():
                if proc.poll() is not None:
                    fail(f"the {service} service exited with code {proc.returncode}")
            time.sleep(0.2)
        return 0
    except ConfigError:
        raise
    finally:
        stop_children(children)
        print("tessera dev: stopped", file=sys.stderr, flush=True)
