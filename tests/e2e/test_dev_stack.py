"""`tessera dev`: every service ready quickly, request ids cross services, a clean stop."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Stack, free_port_block, private_env, start_stack, stop_stack
from tests.e2e.gateway_support import http_json, mint
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_dev_serves_every_service_and_sigterm_leaves_no_child(
    tessera_env: dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()
    stack = start_stack(tessera_env, tmp_path / "dev.log", timeout=15)
    try:
        for name, url in stack.ops.items():
            status, body = _get(f"{url}/readyz")
            assert status == 200, (name, body)
        assert time.monotonic() - started < 15
        children = _children(stack.process.pid)
        assert len(children) == 4
    finally:
        stack.process.send_signal(signal.SIGTERM)
        stack.process.wait(timeout=30)
    assert stack.process.returncode == 0
    assert not [pid for pid in children if _alive(pid)]
    stop_stack(stack)


def test_request_id_appears_in_gateway_and_backend_logs(stack: Stack) -> None:
    request_id = f"trace-{os.getpid()}-{time.time_ns()}"
    # A create (gateway, issuer), its delete (gateway, issuer, revocation) and the JWKS
    # (gateway, keys), all under one request id.
    headers = {"X-Request-ID": request_id, "Authorization": f"Bearer {mint(stack, 'trace')}"}
    status, made = http_json(
        "POST", f"{stack.gateway}/api/2.0/token/create", body={}, headers=headers
    )
    assert status == 200, made
    status, _ = http_json(
        "POST",
        f"{stack.gateway}/api/2.0/token/delete",
        body={"token_id": made["token_info"]["token_id"]},
        headers=headers,
    )
    assert status == 200
    status, _ = _get(f"{stack.gateway}/v3/tenants/dev/.well-known/jwks.json", headers)
    assert status == 200

    def services_logging_it() -> set[str]:
        seen = set()
        for line in stack.logs().splitlines():
            if line.startswith("{") and request_id in line:
                record = json.loads(line)
                if record.get("request_id") == request_id:
                    seen.add(record["service"])
        return seen

    wait_until(
        lambda: services_logging_it() == {"gateway", "issuer", "keys", "revocation"},
        what=f"every service logging the request (so far: {services_logging_it()})",
    )


def _operator_env(state: Path) -> dict[str, str]:
    """An operator's shell: no Tessera URL or secret variable, only the per-user state dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env["XDG_STATE_HOME"] = str(state)
    return env


def _tessera(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _claims(jwt: str) -> dict[str, object]:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_operator_commands_find_the_dev_stack_from_another_directory(
    tessera_env: dict[str, str], tmp_path: Path
) -> None:
    state, started_in, elsewhere = tmp_path / "state", tmp_path / "a", tmp_path / "b"
    for directory in (state, started_in, elsewhere):
        directory.mkdir()
    env = private_env(tessera_env, "devfind")
    # Dev secrets from .tessera-dev/, as for a new user: no KEK or pepper in the environment.
    for name in ("TESSERA_KEK", "TESSERA_TOKEN_PEPPER"):
        env.pop(name)
    env["XDG_STATE_HOME"] = str(state)
    stack = start_stack(env, tmp_path / "dev.log", cwd=started_in)
    descriptor = state / "tessera" / "dev-stack.json"
    try:
        assert stat.S_IMODE(descriptor.stat().st_mode) == 0o600
        assert stack.port != 8080
        operator = _operator_env(state)

        minted = _tessera(
            operator, elsewhere, "token", "create", "--tenant", "dev", "--subject", "alice",
            "--permission", "admin", "--dialect", "tapis",
        )  # fmt: skip
        assert minted.returncode == 0, minted.stderr
        assert _claims(minted.stdout.strip())["iss"] == f"http://localhost:{stack.port}/v3/tokens"
        status, body = _get(f"{stack.gateway}/v3/tenants/dev/.well-known/jwks.json")
        assert status == 200 and json.loads(body)["keys"]

        rotated = _tessera(operator, elsewhere, "keys", "rotate", "--tenant", "dev")
        assert rotated.returncode == 0, rotated.stderr
        assert json.loads(rotated.stdout)["kid"]

        rewrapped = _tessera(operator, elsewhere, "keys", "rewrap")
        assert rewrapped.returncode == 0, rewrapped.stderr
        # Both keys are under the stack's KEK already: found, opened, nothing to move.
        assert rewrapped.stdout.startswith("rewrapped 0 signing key(s)"), rewrapped.stdout

        # The CLI's own calls are audited as the operator's, never with actor null.
        trail = _tessera(operator, elsewhere, "audit", "--tenant", "dev")
        assert trail.returncode == 0, trail.stderr
        actors = {(e["action"], e["actor"]) for e in map(json.loads, trail.stdout.splitlines())}
        assert ("key.rotated", "operator") in actors, actors
        assert ("token.issued", "operator") in actors, actors
        assert not [a for a in actors if a[1] is None], actors
    finally:
        stop_stack(stack)
    assert stack.process.returncode == 0
    assert not descriptor.exists()
    gone = _tessera(_operator_env(state), elsewhere, "keys", "rotate", "--tenant", "dev")
    assert gone.returncode != 0
    assert "no `tessera dev` is running" in gone.stderr, gone.stderr

    # Started again from another directory, it uses the dev secrets the keys were made with,
    # and says where they are.
    again = start_stack(env, tmp_path / "again.log", cwd=elsewhere)
    try:
        assert f"dev secrets in {started_in / '.tessera-dev'}" in again.logs()
        # Another port: the existing tenant keeps the issuer it was made with, and says so.
        assert f"with the JWT issuer http://localhost:{stack.port}/v3/tokens" in again.logs()
        assert not (elsewhere / ".tessera-dev").exists()
        minted = _tessera(
            _operator_env(state), elsewhere, "token", "create", "--tenant", "dev",
            "--subject", "bob", "--dialect", "databricks",
        )  # fmt: skip
        assert minted.returncode == 0, minted.stderr
        assert minted.stdout.startswith("dapi")
    finally:
        stop_stack(again)

    # With no record of where the secrets are, new ones cannot open the stored keys: the
    # message names the directory whose secrets were used.
    (state / "tessera" / "dev-secrets.json").unlink()
    third = tmp_path / "c"
    third.mkdir()
    failed = _tessera(env, third, "dev", "--port", str(free_port_block(4)))
    assert failed.returncode != 0
    assert "Traceback" not in failed.stderr
    (line,) = [x for x in failed.stderr.splitlines() if "the keys service did not start" in x]
    assert str(third / ".tessera-dev") in line
    assert not descriptor.exists()


def test_dev_on_a_busy_port_fails_with_one_line_and_creates_nothing(
    stack: Stack, tessera_env: dict[str, str], tmp_path: Path
) -> None:
    env = private_env(tessera_env, "devbusy")
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    # The session's stack listens on these ports: its readiness probe must not be taken
    # for this one's.
    result = _tessera(env, tmp_path, "dev", "--port", str(stack.port))
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("tessera:")]
    assert len(lines) == 1, result.stderr
    assert f"127.0.0.1:{stack.port}" in lines[0] and "--port" in lines[0]
    assert "Tessera gateway listening" not in result.stdout
    assert not list(tmp_path.iterdir())  # no .tessera-dev/, no descriptor
    assert _databases(env) == []  # no migration ran


def _databases(env: dict[str, str]) -> list[str]:
    import asyncio

    import asyncpg

    async def names() -> list[str]:
        conn = await asyncpg.connect(env["TESSERA_DATABASE_URL"])
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE $1",
                env["TESSERA_DATABASE_PREFIX"] + "\\_%",
            )
        finally:
            await conn.close()
        return [row["datname"] for row in rows]

    return asyncio.run(names())
