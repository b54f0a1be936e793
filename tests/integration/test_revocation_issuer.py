"""Revocation against the real issuer and keys services: selectors resolve, the issuer applies.

Everything is real: keys, issuer and revocation in this process on their own ports, with
PostgreSQL and RabbitMQ.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.harness import Services, running_stack
from tests.integration.revocation_support import revoke
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def services(tessera_env: dict[str, str]) -> AsyncIterator[Services]:
    async with running_stack(tessera_env, TESSERA_KEY_ACTIVATION_DELAY="0") as stack:
        yield stack


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
            services.session, services.running["revocation"], {"tenant": tenant, **selector}
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
        services.session, services.running["revocation"], {"tenant": tenant, "subject": "alice"}
    )
    assert status == 200 and reply["created"] == 3
    assert {r["token_id"] for r in reply["revocations"]} == {a["token"]["id"] for a in alices}
    for alice in alices:
        await _wait_refused(services, alice["value"])
    assert await services.authenticates(bobs["value"])


async def test_jwt_refresh_family_is_revoked_through_the_issuer(services: Services) -> None:
    tenant = await services.tenant()
    pair = await services.jwt(tenant, refresh=True)
    refresh_jti = pair["refresh_token"]["jti"]
    record = await services.ok(
        "GET", "issuer", "/internal/tokens/lookup", params={"tenant": tenant, "id": refresh_jti}
    )
    assert record["family_id"]
    status, reply = await revoke(
        services.session,
        services.running["revocation"],
        {"tenant": tenant, "family_id": record["family_id"]},
    )
    assert status == 200 and reply["created"] >= 1
    assert refresh_jti in {r["jti"] for r in reply["revocations"]}


async def test_unknown_and_foreign_tokens_are_404_and_nothing_is_revoked(
    services: Services,
) -> None:
    ours, theirs = await services.tenant(), await services.tenant()
    foreign = await services.token(theirs)
    before = (await services.ok("GET", "revocation", "/internal/revocations"))["current_seq"]
    for selector in (
        {"token_id": foreign["token"]["id"]},
        {"token": foreign["value"]},
        {"token_id": str(uuid.uuid4())},
        {"token_id": "not-a-uuid"},
    ):
        status, reply = await revoke(
            services.session, services.running["revocation"], {"tenant": ours, **selector}
        )
        assert status == 404 and reply["error"] == "unknown_token", (selector, reply)
    after = await services.ok("GET", "revocation", "/internal/revocations")
    assert after["current_seq"] == before
    assert await services.authenticates(foreign["value"])
