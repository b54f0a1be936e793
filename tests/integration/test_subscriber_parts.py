"""The subscriber's two halves used alone, against the real keys, issuer and revocation
services with PostgreSQL and RabbitMQ: a follower without a verifier hears typed key events,
and a verifier answers from a revocation set its caller keeps."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from shared.bus.events import KeyRevoked, KeyRotated
from shared.settings import AmqpNames
from shared.subscriber import InvalidToken, JwtVerifier, RevocationFollower, SubscriberConfig
from tests.factories import revoke_jwt_body
from tests.harness import Services, running_stack
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def stack(tessera_env: dict[str, str]) -> AsyncIterator[Services]:
    async with running_stack(tessera_env, TESSERA_KEY_ACTIVATION_DELAY="0") as services:
        yield services


def _config(stack: Services) -> SubscriberConfig:
    return SubscriberConfig(
        revocations_url=f"{stack.urls['revocation']}/internal/revocations",
        jwks_url_template=f"{stack.urls['keys']}/internal/tenants/{{tenant}}/jwks",
        amqp_url=stack.env["TESSERA_AMQP_URL"],
        amqp_names=AmqpNames.from_env(stack.env),
        name="parts",
    )


async def _signed(stack: Services, tenant: str) -> tuple[str, str, str]:
    """A token the keys service signed with the tenant's active key: (token, jti, kid)."""
    status, row = await stack.call("GET", "keys", f"/internal/tenants/{tenant}")
    assert status == 200, row
    claims = {
        "jti": str(uuid.uuid4()),
        "iss": row["issuer"],
        "sub": f"alice@{tenant}",
        "tapis/tenant_id": tenant,
        "exp": int(time.time()) + 600,
    }
    path = f"/internal/tenants/{tenant}/sign"
    status, reply = await stack.call("POST", "keys", path, json={"claims": [claims]})
    assert status == 200, reply
    return reply["tokens"][0], claims["jti"], reply["kid"]


async def test_a_follower_alone_follows_revocations_and_hears_key_events_typed(
    stack: Services,
) -> None:
    follower = RevocationFollower(_config(stack), stack.session)
    heard: list[tuple[str, KeyRevoked | KeyRotated]] = []
    follower.add_key_listener(lambda tenant, event: heard.append((tenant, event)))
    await follower.start()
    try:
        tenant = await stack.tenant()
        _, jti, kid = await _signed(stack, tenant)
        status, _ = await stack.call(
            "POST", "revocation", "/internal/revocations", json=revoke_jwt_body(tenant, jti=jti)
        )
        assert status == 200
        await wait_for(lambda: follower.is_revoked(jti))

        status, rotated = await stack.call(
            "POST", "keys", f"/internal/tenants/{tenant}/keys/rotate"
        )
        assert status == 200, rotated
        status, _ = await stack.call(
            "POST", "keys", f"/internal/tenants/{tenant}/keys/{kid}/revoke"
        )
        assert status == 200
        await wait_for(lambda: len([t for t, _ in heard if t == tenant]) == 2)
        # Published in that order, but an order the test need not rely on.
        assert {event for t, event in heard if t == tenant} == {
            KeyRotated(
                kid=rotated["kid"],
                alg=rotated["alg"],
                previous_kid=kid,
                activates_at=datetime.fromisoformat(rotated["activates_at"]),
            ),
            KeyRevoked(kid=kid),
        }
    finally:
        await follower.close()


async def test_a_verifier_alone_refuses_what_its_callers_set_holds_and_a_revoked_key(
    stack: Services,
) -> None:
    revoked: set[str] = set()
    verifier = JwtVerifier(_config(stack), stack.session, revoked.__contains__)
    tenant = await stack.tenant()
    token, jti, kid = await _signed(stack, tenant)
    assert (await verifier.verify(token))["jti"] == jti
    revoked.add(jti)
    # Refused although the token sits in the verifier's cache of verified tokens.
    with pytest.raises(InvalidToken) as refused:
        await verifier.verify(token)
    assert refused.value.reason == "revoked"

    other, _, same_kid = await _signed(stack, tenant)
    assert same_kid == kid and await verifier.verify(other)
    verifier.on_key_event(tenant, KeyRevoked(kid=kid))
    with pytest.raises(InvalidToken) as refused:
        await verifier.verify(other)
    assert refused.value.reason == "key_revoked"
