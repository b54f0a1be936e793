"""The typed clients of the internal services (shared.clients): one error mapping, URLs from
checked identifiers. A scripted service answers over real mutual TLS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from shared.authz import Kind, Principal
from shared.clients.base import client_session, service_error
from shared.clients.issuer import IssuerClient, JwtRequest
from shared.clients.keys import KeysClient
from shared.clients.revocation import RevocationClient
from shared.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    QuotaExceeded,
    TesseraError,
    Unavailable,
)
from shared.pki import init_pki
from shared.tls import ReloadingTls, TlsFiles
from tests.conftest import free_port_block

pytestmark = pytest.mark.integration

SECRET = "tsr_" + "A1b2C3d4E5" * 5  # credential-shaped: never passed on in clear


@dataclass
class Script:
    """What the fake service answers, by ``METHOD /path``, and what it was asked."""

    answers: dict[str, tuple[int, Any, str]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    never: asyncio.Event = field(default_factory=asyncio.Event)

    def answer(self, route: str, status: int, body: Any, content_type: str = "json") -> None:
        self.answers[route] = (status, body, content_type)


def fake_service(script: Script) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        route = f"{request.method} {request.raw_path.split('?')[0]}"
        script.asked.append(route)
        if route not in script.answers:
            await script.never.wait()  # hangs: the client's timeout decides
        status, body, kind = script.answers[route]
        if kind == "json":
            return web.json_response(body, status=status)
        return web.Response(status=status, text=str(body), content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.fixture
async def service(pki_dir: Path) -> AsyncIterator[tuple[str, Script]]:
    script = Script()
    server = TestServer(fake_service(script))
    tls = ReloadingTls(TlsFiles.from_dir(pki_dir, "keys"))
    await server.start_server(ssl=tls.listener())
    yield str(server.make_url("")).rstrip("/").replace("http://", "https://"), script
    script.never.set()
    await server.close()


def gateway_tls(pki_dir: Path) -> ReloadingTls:
    return ReloadingTls(TlsFiles.from_dir(pki_dir, "gateway"))


async def test_a_refusal_is_the_shared_error_of_its_status_with_the_services_code(
    service: tuple[str, Script], pki_dir: Path
) -> None:
    url, script = service
    script.answer(
        "POST /internal/tokens",
        409,
        {"error": "quota_exceeded", "message": f"quota of 1 reached for {SECRET}"},
    )
    script.answer("POST /internal/jwt", 403, {"error": "forbidden", "message": "not allowed"})
    script.answer("POST /internal/jwt/refresh", 400, "<html>bad</html>", "html")
    script.answer("GET /internal/tenants/acme", 404, {"error": "unknown_tenant", "message": "no"})
    async with client_session(gateway_tls(pki_dir)) as session:
        issuer, keys = IssuerClient(session, url), KeysClient(session, url)
        with pytest.raises(QuotaExceeded) as quota:
            await issuer.create_token("acme", "alice", "opaque", minter=_minter())
        assert (quota.value.status, quota.value.code) == (409, "quota_exceeded")
        assert SECRET not in quota.value.message and "quota of 1 reached" in quota.value.message
        with pytest.raises(Forbidden) as refused:
            await issuer.create_jwt(_jwt_request())
        assert refused.value.message == "not allowed"
        with pytest.raises(BadRequest) as bad:
            await issuer.refresh_jwt("x")
        assert bad.value.code == "bad_request" and "<html>" not in bad.value.message
        assert await keys.tenant("acme") is None  # unknown: a value, not an error


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (500, {"error": "internal", "message": "boom"}, "json"),
        (503, "<html>down</html>", "html"),
        (200, "not json", "html"),
        (200, {"unexpected": True}, "json"),
        (200, ["a", "list"], "json"),
    ],
)
async def test_a_failing_or_garbled_service_is_unavailable_never_an_internal_error(
    service: tuple[str, Script], pki_dir: Path, status: int, body: Any, kind: str
) -> None:
    url, script = service
    script.answer("GET /internal/tenants/acme", status, body, kind)
    script.answer("POST /internal/revocations", status, body, kind)
    async with client_session(gateway_tls(pki_dir)) as session:
        with pytest.raises(Unavailable) as keys_error:
            await KeysClient(session, url).tenant("acme")
        with pytest.raises(Unavailable):
            await RevocationClient(session, url).revoke("acme", token_id="t", reason="r")
    assert keys_error.value.status == 503 and "keys service" in keys_error.value.message


async def test_unreachable_refused_at_the_handshake_or_too_slow_is_unavailable(
    service: tuple[str, Script], pki_dir: Path, tmp_path: Path
) -> None:
    url, script = service
    closed = f"https://127.0.0.1:{free_port_block(1)}"
    stranger = tmp_path / "other"
    init_pki(stranger)
    async with client_session(gateway_tls(pki_dir)) as session:
        with pytest.raises(Unavailable):
            await KeysClient(session, closed).tenant("acme")
    async with client_session(ReloadingTls(TlsFiles.from_dir(stranger, "gateway"))) as session:
        with pytest.raises(Unavailable):
            await KeysClient(session, url).tenant("acme")
    async with client_session(gateway_tls(pki_dir), timeout=0.5) as session:
        with pytest.raises(Unavailable):
            await KeysClient(session, url).tenant("hangs")  # the script never answers it
    assert script.asked == ["GET /internal/tenants/hangs"]


async def test_identifiers_are_checked_and_quoted_before_any_call(
    service: tuple[str, Script], pki_dir: Path
) -> None:
    url, script = service
    script.answer("POST /internal/tenants/acme/keys/k-1/revoke", 200, {"kid": "k-1"})
    script.answer("GET /internal/tokens/lookup", 404, {"error": "unknown_token", "message": "no"})
    async with client_session(gateway_tls(pki_dir)) as session:
        keys, issuer = KeysClient(session, url), IssuerClient(session, url)
        for hostile in ("../tenants", "acme/keys", "acme?x=1", "ACME", "", "a" * 64):
            assert await keys.tenant(hostile) is None
            with pytest.raises(NotFound) as unknown:
                await keys.sign(hostile, [{}])
            assert unknown.value.code == "unknown_tenant"
        for kid in ("../../x", "k/1", "k 1"):
            with pytest.raises(NotFound):
                await keys.revoke_key("acme", kid)
        assert await issuer.lookup("acme", token_id="../x") is None
        assert await issuer.lookup("acme", display_id="ABC") is None
        assert script.asked == []  # nothing malformed reached the service
        assert await keys.revoke_key("acme", "k-1") == {"kid": "k-1"}
        assert await issuer.lookup("acme", value="a&tenant=other") is None
    assert script.asked == [
        "POST /internal/tenants/acme/keys/k-1/revoke",
        "GET /internal/tokens/lookup",
    ]


def test_a_service_error_never_carries_a_credential() -> None:
    error = service_error(
        "issuer", 400, {"error": "bad", "message": SECRET, "details": {"token": "x", "n": SECRET}}
    )
    assert isinstance(error, BadRequest) and error.code == "bad"
    assert SECRET not in json.dumps(error.to_json())
    assert isinstance(service_error("issuer", 418, None), TesseraError)
    assert service_error("issuer", 418, None).status == 418


def _minter() -> Principal:
    return Principal(Kind.USER, "acme", "alice")


def _jwt_request() -> JwtRequest:
    return JwtRequest("acme", "alice", "user", _minter())
