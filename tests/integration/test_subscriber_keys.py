"""The subscriber against the real keys service: its JWKS, its signatures, its key.revoked.

Keys, issuer, revocation, PostgreSQL and RabbitMQ are all real (tests/harness.py): when a key is
revoked, the revocation service asks the issuer which tokens it signed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import pytest

from shared.settings import AmqpNames
from shared.subscriber import Subscriber, SubscriberConfig
from tests.factories import access_claims, revoke_jwt_body
from tests.harness import Services, running_stack
from tests.integration.keys_support import refusal, refused_as
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    services: Services

    @property
    def session(self) -> aiohttp.ClientSession:
        return self.services.session

    @property
    def keys_url(self) -> str:
        return self.services.urls["keys"]

    @property
    def revocations_url(self) -> str:
        return f"{self.services.urls['revocation']}/internal/revocations"

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """A call to the keys service, which must succeed."""
        status, reply = await self.services.call(method, "keys", path, json=body)
        assert status == 200, reply
        return reply

    async def sign(self, tenant: str, **claims: Any) -> tuple[str, str, str]:
        """(token, jti, kid) of a Tapis-shaped access token signed by the tenant's key."""
        issuer = (await self.call("GET", f"/internal/tenants/{tenant}"))["issuer"]
        body = access_claims(tenant, issuer=issuer, **claims)
        reply = await self.call("POST", f"/internal/tenants/{tenant}/sign", {"claims": [body]})
        return reply["tokens"][0], body["jti"], reply["kid"]

    async def issue(self, tenant: str, username: str = "alice") -> tuple[str, str, str]:
        """(token, jti, kid) of an access token made by the issuer, which records it."""
        reply = await self.services.jwt(tenant, username)
        token = reply["access_token"]["access_token"]
        return token, reply["access_token"]["jti"], jwt.get_unverified_header(token)["kid"]


@pytest.fixture(scope="module")
async def stack(tessera_env: dict[str, str]) -> AsyncIterator[Stack]:
    async with running_stack(tessera_env, TESSERA_KEY_ACTIVATION_DELAY="0") as services:
        yield Stack(services)


@pytest.fixture
async def subscriber(stack: Stack) -> AsyncIterator[Subscriber]:
    sub = Subscriber(
        SubscriberConfig(
            revocations_url=stack.revocations_url,
            jwks_url_template=f"{stack.keys_url}/internal/tenants/{{tenant}}/jwks",
            amqp_url=stack.services.env["TESSERA_AMQP_URL"],
            amqp_names=AmqpNames.from_env(stack.services.env),
            name="keys-test",
        ),
        stack.session,
    )
    await sub.start()
    yield sub
    await sub.close()


async def _tenant(stack: Stack) -> str:
    return await stack.services.tenant()


async def test_token_signed_by_keys_verifies_until_revoked(
    stack: Stack, subscriber: Subscriber
) -> None:
    tenant = await _tenant(stack)
    token, jti, _ = await stack.sign(tenant)
    claims = await subscriber.verify_jwt(token)
    assert claims["jti"] == jti and claims["tapis/tenant_id"] == tenant

    status, reply = await stack.services.call(
        "POST", "revocation", "/internal/revocations", json=revoke_jwt_body(tenant, jti=jti)
    )
    assert status == 200 and [r["jti"] for r in reply["revocations"]] == [jti], reply
    # Through the outbox and the broker, not applied by hand.
    await wait_for(lambda: subscriber.is_revoked(jti), timeout=5)
    assert await refusal(subscriber, token) == "revoked"


async def test_a_remembered_token_is_still_refused_once_it_expires(
    stack: Stack, subscriber: Subscriber
) -> None:
    """Verified tokens are cached; the cache never outlives the token's exp."""
    tenant = await _tenant(stack)
    token, _, _ = await stack.sign(tenant, exp=int(time.time()) + 2)
    assert (await subscriber.verify_jwt(token))["tapis/tenant_id"] == tenant
    assert (await subscriber.verify_jwt(token))["tapis/tenant_id"] == tenant  # from the cache
    await wait_for(
        lambda: refused_as(subscriber, token, "expired"), timeout=5, what="the token expired"
    )


async def test_an_immediate_rotation_is_learnt_from_key_rotated_not_the_refetch_limit(
    stack: Stack, subscriber: Subscriber
) -> None:
    """The new key signs at once; a subscriber that fetched the JWKS a moment ago would refuse
    its tokens for jwks_refetch_interval (5 s) if key.rotated did not make it refetch."""
    tenant = await _tenant(stack)
    old, _, old_kid = await stack.sign(tenant)
    await subscriber.verify_jwt(old)  # the JWKS is fetched now
    await stack.call("POST", f"/internal/tenants/{tenant}/keys/rotate", {"immediate": True})
    new, _, new_kid = await stack.sign(tenant)
    assert new_kid != old_kid

    async def learnt() -> bool:
        reason = await refusal(subscriber, new)
        assert reason in (None, "unknown_kid")
        return reason is None

    await wait_for(learnt, timeout=2, what="the rotated-in key learnt from key.rotated")
    assert await refusal(subscriber, old) is None  # the old key stays published


async def test_token_of_one_tenant_does_not_verify_as_another(
    stack: Stack, subscriber: Subscriber
) -> None:
    ours, theirs = await _tenant(stack), await _tenant(stack)
    token, _, _ = await stack.sign(theirs, **{"tapis/tenant_id": ours})
    # Signed by the other tenant's key but claiming ours: our JWKS has no such kid.
    assert await refusal(subscriber, token) == "unknown_kid"


async def test_revoked_key_refuses_everything_it_signed_at_once(
    stack: Stack, subscriber: Subscriber
) -> None:
    tenant = await _tenant(stack)
    # Made by the issuer, which records the key that signed it: when the key is revoked, the
    # revocation service learns the token from the issuer and revokes it.
    token, jti, kid = await stack.issue(tenant)
    await subscriber.verify_jwt(token)
    assert not subscriber.is_revoked(jti)

    await stack.call("POST", f"/internal/tenants/{tenant}/keys/{kid}/revoke")

    await wait_for(
        lambda: refused_as(subscriber, token, "key_revoked"), timeout=5, what="the key revoked"
    )
    await wait_for(lambda: subscriber.is_revoked(jti), timeout=10)
    # Another key took over: new tokens verify.
    fresh, fresh_jti, new_kid = await stack.issue(tenant)
    assert new_kid != kid
    assert (await subscriber.verify_jwt(fresh))["jti"] == fresh_jti
    assert not subscriber.is_revoked(fresh_jti)
