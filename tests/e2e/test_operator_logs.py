"""What an operator reads in the logs: why and by whom a request failed, a quiet idle stack,
and migration lines that are JSON like every other line."""

from __future__ import annotations

import http.client
import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import ROOT, Stack, private_env, start_stack, stop_stack
from tests.e2e.gateway_support import http_json, mint
from tests.tls import identity_context
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e


def _records(stack: Stack) -> list[dict[str, Any]]:
    records = []
    for line in stack.logs().splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def _request_line(stack: Stack, request_id: str, service: str) -> dict[str, Any]:
    """One service's line for one request (the id follows it to other services), waited for."""

    def found() -> dict[str, Any] | None:
        for record in _records(stack):
            if (
                record.get("event") == "request"
                and record.get("request_id") == request_id
                and record.get("service") == service
            ):
                return record
        return None

    return wait_until(found, what=f"the {service} request line of {request_id}")


def _rid() -> str:
    return f"why-{secrets.token_hex(6)}"


def test_a_refused_internal_call_says_why_and_who(stack: Stack) -> None:
    rid = _rid()
    status, body = http_json(
        "POST",
        f"{stack.urls['keys']}/internal/tenants/no-such-tenant/keys/rotate",
        body={},
        headers={"X-Request-ID": rid, "X-Tessera-Actor": "operator"},
    )
    assert status == 404, body
    line = _request_line(stack, rid, "keys")
    assert line["status"] == 404
    assert line["actor"] == "operator"
    assert line["error"] == body["error"]
    assert line["reason"] == body["message"]


def test_a_refused_public_call_says_why_and_who_once_known(stack: Stack) -> None:
    token = mint(stack, "log-alice")
    rid = _rid()
    status, body = http_json(
        "POST",
        f"{stack.gateway}/api/2.0/token/create",
        body={"lifetime_seconds": 0},
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": rid},
    )
    assert status == 400, body
    line = _request_line(stack, rid, "gateway")
    assert line["actor"] == "log-alice@dev"
    assert line["error"] == "INVALID_PARAMETER_VALUE"
    assert line["reason"] == body["message"]
    assert token not in json.dumps(line)

    rid = _rid()
    status, body = http_json(
        "GET",
        f"{stack.gateway}/api/2.0/token/list",
        headers={"Authorization": "Bearer dapi" + "0" * 32, "X-Request-ID": rid},
    )
    assert status == 401, body
    line = _request_line(stack, rid, "gateway")
    assert line["error"] == "UNAUTHENTICATED" and line["reason"] == body["message"]
    assert "actor" not in line  # nobody was authenticated
    assert "dapi" + "0" * 32 not in json.dumps(line)


def test_an_actor_never_carries_over_to_the_next_request_on_a_connection(stack: Stack) -> None:
    keys = urlsplit(stack.urls["keys"])
    connection = http.client.HTTPSConnection(
        keys.hostname or "127.0.0.1",
        keys.port,
        timeout=10,
        # The gateway's certificate: a Tessera service, whose X-Tessera-Actor is believed.
        context=identity_context("gateway"),
    )
    first, second = _rid(), _rid()
    try:
        connection.request(
            "GET", "/internal/tenants/dev", headers={"X-Request-ID": first, "X-Tessera-Actor": "x"}
        )
        assert connection.getresponse().read()
        connection.request("GET", "/internal/tenants/no-such", headers={"X-Request-ID": second})
        response = connection.getresponse()
        response.read()
        assert response.status == 404
    finally:
        connection.close()
    assert _request_line(stack, first, "keys")["actor"] == "x"
    assert "actor" not in _request_line(stack, second, "keys")


def test_an_idle_stack_logs_its_feed_polls_at_debug_only(
    tessera_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(private_env(tessera_env, "quiet"), TESSERA_LOG_LEVEL="debug")
    stack = start_stack(env, tmp_path / "dev.log")
    try:
        ready_at = stack.logs().index("Tessera gateway listening on")

        def feed_lines(level: str) -> list[dict[str, Any]]:
            tail = stack.logs()[ready_at:]
            return [
                r
                for r in map(json.loads, (x for x in tail.splitlines() if x.startswith("{")))
                if r.get("event") == "request"
                and r.get("path") == "/internal/revocations"
                and r.get("level") == level
            ]

        # The subscriber polls every 5 s: wait for one poll, seen at debug.
        wait_until(lambda: feed_lines("debug"), timeout=30, what="a feed poll logged at debug")
        assert feed_lines("info") == []
    finally:
        stop_stack(stack)


def test_migration_lines_are_json(tessera_env: dict[str, str]) -> None:
    env = private_env(tessera_env, "migjson")
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "migrate", "--service", "keys"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    records = [json.loads(line) for line in lines]  # every line: a JSON object
    applied = [r for r in records if r["event"] == "migration applied"]
    assert {r["component"] for r in applied} == {"bus", "keys"}
    assert records[-1]["event"] == "migrations up to date"
    assert all(r["service"] == "migrate" and r["level"] == "info" for r in records)
