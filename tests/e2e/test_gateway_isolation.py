"""In every dialect: a revoked or expired credential is refused on the very next request, and
one tenant's credential never reaches another tenant's tokens."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Stack
from tests.e2e.gateway_support import ensure_tenant, http, http_json, mint, unique
from tests.factories import bearer
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e


def refused_everywhere(stack: Stack, token: str) -> None:
    """The credential is refused by every dialect, each in its own shape."""
    g = stack.gateway
    status, body = http_json("GET", f"{g}/api/2.0/token/list", headers=bearer(token))
    assert (status, body["error_code"]) == (401, "UNAUTHENTICATED")
    status, body = http_json("GET", f"{g}/v1/tokens", headers=bearer(token))
    assert (status, body["errorType"]) == (403, "Forbidden")
    status, body = http_json(
        "POST",
        f"{g}/v3/tokens",
        body={"account_type": "user", "token_tenant_id": "dev", "token_username": "u"},
        headers={"X-Tapis-Token": token, "Content-Type": "application/json"},
    )
    assert (status, body["status"]) == (400, "error")
    status, body = http_json(
        "POST",
        f"{g}/oauth2/introspect",
        raw=f"token={token}".encode(),
        headers={**bearer(token), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 401


@pytest.mark.parametrize("dialect", ["opaque", "databricks", "jobmanager", "tapis"])
def test_revoked_credential_is_refused_on_the_very_next_request(stack: Stack, dialect: str) -> None:
    user = unique("rv")
    token = mint(stack, user, dialect=dialect, permissions=("admin",))
    # It works as itself (and is now in the gateway's cache); a jobmanager identity may do
    # little else (docs/authorization.md), but every principal may introspect.
    status, body = http_json(
        "POST",
        f"{stack.gateway}/oauth2/introspect",
        raw=f"token={token}".encode(),
        headers={**bearer(token), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200 and body["active"]
    admin = mint(stack, unique("adm"), permissions=("admin",), dialect="opaque")
    status, _ = http_json(
        "POST",
        f"{stack.gateway}/oauth2/revoke",
        raw=f"token={token}".encode(),
        headers={**bearer(admin), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200
    refused_everywhere(stack, token)


@pytest.mark.parametrize("dialect", ["opaque", "databricks", "tapis"])
def test_expired_credential_is_refused(stack: Stack, dialect: str) -> None:
    token = mint(stack, unique("ex"), dialect=dialect, ttl=1)
    wait_until(
        lambda: (
            http_json("GET", f"{stack.gateway}/api/2.0/token/list", headers=bearer(token))[0] == 401
        ),
        what="the 1 s credential refused",
    )
    refused_everywhere(stack, token)


def test_introspection_shows_only_the_callers_tenant(stack: Stack) -> None:
    ensure_tenant(stack, "other")
    mine = mint(stack, unique("in"), permissions=("admin",))
    theirs = mint(stack, unique("in"), tenant="other")
    form = {**bearer(mine), "Content-Type": "application/x-www-form-urlencoded"}
    status, body = http_json(
        "POST", f"{stack.gateway}/oauth2/introspect", raw=f"token={mine}".encode(), headers=form
    )
    assert status == 200 and body["active"] is True and body["tenant"] == "dev"
    status, body = http_json(
        "POST", f"{stack.gateway}/oauth2/introspect", raw=f"token={theirs}".encode(), headers=form
    )
    assert body == {"active": False}
    # Nor can it revoke another tenant's credential: RFC 7009 answers 200, and nothing happens.
    http_json(
        "POST", f"{stack.gateway}/oauth2/revoke", raw=f"token={theirs}".encode(), headers=form
    )
    status, _ = http_json("GET", f"{stack.gateway}/api/2.0/token/list", headers=bearer(theirs))
    assert status == 200


def test_revocation_feed_is_per_tenant(stack: Stack) -> None:
    ensure_tenant(stack, "other")
    victim = mint(stack, unique("fd"), dialect="opaque")
    admin = mint(stack, unique("fa"), permissions=("admin",), dialect="opaque")
    http_json(
        "POST",
        f"{stack.gateway}/oauth2/revoke",
        raw=f"token={victim}".encode(),
        headers={**bearer(admin), "Content-Type": "application/x-www-form-urlencoded"},
    )
    status, feed = http_json(
        "GET", f"{stack.gateway}/v1/revocations?since=0", headers=bearer(admin)
    )
    assert status == 200 and feed["revocations"]
    assert {r["tenant"] for r in feed["revocations"]} == {"dev"}
    outsider = mint(stack, unique("fo"), tenant="other")
    status, feed = http_json(
        "GET", f"{stack.gateway}/v1/revocations?since=0", headers=bearer(outsider)
    )
    assert status == 200 and all(r["tenant"] == "other" for r in feed["revocations"])


def test_refusal_messages_say_it_once(stack: Stack) -> None:
    g = stack.gateway
    status, body = http_json("GET", f"{g}/api/2.0/token/list", headers=bearer("dapi" + "0" * 32))
    assert status == 401
    assert body["message"] == "invalid credential: unknown, expired or revoked"
    expired = mint(stack, unique("exp"), dialect="tapis", ttl=1)

    def revoke_expired() -> tuple[int, Any] | None:
        answer = http_json(
            "POST",
            f"{g}/v3/tokens/revoke",
            body={"token": expired},
            headers={"Content-Type": "application/json"},
        )
        return answer if "expired" in answer[1]["message"] else None

    status, body = wait_until(revoke_expired, what="the 1 s token refused as expired")
    assert status == 400 and body["message"] == "Invalid token: expired"


def _failures(stack: Stack, dialect: str, reason: str) -> float:
    status, _, raw = http("GET", f"{stack.ops['gateway']}/metrics")
    assert status == 200
    label = f'tessera_authentication_failures_total{{dialect="{dialect}",reason="{reason}"}} '
    for line in raw.decode().splitlines():
        if line.startswith(label):
            return float(line.split()[-1])
    return 0.0


def test_authentication_failures_are_counted_by_dialect_and_reason(stack: Stack) -> None:
    g = stack.gateway
    before = _failures(stack, "databricks", "unknown")
    status, _ = http_json("GET", f"{g}/api/2.0/token/list", headers=bearer("dapi" + "1" * 32))
    assert status == 401
    assert _failures(stack, "databricks", "unknown") == before + 1
    before = _failures(stack, "lagrello", "malformed")
    status, _ = http_json("GET", f"{g}/v1/tokens", headers=bearer("not-a-credential"))
    assert status == 403
    assert _failures(stack, "lagrello", "malformed") == before + 1
