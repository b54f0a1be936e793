"""Faults under load, without touching the shared servers: this stack reaches PostgreSQL and
RabbitMQ through TCP proxies, and cutting a proxy is, for the services, the server going away
(open connections drop, new ones are refused)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from tests.conftest import (
    ROOT,
    Stack,
    free_port_block,
    private_env,
    start_stack,
    stop_stack,
)
from tests.e2e.gateway_support import http, http_json, mint
from tests.proxy import TcpProxy
from tests.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.fault]


class ProxyThread:
    """A TcpProxy on an event loop of its own, so the test body may block."""

    def __init__(self, url: str, default_port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.proxy = TcpProxy.for_url(url, default_port)
        self.run(self.proxy.start())
        self.url = self.proxy.url(url)

    def run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30)

    def cut(self) -> None:
        self.run(self.proxy.cut())

    def restore(self) -> None:
        self.run(self.proxy.start())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture(scope="module")
def proxied(
    tessera_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, ProxyThread, ProxyThread]]:
    pg = ProxyThread(tessera_env["TESSERA_DATABASE_URL"], 5432)
    mq = ProxyThread(tessera_env["TESSERA_AMQP_URL"], 5672)
    env = dict(
        private_env(tessera_env, "fault"),
        TESSERA_DATABASE_URL=pg.url,
        TESSERA_AMQP_URL=mq.url,
    )
    stack = start_stack(env, Path(tmp_path_factory.mktemp("fault")) / "dev.log")
    yield stack, pg, mq
    stop_stack(stack)
    pg.close()
    mq.close()


async def _collect_events(
    amqp_url: str,
    exchange: str,
    into: list[dict[str, Any]],
    ready: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    connection = await aio_pika.connect(amqp_url)  # directly, not through the proxy
    channel = await connection.channel()
    ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(ex, "#")

    async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        into.append(json.loads(message.body))
        await message.ack()

    await queue.consume(keep)
    ready.set()
    await stop.wait()
    await connection.close()


def test_broker_down_for_ten_seconds_loses_nothing(
    proxied: tuple[Stack, ProxyThread, ProxyThread], tessera_env: dict[str, str]
) -> None:
    stack, _pg, mq = proxied
    events: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    ready, stop = asyncio.Event(), asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(
            _collect_events(
                tessera_env["TESSERA_AMQP_URL"],
                stack.env["TESSERA_AMQP_EXCHANGE"],
                events,
                ready,
                stop,
            ),
        ),
        daemon=True,
    )
    thread.start()
    wait_until(ready.is_set, what="the event collector bound")
    token = mint(stack, "loader")
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    created: list[str] = []
    revoked: list[str] = []
    mq.cut()
    started = time.monotonic()
    try:
        while time.monotonic() - started < 10:  # about 10 s of load with the broker away
            status, body = http_json(
                "POST",
                f"{stack.gateway}/api/2.0/token/create",
                body={"lifetime_seconds": 600},
                headers=auth,
            )
            assert status == 200, body  # no create fails
            created.append(body["token_info"]["token_id"])
            if len(created) % 3 == 0:
                status, _ = http_json(
                    "POST",
                    f"{stack.gateway}/api/2.0/token/delete",
                    body={"token_id": created[-1]},
                    headers=auth,
                )
                assert status == 200  # no revoke fails either
                revoked.append(created[-1])
            time.sleep(0.05)
    finally:
        mq.restore()

    def missing() -> tuple[int, int]:
        issued = {e["data"].get("display_id") for e in events if e["type"] == "token.issued"}
        gone = {e["data"].get("display_id") for e in events if e["type"] == "token.revoked"}
        return len(set(created) - issued), len(set(revoked) - gone)

    wait_until(lambda: missing() == (0, 0), timeout=60, what=f"every event published {missing()}")
    loop.call_soon_threadsafe(stop.set)
    thread.join(timeout=10)
    assert len(created) >= 20 and revoked


def test_database_restart_answers_503_in_dialect_shape_then_recovers(
    proxied: tuple[Stack, ProxyThread, ProxyThread],
) -> None:
    stack, pg, _mq = proxied
    token = mint(stack, "dbfault")
    opaque = mint(stack, "dbfault2", dialect="opaque")
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    assert (
        http_json("POST", f"{stack.gateway}/api/2.0/token/create", body={}, headers=auth)[0] == 200
    )
    pg.cut()
    try:
        deadline = time.monotonic() + 3
        seen: set[int] = set()
        while time.monotonic() < deadline:
            status, headers, raw = http(
                "POST", f"{stack.gateway}/api/2.0/token/create", body={}, headers=auth
            )
            seen.add(status)
            assert status != 500, raw
            if status == 503:
                body = json.loads(raw)
                assert body["error_code"] == "TEMPORARILY_UNAVAILABLE" and "Retry-After" in headers
            status, _, raw = http(
                "POST",
                f"{stack.gateway}/v3/tokens",
                body={
                    "account_type": "user",
                    "token_tenant_id": "dev",
                    "token_username": "dbfault2",
                },
                headers={"X-Tapis-Token": opaque, "Content-Type": "application/json"},
            )
            assert status != 500, raw
            if status == 503:
                assert json.loads(raw)["status"] == "error"
            time.sleep(0.1)
        assert 503 in seen
    finally:
        pg.restore()
    wait_until(
        lambda: (
            http_json("POST", f"{stack.gateway}/api/2.0/token/create", body={}, headers=auth)[0]
            == 200
        ),
        timeout=30,
        what="recovery after PostgreSQL returned",
    )


def _start(service: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", f"services.{service}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )


def _ready(url: str) -> bool:
    try:
        return http("GET", f"{url}/readyz")[0] == 200
    except OSError:
        return False  # not listening yet


def _wait_ready(url: str, timeout: float = 90) -> None:
    wait_until(lambda: _ready(url), timeout=timeout, what=f"{url} ready")


def test_killed_service_gives_503_then_recovers(tessera_env: dict[str, str]) -> None:
    from services.cli.dev import dev_environment
    from services.cli.migrate import migrate_all

    env = dev_environment(private_env(tessera_env, "kill"), "127.0.0.1", free_port_block(8))
    asyncio.run(migrate_all(env, ["keys", "issuer", "revocation"]))
    procs = {name: _start(name, env) for name in ("keys", "issuer", "revocation")}
    try:
        for name in procs:
            _wait_ready(f"http://127.0.0.1:{env[f'TESSERA_{name.upper()}_OPS_PORT']}")
        procs["gateway"] = _start("gateway", env)
        _wait_ready(f"http://127.0.0.1:{env['TESSERA_GATEWAY_OPS_PORT']}")
        http_json("POST", f"{env['TESSERA_KEYS_URL']}/internal/tenants", body={"id": "dev"})
        status, made = http_json(
            "POST",
            f"{env['TESSERA_ISSUER_URL']}/internal/tokens",
            body={
                "tenant": "dev",
                "subject": "k",
                "kind": "databricks",
                "permissions": ["admin"],
                "minter": {"kind": "operator"},
            },
        )
        assert status == 200
        auth = {"Authorization": f"Bearer {made['value']}", "Content-Type": "application/json"}
        gateway = env["TESSERA_GATEWAY_URL"]
        assert http_json("POST", f"{gateway}/api/2.0/token/create", body={}, headers=auth)[0] == 200
        procs["issuer"].send_signal(signal.SIGKILL)
        procs["issuer"].wait(timeout=10)
        status, headers, raw = http(
            "POST", f"{gateway}/api/2.0/token/create", body={}, headers=auth
        )
        assert status == 503 and "Retry-After" in headers
        assert json.loads(raw)["error_code"] == "TEMPORARILY_UNAVAILABLE"
        status, _, raw = http("POST", f"{gateway}/v1/tokens", body={"tokenName": "x"}, headers=auth)
        assert status == 503 and json.loads(raw)["errorType"]
        procs["issuer"] = _start("issuer", env)
        wait_until(
            lambda: (
                http_json("POST", f"{gateway}/api/2.0/token/create", body={}, headers=auth)[0]
                == 200
            ),
            timeout=30,
            what="the gateway recovered",
        )
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _metric(url: str, name: str, **labels: str) -> float | None:
    """One sample of a service's /metrics, or None when it is not there."""
    status, _, body = http("GET", f"{url}/metrics")
    assert status == 200
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{want}}}" if labels else name
    for line in body.decode().splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


BROKER_CONNECTIONS = {
    "keys": "tessera-keys",
    "issuer": "tessera-issuer",
    "revocation": "tessera-revocation",
    "gateway": "tessera-subscriber-gateway",
}


def test_broker_restart_logs_one_lost_and_one_reconnected_line_per_service(
    proxied: tuple[Stack, ProxyThread, ProxyThread],
) -> None:
    stack, _pg, mq = proxied
    token = mint(stack, "outage")
    for service, connection in BROKER_CONNECTIONS.items():
        wait_until(
            lambda s=service, c=connection: (
                _metric(stack.ops[s], "tessera_broker_connected", connection=c) == 1.0
            ),
            timeout=30,
            what=f"{service} connected",
        )
    mark = len(stack.logs())

    def lines() -> list[str]:
        return stack.logs()[mark:].splitlines()

    def events(name: str) -> list[str]:
        return [
            json.loads(line)["service"]
            for line in lines()
            if line.startswith("{") and json.loads(line).get("event") == name
        ]

    mq.cut()
    try:
        wait_until(
            lambda: len(events("broker connection lost")) >= 4,
            timeout=30,
            what="every service saw the loss",
        )
        for service, connection in BROKER_CONNECTIONS.items():
            assert (
                _metric(stack.ops[service], "tessera_broker_connected", connection=connection)
                == 0.0
            )
        # An event written now waits in the issuer's outbox, and its age shows.
        status, _ = http_json(
            "POST",
            f"{stack.gateway}/api/2.0/token/create",
            body={"lifetime_seconds": 600},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert status == 200
        issuer = stack.ops["issuer"]
        wait_until(
            lambda: (
                (_metric(issuer, "tessera_outbox_oldest_age_seconds", service="issuer") or 0) > 1.0
            ),
            timeout=30,
            what="the outbox shows its oldest event's age",
        )
    finally:
        mq.restore()
    wait_until(
        lambda: len(events("broker reconnected")) >= 4, timeout=30, what="every service reconnected"
    )
    wait_until(
        lambda: _metric(issuer, "tessera_outbox_oldest_age_seconds", service="issuer") == 0.0,
        timeout=30,
        what="the outbox drained",
    )
    for service, connection in BROKER_CONNECTIONS.items():
        assert _metric(stack.ops[service], "tessera_broker_connected", connection=connection) == 1.0
    assert sorted(events("broker connection lost")) == sorted(BROKER_CONNECTIONS)
    assert sorted(events("broker reconnected")) == sorted(BROKER_CONNECTIONS)
    records = [json.loads(line) for line in lines() if line.startswith("{")]
    assert not [
        r
        for r in records
        if r["level"] not in ("info", "debug") and r["event"] != "broker connection lost"
    ], records
    assert "Traceback" not in "\n".join(lines())
    assert not [line for line in lines() if not line.startswith("{")]


def test_revocation_seq_and_subscriber_seq_give_the_lag_by_subtraction(
    proxied: tuple[Stack, ProxyThread, ProxyThread],
) -> None:
    stack, _pg, _mq = proxied
    token = mint(stack, "seq")
    auth = {"Authorization": f"Bearer {token}"}
    status, body = http_json(
        "POST",
        f"{stack.gateway}/api/2.0/token/create",
        body={"lifetime_seconds": 600},
        headers=auth,
    )
    assert status == 200
    status, _ = http_json(
        "POST",
        f"{stack.gateway}/api/2.0/token/delete",
        body={"token_id": body["token_info"]["token_id"]},
        headers=auth,
    )
    assert status == 200
    wait_until(
        lambda: (
            (_metric(stack.ops["gateway"], "tessera_subscriber_seq", subscriber="gateway") or 0)
            >= 1
        ),
        timeout=30,
        what="the gateway saw the revocation",
    )
    seq = _metric(stack.ops["gateway"], "tessera_subscriber_seq", subscriber="gateway") or 0

    def caught_up() -> bool:
        service = _metric(stack.ops["revocation"], "tessera_revocation_seq")
        gateway = _metric(stack.ops["gateway"], "tessera_subscriber_seq", subscriber="gateway")
        return service is not None and service >= seq and gateway == service

    wait_until(caught_up, timeout=30, what="both seqs at the revocation")
