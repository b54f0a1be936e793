"""``tessera dev``: migrations, then all four services as child processes on this machine.

It checks PostgreSQL and RabbitMQ first (one clear line and a non-zero exit if either cannot
be reached), creates the ``dev`` tenant, prints where the gateway listens, and on Ctrl-C or
SIGTERM stops every child before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from shared.clients.base import client_session
from shared.clients.keys import KeysClient
from shared.db import describe_database
from shared.devstack import (
    DevStack,
    descriptor_path,
    process_start,
    remove_descriptor,
    running_stack,
    write_descriptor,
)
from shared.errors import Conflict, TesseraError
from shared.pki import CA_KEY_FILE, init_pki
from shared.pki import OPERATOR as OPERATOR_IDENTITY
from shared.settings import (
    INTERNAL_SERVICES,
    SERVICES,
    ConfigError,
    get_amqp_url,
    get_log_level,
    service_database_url,
)
from shared.tls import TLS_DIR, TLS_VARIABLES, ReloadingTls, TlsFiles

DEV_TENANT = "dev"
START_ORDER = ("keys", "issuer", "revocation", "gateway")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
DEV_SECRETS_DIR = Path(".tessera-dev")
# The actor of every call an operator command makes, in the services' audit trails.
OPERATOR = "operator"


def _die_with_parent() -> None:
    """Children get SIGTERM if `tessera dev` itself dies, so none is ever left behind."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _needs_dev_secret(env: Mapping[str, str], name: str) -> bool:
    return not (env.get(name, "").strip() or env.get(f"{name}_FILE", "").strip())


def _secrets_record(env: Mapping[str, str]) -> Path:
    """Per user, beside the descriptor: which .tessera-dev/ each keys database was made with."""
    return descriptor_path(env).parent / "dev-secrets.json"


def _recorded_secrets_dir(env: Mapping[str, str], database: str) -> Path | None:
    try:
        recorded = json.loads(_secrets_record(env).read_text()).get(database)
    except (OSError, ValueError, AttributeError):
        return None
    return Path(recorded) if isinstance(recorded, str) else None


def _record_secrets_dir(env: Mapping[str, str], database: str, directory: Path) -> None:
    path = _secrets_record(env)
    try:
        records = json.loads(path.read_text())
        if not isinstance(records, dict):
            records = {}
    except (OSError, ValueError):
        records = {}
    records[database] = str(directory)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(records, indent=2))
    temporary.chmod(0o600)
    os.replace(temporary, path)


def choose_secrets_dir(env: Mapping[str, str], database: str) -> tuple[Path, str]:
    """The .tessera-dev/ directory to use, and one line saying which and why.

    The one in the current directory when it exists; else the one an earlier ``tessera dev``
    used with this keys database, so starting from another directory does not make new secrets
    that cannot open the keys already stored; else a new one here.
    """
    here = DEV_SECRETS_DIR.resolve()
    if here.is_dir():
        return here, f"dev secrets in {here}"
    recorded = _recorded_secrets_dir(env, database)
    if recorded is not None and recorded.is_dir():
        return recorded, (
            f"dev secrets in {recorded} (there is no {DEV_SECRETS_DIR}/ in {Path.cwd()};"
            f" an earlier run on {database} made them)"
        )
    return here, f"new dev secrets in {here}"


def _dev_secret(env: dict[str, str], name: str, directory: Path) -> None:
    """Use the operator's secret if set; else one kept in ``directory`` so restarts keep keys."""
    if not _needs_dev_secret(env, name):
        return
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / name.lower()
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    env[f"{name}_FILE"] = str(path)


def dev_environment(base: Mapping[str, str], host: str, port: int) -> dict[str, str]:
    """The children's environment, without secrets yet (see :func:`add_dev_secrets`).

    The APIs are on ``port`` … ``port+3`` (the internal ones over mutual TLS), the ops
    listeners on ``port+4`` … ``port+7``."""
    env = dict(base)
    for offset, service in enumerate(SERVICES):
        scheme = "https" if service in INTERNAL_SERVICES else "http"
        env[f"TESSERA_{service.upper()}_PORT"] = str(port + offset)
        env[f"TESSERA_{service.upper()}_URL"] = f"{scheme}://{host}:{port + offset}"
        env[f"TESSERA_{service.upper()}_OPS_PORT"] = str(port + len(SERVICES) + offset)
    env.setdefault("TESSERA_HOST", host)
    env.setdefault("TESSERA_DEFAULT_TENANT", DEV_TENANT)
    # The JWT issuer and the JWKS URLs are built from the public URL: they follow --port.
    env.setdefault("TESSERA_PUBLIC_URL", f"http://localhost:{port}")
    return env


def add_dev_secrets(env: dict[str, str]) -> Path | None:
    """Fill the KEK and pepper from .tessera-dev/ when unset; the directory used, if any."""
    if not any(_needs_dev_secret(env, n) for n in ("TESSERA_KEK", "TESSERA_TOKEN_PEPPER")):
        return None
    database = describe_database(service_database_url(env, "keys"))
    directory, line = choose_secrets_dir(env, database)
    print(f"tessera dev: {line}", file=sys.stderr, flush=True)
    for name in ("TESSERA_KEK", "TESSERA_TOKEN_PEPPER"):
        _dev_secret(env, name, directory)
    return directory


def _needs_dev_pki(env: Mapping[str, str]) -> bool:
    return not (env.get(TLS_DIR, "").strip() or any(env.get(n, "").strip() for n in TLS_VARIABLES))


def add_dev_pki(env: dict[str, str], secrets_dir: Path | None) -> Path | None:
    """Use the operator's PKI if set; else one kept in ``<dev dir>/pki`` (made once)."""
    if not _needs_dev_pki(env):
        return None
    directory = (secrets_dir or DEV_SECRETS_DIR.resolve()) / "pki"
    if not (directory / CA_KEY_FILE).exists():
        directory.parent.mkdir(mode=0o700, exist_ok=True)
        init_pki(directory)
    env[TLS_DIR] = str(directory)
    return directory


def validate_settings(env: Mapping[str, str]) -> None:
    """Build every service's settings once, so a malformed variable stops ``tessera dev``
    with one line before anything is created (placeholders stand in for dev secrets and the
    dev PKI)."""
    trial = dict(env)
    for name in ("TESSERA_KEK", "TESSERA_TOKEN_PEPPER"):
        if _needs_dev_secret(trial, name):
            trial[name] = "x" * 48
    with tempfile.TemporaryDirectory() as placeholder:
        if _needs_dev_pki(trial):
            init_pki(Path(placeholder))
            trial[TLS_DIR] = placeholder
        for service in SERVICES:
            module = importlib.import_module(f"services.{service}.settings")
            module.Settings.from_env(trial)


def busy_port(host: str, port: int) -> str | None:
    """One line naming the first of the stack's ports that cannot be bound, or None."""
    for offset, service in enumerate((*SERVICES, *(f"{s} ops" for s in SERVICES))):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind((host, port + offset))
            except OSError as exc:
                return (
                    f"cannot listen on {host}:{port + offset} (the {service} port of --port"
                    f" {port}): {exc.strerror}; nothing was started: choose another --port"
                )
    return None


async def check_dependencies(env: Mapping[str, str]) -> str | None:
    """None when PostgreSQL and RabbitMQ answer, else one line saying which does not."""
    import asyncpg

    from shared.bus.amqp import connect_once, describe_amqp

    server = urlsplit(service_database_url(env, "keys"))
    admin_url = urlunsplit(server._replace(path="/postgres"))
    try:
        conn = await asyncpg.connect(admin_url, timeout=5)
        await conn.close()
    except Exception as exc:
        where = describe_database(admin_url)
        return f"cannot reach PostgreSQL at {where}: {type(exc).__name__}: {exc}"
    amqp_url = get_amqp_url(env)
    try:
        await connect_once(amqp_url)
    except Exception as exc:
        return f"cannot reach RabbitMQ at {describe_amqp(amqp_url)}: {type(exc).__name__}: {exc}"
    return None


async def wait_ready(url: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Poll ``url``'s ``/readyz`` (an ops listener, in clear) until it answers 200."""
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


async def ensure_tenant(
    keys_url: str, tenant: str, public_url: str, tls: ReloadingTls
) -> str | None:
    """Create the tenant unless it exists; a line for the operator when its JWT issuer is not
    under ``public_url`` (it was made by a stack on another port or public URL)."""
    async with client_session(tls, timeout=30) as session:
        keys = KeysClient(session, keys_url)
        try:
            await keys.create_tenant(tenant)
            return None
        except Conflict:
            existing = await keys.tenant(tenant)
        except TesseraError as exc:
            raise RuntimeError(
                f"creating tenant {tenant!r} failed: {exc.status} {exc.message}"
            ) from None
    issuer = existing.issuer if existing is not None else None
    if issuer is not None and issuer != f"{public_url}/v3/tokens":
        return (
            f"the {tenant!r} tenant already exists with the JWT issuer {issuer} (made by an"
            f" earlier run with another --port or TESSERA_PUBLIC_URL); its tokens keep it"
        )
    return None


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


def _stack_descriptor(env: Mapping[str, str], secrets_dir: Path | None) -> DevStack:
    shared = {
        name: env[name]
        for name in (
            "TESSERA_AMQP_URL",
            "TESSERA_AMQP_EXCHANGE",
            "TESSERA_AMQP_DLX",
            "TESSERA_AMQP_QUEUE_PREFIX",
            "TESSERA_KEK_FILE",
            "TESSERA_KEK_PREVIOUS_FILE",
            "TESSERA_TOKEN_PEPPER_FILE",
        )
        if env.get(name, "").strip()
    }
    for service in ("keys", "issuer", "revocation"):
        shared[f"TESSERA_{service.upper()}_DATABASE_URL"] = service_database_url(env, service)
    return DevStack(
        pid=os.getpid(),
        directory=str(Path.cwd()),
        public_url=env["TESSERA_PUBLIC_URL"],
        services={s: env[f"TESSERA_{s.upper()}_URL"] for s in SERVICES},
        secrets_dir=str(secrets_dir) if secrets_dir else None,
        pki_dir=env.get(TLS_DIR) or None,
        env=shared,
        process_start=process_start(os.getpid()),
    )


def _keys_failure_hint(env: Mapping[str, str], secrets_dir: Path | None) -> str:
    """Why the keys service may have refused its keys, naming the secrets' directory."""
    if secrets_dir is None:
        return ""
    database = describe_database(service_database_url(env, "keys"))
    hint = f" (its KEK is the dev secret in {secrets_dir}"
    recorded = _recorded_secrets_dir(env, database)
    if recorded is not None and recorded != secrets_dir:
        hint += f"; {database} was set up with the dev secrets in {recorded}: run from there"
    else:
        hint += (
            f"; if {database} was set up by `tessera dev` in another directory, run it there or"
            " set TESSERA_KEK_FILE and TESSERA_TOKEN_PEPPER_FILE to that directory's files"
        )
    return hint + ")"


def run_dev(base_env: Mapping[str, str], *, port: int, host: str) -> int:
    """Run the whole stack until interrupted; returns the exit code.

    Nothing is created (secrets, databases, tenant, descriptor) before the configuration, the
    servers and every port of the stack have been checked.
    """
    from services.cli.migrate import migrate_all
    from shared.logging import configure_logging, get_logger
    from shared.service import fail

    env = dev_environment(base_env, host, port)
    validate_settings(env)
    # Every line is JSON, like the services' (the migration lines too).
    configure_logging("dev", get_log_level(env))
    problem = asyncio.run(check_dependencies(env))
    if problem:
        fail(problem)
    problem = busy_port(host, port)
    if problem:
        fail(problem)
    descriptor = descriptor_path(env)
    other = running_stack(env)
    if other is not None:
        fail(
            f"{other.describe()} is still running (gateway {other.services.get('gateway')},"
            f" described in {descriptor}): stop it first, or set TESSERA_DEV_STACK_FILE to"
            " run a second one"
        )
    secrets_dir = add_dev_secrets(env)
    pki_dir = add_dev_pki(env, secrets_dir)
    if pki_dir is not None:
        print(f"tessera dev: internal certificates in {pki_dir}", file=sys.stderr, flush=True)
    applied = asyncio.run(migrate_all(env, ["keys", "issuer", "revocation"]))
    get_logger("tessera.dev").info("migrations up to date", applied=len(applied))

    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children: dict[str, subprocess.Popen[bytes]] = {}
    written = False
    try:
        for service in START_ORDER:
            children[service] = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", f"services.{service}"], env=env, preexec_fn=_die_with_parent
            )
        deadline = time.monotonic() + READY_TIMEOUT
        for service in START_ORDER:
            url = f"http://{host}:{env[f'TESSERA_{service.upper()}_OPS_PORT']}"
            try:
                asyncio.run(wait_ready(url, children[service], deadline))
            except RuntimeError as exc:
                hint = _keys_failure_hint(env, secrets_dir) if service == "keys" else ""
                fail(f"the {service} service did not start: {exc}{hint}")
        for service, proc in children.items():
            # Ready answers must have come from our children, not from something else there.
            if proc.poll() is not None:
                fail(f"the {service} service exited with code {proc.returncode}")
        note = asyncio.run(
            ensure_tenant(
                env["TESSERA_KEYS_URL"],
                DEV_TENANT,
                env["TESSERA_PUBLIC_URL"],
                ReloadingTls(TlsFiles.from_env(env, OPERATOR_IDENTITY)),
            )
        )
        if secrets_dir is not None:
            database = describe_database(service_database_url(env, "keys"))
            _record_secrets_dir(env, database, secrets_dir)
        write_descriptor(descriptor, _stack_descriptor(env, secrets_dir))
        written = True
        print(f"Tessera gateway listening on {env['TESSERA_GATEWAY_URL']}", flush=True)
        public = env["TESSERA_PUBLIC_URL"]
        print(
            "tessera dev: "
            + ", ".join(f"{s} {env[f'TESSERA_{s.upper()}_URL']}" for s in SERVICES)
            + f"; tenant {DEV_TENANT!r}, JWT issuer {public}/v3/tokens, JWKS"
            f" {public}/v3/tenants/{DEV_TENANT}/.well-known/jwks.json; operator commands find"
            f" this stack through {descriptor}. Ctrl-C stops.",
            file=sys.stderr,
            flush=True,
        )
        if note:
            print(f"tessera dev: {note}", file=sys.stderr, flush=True)
        while not stopping:
            for service, proc in children.items():
                if proc.poll() is not None:
                    fail(f"the {service} service exited with code {proc.returncode}")
            time.sleep(0.2)
        return 0
    except ConfigError:
        raise
    finally:
        if written:
            remove_descriptor(descriptor, os.getpid())
        stop_children(children)
        print("tessera dev: stopped", file=sys.stderr, flush=True)
