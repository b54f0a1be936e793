"""Revocation against the real issuer and keys services: selectors resolve, the issuer applies.

Everything is real: keys, issuer and revocation in this process on their own ports, with
PostgreSQL and RabbitMQ.
"""

from __future__ import annotations

import secrets
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from services.cli import migrate_all
from services.issuer.app import create_app as create_issuer_app
from services.issuer.settings import Settings as IssuerSettings
from services.keys.app import create_app as create_keys_app
from services.keys.settings import Settings as KeysSettings
from tests.integration.revocation_support import (
    RevocationService,
    private_env,
    revoke,
    start_revocation,
)
from tests.tls import allowed_session, serve
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Services:
    revocation: RevocationService
    urls: dict[str, str]
    session: aiohttp.ClientSession

    async def call(self, service: str, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.urls[service]}{path}"
        async with self.session.request(method, url, json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def tenant(self) -> str:
        name = f"t-{secrets.token_hex(4)}"
        await self.call("keys", "POST", "/internal/tenants", {"id": name})
        return name

    async def token(self, tenant: str, subject: str = "alice", kind: str = "opaque") -> Any:
        body = {"tenant": tenant, "subject": subject, "kind": kind, "minter": {"kind": "operator"}}
        return await self.call("issuer", "POST", "/internal/tokens", body)

    async def authenticates(self, value: str) -> bool:
        url = f"{self.urls['issuer']}/internal/authenticate"
        async with self.session.post(url, json={"token": value}) as resp:
            return resp.status == 200


@pytest.fixture(scope="module")
async def services(tessera_env: dict[str, str]) -> AsyncIterator[Services]:
    ports = {name: _free_port() for name in ("keys", "issuer")}
    urls = {name: f"https://127.0.0.1:{port}" for name, port in ports.items()}
    env = private_env(
        tessera_env,
        TESSERA_ISSUER_URL=urls["issuer"],
        TESSERA_KEYS_URL=urls["keys"],
        TESSERA_KEY_ACTIVATION_DELAY="0",
    )
    base = env["TESSERA_REVOCATION_DATABASE_URL"]
    env["TESSERA_KEYS_DATABASE_URL"] = f"{base}_keys"
    env["TESSERA_ISSUER_DATABASE_URL"] = f"{base}_issuer"
    revocation_port = _free_port()
    env["TESSERA_REVOCATION_URL"] = f"https://127.0.0.1:{revocation_port}"
    await migrate_all(env, ["keys", "issuer"])
    keys = await serve(create_keys_app(KeysSettings.from_env(env)), port=ports["keys"])
    issuer = await serve(create_issuer_app(IssuerSettings.from_env(env)), port=ports["issuer"])
    revocation = await start_revocation(env, port=revocation_port)
    async with allowed_session(env) as session:
        yield Services(revocation, urls, session)
    await revocation.close()
    await issuer.close()
    await keys.close()


async def _wait_refused(services: Services, value: str, timeout: float = 10.0) -> None:
    async def refused() -> bool:
        return not await services.authenticates(value)

    await wait_for(refused, timeout=timeout, what="the token refused by the issuer")


async def test_each_selector_revokes_the_issuers_token_and_the_issuer_applies_it(
    services: Services,
) -> None:
    tenant = await services.tenant()
    by_id, by_display, by_value = (
        await services.token(tenant),
        await services.token(tenant, kind="databricks"),
        await services.token(tenant),
    )
    selectors = [
        {"token_id": by_id["token"]["id"]},
        {"display_id": by_display["token"]["display_id"]},
        {"token": by_value["value"]},
    ]
    for created, selector in zip((by_id, by_display, by_value), selectors, strict=True):
        assert await services.authenticates(created["value"])
        status, reply = await revoke(
            services.session, services.revocation, {"tenant": tenant, **selector}
        )
        assert status == 200, reply
        revocation = reply["revocations"][0]
        assert revocation["token_id"] == created["token"]["id"]
        assert revocation["display_id"] == created["token"]["display_id"]
        assert "value" not in revocation and created["value"] not in str(reply)
        await _wait_refused(services, created["value"])


async def test_subject_revokes_every_token_of_the_user_only(services: Services) -> None:
    tenant = await services.tenant()
    alices = [await services.token(tenant, "alice") for _ in range(3)]
    bobs = await services.token(tenant, "bob")
    status, reply = await revoke(
        services.session, services.revocation, {"tenant": tenant, "subject": "alice"}
    )
    assert status == 200 and reply["created"] == 3
    assert {r["token_id"] for r in reply["revocations"]} == {a["token"]["id"] for a in alices}
    for alice in alices:
        await _wait_refused(services, alice["value"])
    assert await services.authenticates(bobs["value"])


async def test_jwt_refresh_family_is_revoked_through_the_issuer(services: Services) -> None:
    tenant = await services.tenant()
    pair = await services.call(
        "issuer",
        "POST",
        "/internal/jwt",
        {
            "tenant": tenant,
            "username": "alice",
            "account_type": "user",
            "minter": {"kind": "operator"},
            "generate_refresh_token": True,
        },
    )
    refresh_jti = pair["refresh_token"]["jti"]
    record = await services.call(
        "issuer", "GET", f"/internal/tokens/lookup?tenant={tenant}&id={refresh_jti}"
    )
    assert record["family_id"]
    status, reply = await revoke(
        services.session,
        services.revocation,
        {"tenant": tenant, "family_id": record["family_id"]},
    )
    assert status == 200 and reply["created"] >= 1
    assert refresh_jti in {r["jti"] for r in reply["revocations"]}


async def test_unknown_and_foreign_tokens_are_404_and_nothing_is_revoked(
    services: Services,
) -> None:
    ours, theirs = await services.tenant(), await services.tenant()
    foreign = await services.token(theirs)
    async with services.session.get(services.revocation.revocations_url) as resp:
        before = (await resp.json())["current_seq"]
    for selector in (
        {"token_id": foreign["token"]["id"]},
        {"token": foreign["value"]},
        {"token_id": str(uuid.uuid4())},
        {"token_id": "not-a-uuid"},
    ):
        status, reply = await revoke(
            services.session, services.revocation, {"tenant": ours, **selector}
        )
        assert status == 404 and reply["error"] == "unknown_token", (selector, reply)
    async with services.session.get(services.revocation.revocations_url) as resp:
        assert (await resp.json())["current_seq"] == before
    assert await services.authenticates(foreign["value"])
