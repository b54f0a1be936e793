"""Run what a container would run, as a local process, to prove the deployment files' wiring.

The tests in tests/integration/test_deploy_*.py take each container's command and environment
from docker-compose.yml or the kustomize base and start it here. Only what cannot exist
outside a container is translated, always in the open and the same way for every service:

- a hostname (``postgres``, ``keys``, ``tessera-keys``) becomes an address on this machine
  (:class:`AddressMap`), and a listening port may move to a free one, consistently in every
  variable that names it;
- ``tessera ...`` runs as ``python -m services.cli ...`` and ``python`` as this interpreter,
  since the console script of this checkout may not be on PATH.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent


def local_argv(argv: Sequence[str]) -> list[str]:
    """The container command as this machine runs it (``tessera`` / ``python`` translated)."""
    if not argv:
        raise ValueError("empty command")
    head, rest = argv[0], list(argv[1:])
    if head == "tessera":
        return [sys.executable, "-m", "services.cli", *rest]
    if head in ("python", "python3"):
        return [sys.executable, *rest]
    return list(argv)


@dataclass
class AddressMap:
    """``host:port`` inside the deployment -> ``host:port`` (and credentials) on this machine."""

    endpoints: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    credentials: dict[tuple[str, int], str] = field(default_factory=dict)

    def add(self, inside: tuple[str, int], outside: tuple[str, int], userinfo: str = "") -> None:
        self.endpoints[inside] = outside
        if userinfo:
            self.credentials[inside] = userinfo

    def url(self, value: str, default_port: int, *, own_user: bool = False) -> str:
        """Rewrite one URL whose host:port is mapped; raise if it names an unknown endpoint.
        The endpoint's credentials replace the URL's, unless ``own_user`` (a service's own
        role, which exists on this machine's server too once migrate has made it)."""
        parts = urlsplit(value)
        key = (parts.hostname or "", parts.port or default_port)
        if key not in self.endpoints:
            raise KeyError(f"{value!r} names {key[0]}:{key[1]}, which the deployment does not run")
        host, port = self.endpoints[key]
        userinfo = None if own_user else self.credentials.get(key)
        if userinfo is None and "@" in parts.netloc:
            userinfo = parts.netloc.rsplit("@", 1)[0]
        netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
        return urlunsplit(parts._replace(netloc=netloc))


def base_environment() -> dict[str, str]:
    """This machine's environment without any Tessera setting, like a fresh container's."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TESSERA_", "DATABRICKS_"))
    }


@dataclass
class Running:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def start(name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path) -> Running:
    """Start one container's command in the background, output to ``log_dir/<name>.log``."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            local_argv(argv), env=dict(env), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
    return Running(name, process, log_path)


def run(
    argv: Sequence[str], env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a one-shot container command (migration, CLI, health check) to completion."""
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        local_argv(argv), env=dict(env), capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def stop(processes: Sequence[Running], timeout: float = 15) -> None:
    """SIGTERM every process (as a container stop does), then SIGKILL what is left."""
    for running in processes:
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for running in processes:
        try:
            running.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()


def http_get(url: str, timeout: float = 3) -> tuple[int, bytes]:
    """GET a URL; (status, body) even for 4xx/5xx; raises OSError when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - test URLs
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(check: Callable[[], object], what: str, timeout: float = 30) -> None:
    """Poll ``check()`` every 0.1 s until it returns true; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not true after {timeout:.0f}s")


def drop_service_databases(env: dict[str, str]) -> None:
    """Drop the services' databases, then their own roles, as the admin of a migrate
    environment (``TESSERA_DATABASE_ADMIN_URL``); each step even when an earlier one failed."""
    import asyncio

    from shared.db import drop_database
    from shared.dbroles import drop_role
    from shared.settings import DATABASE_SERVICES, service_database_url

    admin = env["TESSERA_DATABASE_ADMIN_URL"]

    async def drop() -> None:
        for service in DATABASE_SERVICES:
            own = urlsplit(service_database_url(env, service))
            with contextlib.suppress(Exception):
                await drop_database(urlunsplit(urlsplit(admin)._replace(path=own.path)))
            if own.username:
                with contextlib.suppress(Exception):
                    await drop_role(admin, own.username)

    asyncio.run(drop())
