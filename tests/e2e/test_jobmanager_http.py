"""jobmanager API access tokens over plain HTTP (CONTRACTS.md §2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Stack
from tests.e2e.gateway_support import http, http_json, unique

pytestmark = pytest.mark.e2e


def introspect_self(stack: Stack, token: str) -> int:
    status, _ = http_json(
        "POST",
        f"{stack.gateway}/oauth2/introspect",
        raw=f"token={token}".encode(),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    return status


def test_body_less_create_gets_a_clear_400(stack: Stack) -> None:
    status, headers, body = http("POST", f"{stack.gateway}/v1/api_access_token")
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert b"identity is required" in body


def test_create_from_query_use_and_revoke(stack: Stack) -> None:
    identity = unique("job")
    status, made = http_json(
        "POST", f"{stack.gateway}/v1/api_access_token?identity={identity}&expiration=600"
    )
    assert status == 200 and set(made) == {"token", "identity", "expires_at"}
    assert made["identity"] == identity
    expires = datetime.fromisoformat(made["expires_at"])
    assert timedelta(seconds=590) < expires - datetime.now(UTC) <= timedelta(seconds=600)
    token = made["token"]
    # URL-safe, so it survives the query string of revoke.
    assert all(c.isalnum() or c in "-_" for c in token)
    # It is a Tessera credential of a service principal: it authenticates as itself, and is
    # not a user, so the user APIs refuse it.
    assert introspect_self(stack, token) == 200
    status, _ = http_json(
        "GET", f"{stack.gateway}/api/2.0/token/list", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 403
    status, revoked = http_json(
        "DELETE", f"{stack.gateway}/v1/api_access_token?identity={identity}&token={token}"
    )
    assert status == 200 and revoked == {"token": token, "identity": identity}
    assert introspect_self(stack, token) == 401
    status, error = http_json(
        "DELETE", f"{stack.gateway}/v1/api_access_token?identity={identity}&token={token}"
    )
    assert status == 404 and error == {"detail": "Token not found"}


def test_body_wins_over_query_and_iso_expiration(stack: Stack) -> None:
    identity = unique("job")
    when = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0, tzinfo=None).isoformat()
    status, made = http_json(
        "POST",
        f"{stack.gateway}/v1/api_access_token?identity=ignored",
        body={"identity": identity, "expiration": when},
        headers={"Content-Type": "application/json"},
    )
    assert status == 200 and made["identity"] == identity
    # Exactly the instant asked for, not re-derived from a rounded number of seconds.
    assert datetime.fromisoformat(made["expires_at"]) == datetime.fromisoformat(when + "+00:00")


@pytest.mark.parametrize(
    "body",
    [
        {"identity": ""},
        {"identity": 5},
        {"identity": "x" * 256},
        {"identity": "a", "expiration": 0},
        {"identity": "a", "expiration": -1},
        {"identity": "a", "expiration": "yesterday"},
        {"identity": "a", "expiration": "2001-01-01T00:00:00"},
        {"identity": "a", "expiration": True},
    ],
)
def test_bad_create_is_400(stack: Stack, body: dict) -> None:  # type: ignore[type-arg]
    status, error = http_json("POST", f"{stack.gateway}/v1/api_access_token", body=body)
    assert status == 400 and set(error) == {"detail"} and isinstance(error["detail"], str)


def test_non_json_body_is_400(stack: Stack) -> None:
    status, error = http_json("POST", f"{stack.gateway}/v1/api_access_token", raw=b"identity=x")
    assert status == 400 and "JSON" in error["detail"]


def test_missing_query_parameters_are_422_in_fastapi_shape(stack: Stack) -> None:
    status, error = http_json("DELETE", f"{stack.gateway}/v1/api_access_token")
    assert status == 422
    assert error == {
        "detail": [
            {"loc": ["query", "identity"], "msg": "Field required", "type": "missing"},
            {"loc": ["query", "token"], "msg": "Field required", "type": "missing"},
        ]
    }
    status, error = http_json("DELETE", f"{stack.gateway}/v1/api_access_token?identity=a")
    assert status == 422 and [d["loc"] for d in error["detail"]] == [["query", "token"]]


def test_another_identitys_token_is_not_found(stack: Stack) -> None:
    _, made = http_json("POST", f"{stack.gateway}/v1/api_access_token?identity={unique('a')}")
    status, error = http_json(
        "DELETE", f"{stack.gateway}/v1/api_access_token?identity=someone&token={made['token']}"
    )
    assert status == 404 and error == {"detail": "Token not found"}


def test_wrong_method_is_405(stack: Stack) -> None:
    status, error = http_json("GET", f"{stack.gateway}/v1/api_access_token")
    assert status == 405 and error == {"detail": "Method Not Allowed"}


def test_outside_the_internal_networks_is_403_first(stack: Stack) -> None:
    # Only loopback is internal by default; a forwarded address counts only from a trusted
    # proxy, so X-Forwarded-For from the loopback peer here is ignored and the call is allowed...
    status, _ = http_json(
        "POST",
        f"{stack.gateway}/v1/api_access_token?identity={unique('x')}",
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    assert status == 200
