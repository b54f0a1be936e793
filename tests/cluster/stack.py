"""Two replicas of every Tessera service behind a round-robin TCP proxy per service (as a
Kubernetes Service would be), against a RabbitMQ cluster and a PostgreSQL primary/standby."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, free_port_block
from tests.proxy import splice

SERVICES = ("keys", "revocation", "issuer", "gateway")


class RoundRobinProxy:
    """Each new client connection goes to the next replica that accepts it; a replica that
    refuses (killed) is skipped. Open connections stay with their replica, as with kube-proxy."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.port = 0
        self._next = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in self.ports:
            port = self.ports[self._next % len(self.ports)]
            self._next += 1
            with contextlib.suppress(OSError):
                return await asyncio.open_connection("127.0.0.1", port)
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            writer.transport.abort()
            return
        await splice((reader, writer), upstream)


class LoopThread:
    """An event loop in a thread of its own (the proxies), so the test may block."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


@dataclass
class Replica:
    service: str
    index: int
    port: int
    ops_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its API: the gateway's in clear, the others' mutual TLS (shared.tls)."""
        scheme = "http" if self.service == "gateway" else "https"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def ops_url(self) -> str:
        """Its ops listener (/healthz, /readyz, /metrics in clear)."""
        return f"http://127.0.0.1:{self.ops_port}"


@dataclass
class ReplicatedStack:
    env: dict[str, str]
    logs: Path
    replicas: dict[str, list[Replica]] = field(default_factory=dict)
    proxies: dict[str, RoundRobinProxy] = field(default_factory=dict)
    loop: LoopThread = field(default_factory=LoopThread)

    def url(self, service: str) -> str:
        """The service's address behind its proxy (a TCP splice: TLS passes through)."""
        scheme = "http" if service == "gateway" else "https"
        return f"{scheme}://127.0.0.1:{self.proxies[service].port}"

    def setup(self, replicas: int = 2) -> None:
        count = len(SERVICES) * replicas
        base = free_port_block(2 * count)  # the APIs, then the ops listeners
        for s, service in enumerate(SERVICES):
            ports = [base + s * replicas + i for i in range(replicas)]
            self.replicas[service] = [
                Replica(service, i, port, port + count, self.logs / f"{service}-{i}.log")
                for i, port in enumerate(ports)
            ]
            proxy = RoundRobinProxy(ports)
            self.loop.run(proxy.start())
            self.proxies[service] = proxy
        for service in SERVICES:
            self.env[f"TESSERA_{service.upper()}_URL"] = self.url(service)
        self.cli("migrate")
        for service in SERVICES:
            for replica in self.replicas[service]:
                self.start(replica)
            for replica in self.replicas[service]:
                self.wait_ready(replica)

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        if result.returncode != 0:
            raise RuntimeError(f"tessera {' '.join(args)}: {result.stderr[-2000:]}")
        return result.stdout.strip()

    def start(self, replica: Replica) -> None:
        env = dict(self.env, TESSERA_HOST="127.0.0.1")
        env[f"TESSERA_{replica.service.upper()}_PORT"] = str(replica.port)
        env[f"TESSERA_{replica.service.upper()}_OPS_PORT"] = str(replica.ops_port)
        log = replica.log_path.open("ab")
        replica.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", replica.service],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def wait_ready(self, replica: Replica, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        name = f"{replica.service}-{replica.index}"
        while True:
            assert replica.process is not None
            if replica.process.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.tail(replica)}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{replica.ops_url}/readyz", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready: {self.tail(replica)}")
            time.sleep(0.2)

    def tail(self, replica: Replica) -> str:
        return replica.log_path.read_text(errors="replace")[-3000:]

    def kill(self, replica: Replica) -> None:
        if replica.process is not None and replica.process.poll() is None:
            replica.process.send_signal(signal.SIGKILL)
            replica.process.wait(timeout=30)

    def stop(self) -> None:
        for replicas in self.replicas.values():
            for replica in replicas:
                if replica.process is not None and replica.process.poll() is None:
                    replica.process.send_signal(signal.SIGTERM)
        for replicas in self.replicas.values():
            for replica in replicas:
                if replica.process is not None:
                    try:
                        replica.process.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        replica.process.kill()
                        replica.process.wait()
        for proxy in self.proxies.values():
            with contextlib.suppress(Exception):
                self.loop.run(proxy.stop())
        self.loop.close()


def cluster_env(
    base: dict[str, str], database_url: str, amqp_url: str, pki_dir: Path
) -> dict[str, str]:
    """A Tessera environment on the test clusters, without the per-replica limits that would
    turn a load test into a rate-limit test; every replica holds its certificate of
    ``pki_dir`` (the operator CLI too)."""
    env = {k: v for k, v in base.items() if not k.startswith("TESSERA_")}
    env.update(
        TESSERA_TLS_DIR=str(pki_dir),
        TESSERA_DATABASE_URL=database_url,
        TESSERA_AMQP_URL=amqp_url,
        TESSERA_DATABASE_PREFIX="tessera",
        TESSERA_KEK=secrets.token_urlsafe(32),
        TESSERA_TOKEN_PEPPER=secrets.token_urlsafe(32),
        TESSERA_RATE_LIMIT_PRINCIPAL="0",
        TESSERA_RATE_LIMIT_TENANT="0",
        TESSERA_RATE_LIMIT_FAILURES="0",
        TESSERA_LOG_LEVEL="info",
    )
    return env
