"""Refresh rotation, tried as an attacker would: reuse revokes the family durably, and grace
retries are bounded and work on every signing algorithm."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack, private_env, start_stack, stop_stack
from tests.e2e.gateway_support import http_json, mint, unique
from tests.e2e.test_authorization import tapis_pair
from tests.factories import JSON
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e


def exchange(stack: Stack, refresh: str) -> tuple[int, Any]:
    return http_json(
        "PUT", f"{stack.gateway}/v3/tokens", body={"refresh_token": refresh}, headers=JSON
    )


def accepted(stack: Stack, access: str) -> bool:
    status, _ = http_json(
        "GET", f"{stack.gateway}/api/2.0/token/list", headers={"Authorization": f"Bearer {access}"}
    )
    return status == 200


@pytest.fixture(scope="module")
def no_grace_stack(
    tessera_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A stack of its own, whose revocation service the test may freeze."""
    env = dict(private_env(tessera_env, "reuse"), TESSERA_REFRESH_GRACE_SECONDS="0")
    stack = start_stack(env, Path(tmp_path_factory.mktemp("reuse")) / "dev.log")
    yield stack
    stop_stack(stack)


def child_pid(stack: Stack, service: str) -> int:
    found = subprocess.run(
        ["pgrep", "-P", str(stack.process.pid), "-f", f"services.{service}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(found) == 1, found
    return int(found[0])


def test_reuse_while_the_revocation_service_is_down_still_reaches_subscribers(
    no_grace_stack: Stack,
) -> None:
    stack = no_grace_stack
    user = unique("rita")
    pair = tapis_pair(stack, mint(stack, user), "dev", user)
    refresh = pair["refresh_token"]["refresh_token"]
    status, fresh = exchange(stack, refresh)
    assert status == 200
    access = fresh["result"]["access_token"]["access_token"]
    assert accepted(stack, access)
    revocation = child_pid(stack, "revocation")
    os.kill(revocation, signal.SIGSTOP)  # down: accepts no work, answers nothing
    try:
        status, body = exchange(stack, refresh)  # reuse, detected while it is away
        assert (status, body["status"]) == (400, "error")
        assert accepted(stack, access)  # nothing told the gateway yet
    finally:
        os.kill(revocation, signal.SIGCONT)
    # Once it is back, the family's revocation reaches the gateway's subscriber.
    wait_until(lambda: not accepted(stack, access), timeout=30, what="the access token refused")
    assert not accepted(stack, pair["access_token"]["access_token"])


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
def test_grace_retries_work_on_every_algorithm_and_are_bounded(stack: Stack, alg: str) -> None:
    tenant = unique(alg.lower())
    made = stack.cli("tenant", "create", tenant, "--alg", alg)
    assert made.returncode == 0, made.stderr
    user = unique("gus")
    credential = mint(stack, user, tenant=tenant)
    # A retried pair is accepted like the first: its refresh token refreshes.
    refresh = tapis_pair(stack, credential, tenant, user)["refresh_token"]["refresh_token"]
    first = exchange(stack, refresh)
    retried = exchange(stack, refresh)
    assert first[0] == retried[0] == 200
    copy = retried[1]["result"]["refresh_token"]
    assert copy["jti"] == first[1]["result"]["refresh_token"]["jti"]
    status, body = exchange(stack, copy["refresh_token"])
    assert status == 200, body
    # Past the limit, a retry is reuse: refused, and the family with it.
    refresh = tapis_pair(stack, credential, tenant, user)["refresh_token"]["refresh_token"]
    results = [exchange(stack, refresh) for _ in range(5)]
    assert [status for status, _ in results] == [200, 200, 200, 200, 400]
    access = results[0][1]["result"]["access_token"]["access_token"]
    wait_until(lambda: not accepted(stack, access), timeout=15, what="the access token refused")
    status, _ = exchange(stack, results[0][1]["result"]["refresh_token"]["refresh_token"])
    assert status == 400
