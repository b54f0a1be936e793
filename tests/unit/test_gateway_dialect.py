"""The gateway's dialect layer without sockets: error shapes and the peer address."""

from __future__ import annotations

import ipaddress
import json
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from services.gateway.errors import VERSION, DialectError, dialect_errors, dialect_of, render
from services.gateway.requests import client_address


def _request(path: str, peer: str = "127.0.0.1", headers: dict[str, str] | None = None) -> Any:
    app = web.Application()
    app[VERSION] = "test"
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: (
        (peer, 4242) if key == "peername" else default
    )
    return make_mocked_request("GET", path, headers=headers or {}, app=app, transport=transport)


@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/v3/tokens", "tapis"),
        ("/v3/tenants/dev/.well-known/jwks.json", "tapis"),
        ("/v1/api_access_token", "jobmanager"),
        ("/v1/api_access_token/x", "jobmanager"),
        ("/v1/api_access_tokens", "tessera"),
        ("/v1/tokens", "lagrello"),
        ("/v1/tokens/%7Bid%7D", "lagrello"),
        ("/v1/tokensx", "tessera"),
        ("/api/2.0/token/list", "databricks"),
        ("/.well-known/databricks-config", "databricks"),
        ("/oauth2/introspect", "tessera"),
    ],
)
def test_dialect_is_chosen_by_path_prefix(path: str, dialect: str) -> None:
    assert dialect_of(path) == dialect


def _body(response: web.Response) -> Any:
    assert response.content_type == "application/json"
    assert response.headers["Content-Type"] == "application/json"  # no charset
    assert isinstance(response.body, bytes)
    return json.loads(response.body)


def test_tapis_client_errors_are_400_envelopes() -> None:
    response = render(_request("/v3/tokens"), 403, "no")
    assert response.status == 400
    body = _body(response)
    assert set(body) == {"result", "status", "message", "version", "metadata"}
    assert body["status"] == "error" and body["result"] is None and body["version"] == "test"


def test_each_dialect_has_its_own_error_keys() -> None:
    assert _body(render(_request("/v1/api_access_token"), 422, "bad")) == {"detail": "bad"}
    assert _body(render(_request("/v1/tokens"), 404, "gone")) == {
        "message": "gone",
        "errorType": "NotFound",
    }
    assert _body(render(_request("/api/2.0/token/list"), 404, "gone")) == {
        "error_code": "RESOURCE_DOES_NOT_EXIST",
        "message": "gone",
    }
    assert _body(render(_request("/api/2.0/token/create"), 400, "q", "QUOTA_EXCEEDED")) == {
        "error_code": "QUOTA_EXCEEDED",
        "message": "q",
    }


@pytest.mark.parametrize("path", ["/v3/tokens", "/v1/tokens", "/api/2.0/token/list", "/x"])
def test_unavailable_carries_retry_after(path: str) -> None:
    response = render(_request(path), 503, "down")
    assert response.status == 503
    assert response.headers["Retry-After"] == "1"


async def test_middleware_renders_missing_routes_and_faults() -> None:
    async def missing(request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotFound()

    async def broken(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("boom")

    async def refused(request: web.Request) -> web.StreamResponse:
        raise DialectError(403, "forbidden")

    other = await dialect_errors(_request("/nowhere"), missing)
    assert other.status == 404 and _body(other) == {"detail": "Not Found"}  # type: ignore[arg-type]
    tapis = await dialect_errors(_request("/v3/nowhere"), missing)
    assert tapis.status == 405
    fault = await dialect_errors(_request("/v1/tokens"), broken)
    assert fault.status == 500 and "boom" not in _body(fault)["message"]  # type: ignore[arg-type]
    lagrello = await dialect_errors(_request("/v1/tokens"), refused)
    assert lagrello.status == 403
    assert _body(lagrello) == {"message": "forbidden", "errorType": "Forbidden"}  # type: ignore[arg-type]


TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)


def test_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    request = _request("/v1/api_access_token", "192.0.2.7", {"X-Forwarded-For": "127.0.0.1"})
    assert client_address(request, TRUSTED) == ipaddress.ip_address("192.0.2.7")


def test_trusted_proxy_yields_right_most_untrusted_entry() -> None:
    headers = {"X-Forwarded-For": "127.0.0.1, 198.51.100.9, 10.1.1.1"}
    request = _request("/v1/api_access_token", "10.0.0.2", headers)
    assert client_address(request, TRUSTED) == ipaddress.ip_address("198.51.100.9")


def test_garbage_forwarded_entry_is_no_address() -> None:
    request = _request("/v1/api_access_token", "10.0.0.2", {"X-Forwarded-For": "not-an-ip"})
    assert client_address(request, TRUSTED) is None
