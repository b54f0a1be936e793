"""docker-compose.yml really wires up: every service started exactly as the file says.

There is no Docker engine here, so each container's ``command`` and ``environment`` are taken
from the file (interpolated from .env.example with the secrets filled in, as ``docker compose``
does with .env) and run as local processes (deploy/local.py). Only what a container network
provides is translated: the hostnames ``postgres``/``rabbitmq`` become this machine's servers,
``keys``/``issuer``/... become 127.0.0.1, and the four listening ports move to free ones,
consistently in every variable that names them. Start order and health gating follow the file's
``depends_on`` conditions, checked with the file's own health checks. Then one Databricks token
goes through create -> use -> revoke via the published gateway port.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from deploy.local import (
    AddressMap,
    Running,
    base_environment,
    drop_service_databases,
    http_get,
    run,
    start,
    stop,
    wait_until,
)
from deploy.render import (
    ENV_EXAMPLE,
    ROOT,
    dockerfile_healthcheck_code,
    load_compose,
    read_env_file,
    service_environment,
)
from shared.settings import DATABASE_SERVICES, service_database_url
from tests.conftest import Infra, free_port_block, private_settings

pytestmark = pytest.mark.integration

TESSERA = ("gateway", "issuer", "revocation", "keys")
INIT_SCRIPT = ROOT / "deploy" / "postgres-init" / "10-create-databases.sh"


@dataclass
class ComposeRun:
    """The compose services as local processes, with each one's translated environment."""

    compose: dict[str, Any]
    envs: dict[str, dict[str, str]]
    ports: dict[str, int]
    running: dict[str, Running]

    @property
    def gateway(self) -> str:
        published = self.compose["services"]["gateway"]["ports"][0]
        assert published == "8080:8080"
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def exec(self, service: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """``docker compose exec SERVICE argv...``: a command with that container's env."""
        return run(list(argv), self.envs[service])


def dotenv(tessera_env: dict[str, str], prefix: str) -> dict[str, str]:
    """What an operator's .env holds: .env.example with its required secrets filled in."""
    values = read_env_file(ENV_EXAMPLE)
    values.update(
        TESSERA_KEK=tessera_env["TESSERA_KEK"],
        TESSERA_TOKEN_PEPPER=tessera_env["TESSERA_TOKEN_PEPPER"],
        # Credentials of the compose-run servers; this machine's own replace them below.
        POSTGRES_PASSWORD="compose-postgres-password",
        TESSERA_KEYS_DB_PASSWORD="compose-keys-password",
        TESSERA_ISSUER_DB_PASSWORD="compose-issuer-password",
        TESSERA_REVOCATION_DB_PASSWORD="compose-revocation-password",
        RABBITMQ_PASSWORD="compose-rabbitmq-password",
        TESSERA_DATABASE_PREFIX=prefix,
    )
    return values


def address_map(compose: dict[str, Any], infra: Infra, ports: dict[str, int]) -> AddressMap:
    addresses = AddressMap()
    db, amqp = urlsplit(infra.database_url), urlsplit(infra.amqp_url)
    db_user = db.netloc.rsplit("@", 1)[0] if "@" in db.netloc else ""
    amqp_user = amqp.netloc.rsplit("@", 1)[0] if "@" in amqp.netloc else ""
    # The postgres and rabbitmq services of the file, at their standard ports.
    assert {"postgres", "rabbitmq"} <= set(compose["services"])
    addresses.add(("postgres", 5432), (db.hostname or "", db.port or 5432), db_user)
    addresses.add(("rabbitmq", 5672), (amqp.hostname or "", amqp.port or 5672), amqp_user)
    for name in TESSERA:
        inside = int(service_environment(compose["services"][name])[f"TESSERA_{name.upper()}_PORT"])
        addresses.add((name, inside), ("127.0.0.1", ports[name]))
    return addresses


PKI_MOUNT = "/run/tessera/pki"


def pki_source(service: dict[str, Any]) -> str:
    """The host directory a service mounts (read-only) as its PKI."""
    for volume in service.get("volumes", []):
        source, target, *mode = volume.split(":")
        if target == PKI_MOUNT:
            assert mode == ["ro"], volume
            return str(source)
    raise AssertionError("the PKI is not mounted")


def translate(
    env: dict[str, str],
    addresses: AddressMap,
    ports: dict[str, int],
    isolation: dict[str, str],
    pki_dir: str,
) -> dict[str, str]:
    """A service's compose environment as it runs here (see the module docstring); the PKI
    mount is the session's PKI (what `tessera pki init ./pki` makes on the host)."""
    out = dict(env)
    if out.get("TESSERA_TLS_DIR") == PKI_MOUNT:
        out["TESSERA_TLS_DIR"] = pki_dir
    for key, value in env.items():
        if key in ("TESSERA_DATABASE_ADMIN_URL", "TESSERA_AMQP_URL") or (
            key.endswith("_URL")
            and key.removeprefix("TESSERA_").removesuffix("_URL").lower() in TESSERA
        ):
            default = {"TESSERA_DATABASE_ADMIN_URL": 5432, "TESSERA_AMQP_URL": 5672}.get(key, 80)
            out[key] = addresses.url(value, default)
        elif key.endswith("_DATABASE_URL"):  # a service's own role: keep its user
            out[key] = addresses.url(value, 5432, own_user=True)
    for name in TESSERA:
        if f"TESSERA_{name.upper()}_PORT" in out:
            out[f"TESSERA_{name.upper()}_PORT"] = str(ports[name])
        if f"TESSERA_{name.upper()}_OPS_PORT" in out:
            out[f"TESSERA_{name.upper()}_OPS_PORT"] = str(ports[f"{name}-ops"])
    clash = set(isolation) & set(env)
    assert not clash, f"the compose file now sets {clash}; the test must not override them"
    return {**base_environment(), **out, **isolation}


def startup_order(services: dict[str, Any]) -> list[str]:
    """Services sorted so each comes after everything it depends_on (as compose starts them)."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle {(*path, name)}"
        if name in order:
            return
        for target in services[name].get("depends_on", {}):
            visit(target, (*path, name))
        order.append(name)

    for name in services:
        visit(name, ())
    return order


def healthy(service: dict[str, Any], env: dict[str, str]) -> bool:
    """Run the service's compose health check the way Docker does (CMD form): exit 0 = healthy."""
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", "health checks run without a shell in the slim image"
    return run(test[1:], env, timeout=10).returncode == 0


def wait_healthy(compose_run: ComposeRun, name: str) -> None:
    service, running = compose_run.compose["services"][name], compose_run.running[name]

    def check() -> bool:
        if running.process.poll() is not None:
            raise AssertionError(f"{name} exited {running.process.returncode}:\n{running.logs()}")
        return healthy(service, compose_run.envs[name])

    try:
        wait_until(check, f"compose health check of {name}", timeout=45)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{running.logs()[-3000:]}") from None


def create_databases(
    postgres_env: dict[str, str], infra: Infra
) -> subprocess.CompletedProcess[str]:
    """Run the postgres service's init script as its entrypoint would, against this server."""
    assert shutil.which("psql"), "psql (PostgreSQL's client) is needed to run the init script"
    db = urlsplit(infra.database_url)
    env = {
        **base_environment(),
        **postgres_env,
        "POSTGRES_USER": db.username or "postgres",
        "PGHOST": db.hostname or "127.0.0.1",
        "PGPORT": str(db.port or 5432),
    }
    if db.password:
        env["PGPASSWORD"] = db.password
    return subprocess.run([str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def postgres_healthy(service: dict[str, Any], infra: Infra) -> bool:
    """The postgres service's own CMD-SHELL health check, run where that server listens.

    It names 127.0.0.1:5432 (inside its container), which is this machine's server only when
    the tests use the local one; with any other server the check is vacuous and skipped."""
    db = urlsplit(infra.database_url)
    if (db.hostname, db.port or 5432) != ("127.0.0.1", 5432):
        return True
    kind, command = service["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    env = {**base_environment(), "POSTGRES_USER": db.username or "postgres"}
    return subprocess.run(["sh", "-c", command], env=env, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def compose_run(
    tessera_env: dict[str, str],
    infra: Infra,
    tmp_path_factory: pytest.TempPathFactory,
    pki_dir: Path,
) -> Iterator[ComposeRun]:
    # Names of their own, derived from this session's, so the `stack` fixture of the e2e tests
    # (same session) never shares a database or a queue with these processes.
    isolation = private_settings(tessera_env, "compose")
    prefix = isolation.pop("TESSERA_DATABASE_PREFIX")  # the operator's .env sets it
    compose = load_compose(dotenv(tessera_env, prefix))
    base = free_port_block(8)
    ports = {name: base + i for i, name in enumerate(TESSERA)}
    ports.update({f"{name}-ops": base + 4 + i for i, name in enumerate(TESSERA)})
    addresses = address_map(compose, infra, ports)
    services = compose["services"]
    envs = {
        name: translate(
            service_environment(services[name]), addresses, ports, isolation, str(pki_dir)
        )
        for name in (*TESSERA, "migrate")
    }
    log_dir = tmp_path_factory.mktemp("compose")
    result = ComposeRun(compose, envs, ports, {})
    try:
        init = create_databases(service_environment(services["postgres"]), infra)
        assert init.returncode == 0, init.stderr
        assert postgres_healthy(services["postgres"], infra)
        migrate = run(services["migrate"]["command"], envs["migrate"])
        assert migrate.returncode == 0, migrate.stderr
        for name in startup_order(services):
            if name not in TESSERA:
                continue
            for target, rule in services[name].get("depends_on", {}).items():
                if rule["condition"] == "service_healthy" and target in TESSERA:
                    wait_healthy(result, target)
            result.running[name] = start(name, services[name]["command"], envs[name], log_dir)
        for name in TESSERA:
            wait_healthy(result, name)
        yield result
    finally:
        stop(list(result.running.values()))
        drop_service_databases(envs["migrate"])


def test_init_script_creates_exactly_the_databases_each_service_uses(
    compose_run: ComposeRun,
) -> None:
    import asyncpg

    env = compose_run.envs["migrate"]

    async def names() -> set[str]:
        conn = await asyncpg.connect(
            service_database_url(env, "keys").rsplit("/", 1)[0] + "/postgres"
        )
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1",
                env["TESSERA_DATABASE_PREFIX"] + "\\_%",
            )
        finally:
            await conn.close()
        return {row["datname"] for row in rows}

    expected = {urlsplit(service_database_url(env, s)).path[1:] for s in DATABASE_SERVICES}
    assert asyncio.run(names()) == expected


def test_each_service_connects_as_its_own_role_and_only_migrate_holds_the_admin(
    compose_run: ComposeRun,
) -> None:
    import asyncpg

    admin = compose_run.envs["migrate"]["TESSERA_DATABASE_ADMIN_URL"]
    for name in TESSERA:
        env = compose_run.envs[name]
        assert "TESSERA_DATABASE_ADMIN_URL" not in env and "TESSERA_DATABASE_URL" not in env
        own = {key for key in env if key.endswith("_DATABASE_URL")}
        assert own == ({f"TESSERA_{name.upper()}_DATABASE_URL"} if name != "gateway" else set())

    async def owners() -> dict[str, str]:
        conn = await asyncpg.connect(admin)
        try:
            rows = await conn.fetch(
                "SELECT datname, pg_get_userbyid(datdba) AS owner FROM pg_database"
                " WHERE datname LIKE $1",
                compose_run.envs["migrate"]["TESSERA_DATABASE_PREFIX"] + "\\_%",
            )
        finally:
            await conn.close()
        return {row["datname"]: row["owner"] for row in rows}

    # Each database is owned by the role of the same name, which the service connects as.
    found = asyncio.run(owners())
    assert found and all(database == owner for database, owner in found.items()), found
    for service in DATABASE_SERVICES:
        url = urlsplit(service_database_url(compose_run.envs[service], service))
        assert url.username == url.path[1:], url.username


def test_every_service_is_healthy_and_ready_on_the_port_the_file_gives_it(
    compose_run: ComposeRun,
) -> None:
    for name in TESSERA:
        port = compose_run.ports[f"{name}-ops"]
        for path in ("/healthz", "/readyz"):
            status, _ = http_get(f"http://127.0.0.1:{port}{path}")
            assert status == 200, (name, path)
        status, body = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and b"# TYPE" in body, name
        assert pki_source(compose_run.compose["services"][name]) == "./pki"
    # The published port is the gateway's API: no probes, metrics or internal routes there.
    for path in ("/metrics", "/internal/status", "/healthz"):
        assert http_get(f"{compose_run.gateway}{path}")[0] == 404, path


def test_only_the_gateway_port_is_published(compose_run: ComposeRun) -> None:
    published = {
        name: service["ports"]
        for name, service in compose_run.compose["services"].items()
        if service.get("ports")
    }
    assert published == {"gateway": ["8080:8080"]}


def test_image_healthcheck_finds_each_service_port_from_its_command(
    compose_run: ComposeRun,
) -> None:
    """The Dockerfile HEALTHCHECK, pointed at each service's process instead of PID 1."""
    code = dockerfile_healthcheck_code()
    assert "/proc/1/cmdline" in code
    for name, running in compose_run.running.items():
        local = code.replace("/proc/1/", f"/proc/{running.process.pid}/")
        assert run(["python", "-c", local], compose_run.envs[name]).returncode == 0, name
    # And it fails when nothing answers on that service's port.
    gone = dict(compose_run.envs["keys"], TESSERA_KEYS_OPS_PORT=str(free_port_block(1)))
    keys_pid = compose_run.running["keys"].process.pid
    local = code.replace("/proc/1/", f"/proc/{keys_pid}/")
    assert run(["python", "-c", local], gone).returncode != 0


def test_operator_creates_a_tenant_inside_the_keys_container(compose_run: ComposeRun) -> None:
    """docs/deploy.md's first step, `docker compose exec keys tessera tenant create ...`."""
    tenant = f"deploy-{secrets.token_hex(4)}"
    created = compose_run.exec("keys", "tessera", "tenant", "create", tenant)
    assert created.returncode == 0, created.stderr
    shown = compose_run.exec("keys", "tessera", "tenant", "show", tenant)
    assert shown.returncode == 0, shown.stderr
    # The issuer of its JWTs is the public URL the compose file gives (from .env).
    public_url = compose_run.envs["keys"]["TESSERA_PUBLIC_URL"]
    assert public_url == "http://localhost:8080"
    assert json.loads(shown.stdout)["issuer"] == f"{public_url}/v3/tokens"


def call(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One JSON request with a bearer token; (status, parsed body or None)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    return status, json.loads(raw) if raw else None


def test_a_token_goes_through_create_use_revoke_via_the_published_gateway(
    compose_run: ComposeRun,
) -> None:
    tenant = f"deploy-{secrets.token_hex(4)}"
    # The operator's first steps from docs/deploy.md: `docker compose exec keys|issuer tessera ...`.
    created = compose_run.exec("keys", "tessera", "tenant", "create", tenant)
    assert created.returncode == 0, created.stderr
    minted = compose_run.exec(
        "issuer",
        "tessera",
        "token",
        "create",
        "--tenant",
        tenant,
        "--subject",
        "alice",
        "--permission",
        "admin",
        "--dialect",
        "databricks",
    )
    assert minted.returncode == 0, minted.stderr
    admin = minted.stdout.strip()
    assert re.fullmatch(r"dapi[0-9a-f]{32}", admin)

    api = f"{compose_run.gateway}/api/2.0/token"
    status, body = call(
        "POST", f"{api}/create", admin, {"comment": "deploy", "lifetime_seconds": 3600}
    )
    assert status == 200, body
    value, token_id = body["token_value"], body["token_info"]["token_id"]

    status, body = call("GET", f"{api}/list", value)
    assert status == 200, body
    assert token_id in [info["token_id"] for info in body["token_infos"]]

    status, body = call("POST", f"{api}/delete", value, {"token_id": token_id})
    assert (status, body) == (200, {})

    wait_until(lambda: call("GET", f"{api}/list", value)[0] == 401, "the deleted token refused", 15)
    status, body = call("GET", f"{api}/list", admin)
    assert status == 200 and token_id not in [i["token_id"] for i in body["token_infos"]]


def test_the_jobmanager_dialect_answers_callers_on_this_host(compose_run: ComposeRun) -> None:
    """The compose default of TESSERA_INTERNAL_NETWORKS admits the Docker host (loopback here)
    and issues into TESSERA_DEFAULT_TENANT, which is empty in .env.example and so means dev."""
    assert compose_run.envs["gateway"]["TESSERA_DEFAULT_TENANT"] == ""
    created = compose_run.exec("keys", "tessera", "tenant", "create", "dev")
    assert created.returncode == 0 or "409" in created.stderr, created.stderr
    request = urllib.request.Request(
        f"{compose_run.gateway}/v1/api_access_token",
        data=json.dumps({"identity": "svc-deploy"}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        body = json.loads(response.read())
    assert body["identity"] == "svc-deploy" and body["token"]
