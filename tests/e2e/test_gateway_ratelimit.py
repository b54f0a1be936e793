"""Rate limits answer in each dialect's own shape, with Retry-After."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Stack, start_stack, stop_stack
from tests.e2e.gateway_support import http, mint

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def limited(
    tessera_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    env = dict(
        tessera_env,
        TESSERA_RATE_LIMIT_PRINCIPAL="1",
        TESSERA_RATE_LIMIT_PRINCIPAL_BURST="3",
    )
    stack = start_stack(env, tmp_path_factory.mktemp("limited") / "dev.log")
    yield stack
    stop_stack(stack)


def exhaust(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    for _ in range(10):
        status, response_headers, body = http("GET", url, headers=headers)
        if status == 429:
            return status, response_headers, body
    raise AssertionError("never limited")


def test_databricks_gets_request_limit_exceeded(limited: Stack) -> None:
    token = mint(limited, "busy")
    status, headers, body = exhaust(
        f"{limited.gateway}/api/2.0/token/list", {"Authorization": f"Bearer {token}"}
    )
    assert status == 429 and int(headers["Retry-After"]) >= 1
    assert b'"error_code":"REQUEST_LIMIT_EXCEEDED"' in body


def test_lagrello_and_tapis_shapes(limited: Stack) -> None:
    token = mint(limited, "busier", dialect="opaque")
    status, headers, body = exhaust(
        f"{limited.gateway}/v1/tokens", {"Authorization": f"Bearer {token}"}
    )
    assert status == 429 and b'"errorType":"TooManyRequests"' in body and "Retry-After" in headers
    # The same principal is limited in every dialect: the Tapis envelope, status error.
    status, headers, body = http(
        "POST",
        f"{limited.gateway}/v3/tokens",
        body={"account_type": "user", "token_tenant_id": "dev", "token_username": "busier"},
        headers={"X-Tapis-Token": token, "Content-Type": "application/json"},
    )
    assert status == 429 and b'"status":"error"' in body
