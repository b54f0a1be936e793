"""The documented outside subscriber, run as written against the gateway's public URLs only,
sees a revocation made through each dialect."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from tests.conftest import ROOT, Stack
from tests.e2e.gateway_support import http_json, mint, unique
from tests.factories import JSON

pytestmark = pytest.mark.e2e
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def outside_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "subscriber.md").read_text(), re.S)
    [example] = [b for b in blocks if "amqp_url=None" in b]
    return str(example)


class Follower:
    """The example in its own process; its stdout lines, as they come."""

    def __init__(self, stack: Stack, bearer: str, path: Path) -> None:
        path.write_text(outside_example())
        env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
        env.update(TESSERA_GATEWAY=stack.gateway, TESSERA_BEARER=bearer, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            [sys.executable, str(path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.seen: list[str] = []

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, predicate: str | None = None, *, token_id: str | None = None) -> None:
        deadline = time.monotonic() + 30
        while True:
            for line in self.seen:
                if predicate is not None and predicate in line:
                    return
                if token_id is not None and line.startswith("{"):
                    revocation = json.loads(line)
                    if token_id in (revocation["token_id"], revocation.get("display_id")):
                        return
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"not seen: {predicate or token_id}\n{''.join(self.seen)}"
            try:
                self.seen.append(self.lines.get(timeout=remaining))
            except queue.Empty:
                continue

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture
def follower(stack: Stack, tmp_path: Path) -> Iterator[Follower]:
    running = Follower(stack, mint(stack, unique("watcher")), tmp_path / "outside.py")
    running.wait_for("following from seq")
    yield running
    running.stop()


def token_id_of(stack: Stack, caller: str, token: str) -> str:
    status, body = http_json(
        "POST",
        f"{stack.gateway}/oauth2/introspect",
        raw=f"token={token}".encode(),
        headers={**FORM, "Authorization": f"Bearer {caller}"},
    )
    assert status == 200 and body["active"], body
    return str(body["jti"])


def test_the_outside_example_sees_a_revocation_from_every_dialect(
    stack: Stack, follower: Follower
) -> None:
    g = stack.gateway
    user = unique("out")
    dapi = mint(stack, user)
    # Tapis: revoke a JWT by presenting it.
    access = mint(stack, user, dialect="tapis")
    status, _ = http_json("POST", f"{g}/v3/tokens/revoke", body={"token": access}, headers=JSON)
    assert status == 200
    follower.wait_for(token_id=jwt.decode(access, options={"verify_signature": False})["jti"])
    # Databricks: delete by token_id.
    auth = {"Authorization": f"Bearer {dapi}"}
    status, made = http_json("POST", f"{g}/api/2.0/token/create", body={}, headers={**JSON, **auth})
    assert status == 200
    token_id = made["token_info"]["token_id"]
    status, _ = http_json(
        "POST", f"{g}/api/2.0/token/delete", body={"token_id": token_id}, headers={**JSON, **auth}
    )
    assert status == 200
    follower.wait_for(token_id=token_id)
    # Lagrello: delete by the credential.
    admin = mint(stack, unique("ladm"), dialect="opaque", permissions=("ADMIN",))
    status, made = http_json(
        "POST",
        f"{g}/v1/tokens",
        body={"tokenName": "outside"},
        headers={**JSON, "Authorization": f"Bearer {admin}"},
    )
    assert status == 200
    key = made["tokenKey"]
    lagrello_id = token_id_of(stack, admin, key)
    status, _ = http_json(
        "DELETE", f"{g}/v1/tokens/{key}", headers={"Authorization": f"Bearer {admin}"}
    )
    assert status == 204
    follower.wait_for(token_id=lagrello_id)
    # jobmanager: revoke by identity and token.
    identity = unique("job")
    status, made = http_json("POST", f"{g}/v1/api_access_token", body={"identity": identity})
    assert status == 200
    job_id = token_id_of(stack, dapi, made["token"])
    status, _ = http_json(
        "DELETE", f"{g}/v1/api_access_token?identity={identity}&token={made['token']}"
    )
    assert status == 200
    follower.wait_for(token_id=job_id)
    # OAuth 2.0 (RFC 7009): the owner revokes its own credential.
    own = mint(stack, user)
    own_id = token_id_of(stack, dapi, own)
    status, _ = http_json(
        "POST",
        f"{g}/oauth2/revoke",
        raw=f"token={own}".encode(),
        headers={**FORM, "Authorization": f"Bearer {dapi}"},
    )
    assert status == 200
    follower.wait_for(token_id=own_id)
