"""Revocation has one path (issue 17): the revocation service commits, then tells the issuer
before it answers, so the issuer counts a revocation when the revoke call returns, without
waiting for its event."""

from __future__ import annotations

import aio_pika
import pytest

from shared.clients.base import client_session
from shared.settings import AmqpNames
from tests.harness import running_stack as running_services
from tests.integration.test_issuer_core import create
from tests.tls import tls_for

pytestmark = pytest.mark.integration


async def issuer_stops_hearing_revocations(env: dict[str, str]) -> None:
    """Unbind the issuer's queue from ``token.revoked.v1``: from now on only the revocation
    service's call can tell the issuer anything."""
    names = AmqpNames.from_env(env)
    connection = await aio_pika.connect(env["TESSERA_AMQP_URL"])
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            names.durable_queue("issuer.on_token_revoked"), passive=True
        )
        await queue.unbind(names.exchange, "token.revoked.v1")
    finally:
        await connection.close()


async def test_the_issuer_counts_a_revocation_when_the_revoke_call_returns(
    tessera_env: dict[str, str],
) -> None:
    async with running_services(tessera_env) as s:
        tenant = await s.tenant(quota=1)
        await issuer_stops_hearing_revocations(s.env)
        status, made = await create(s, tenant, "ann", kind="databricks")
        assert status == 200, made
        # At its quota: a second token is refused until the first is revoked.
        assert (await create(s, tenant, "ann", kind="databricks"))[0] == 409
        status, body = await s.call(
            "POST",
            "revocation",
            "/internal/revocations",
            json={"tenant": tenant, "display_id": made["token"]["display_id"]},
        )
        assert (status, body["created"]) == (200, 1), body
        # No event can have told it: the revocation service did, before answering.
        _, record = await s.call(
            "GET", "issuer", f"/internal/tokens/lookup?tenant={tenant}&id={made['token']['id']}"
        )
        assert record["revoked_at"] is not None
        _, page = await s.call("GET", "issuer", f"/internal/tokens?tenant={tenant}")
        assert page["tokens"] == []
        status, _ = await s.call(
            "POST", "issuer", "/internal/authenticate", json={"token": made["value"]}
        )
        assert status == 401
        assert (await create(s, tenant, "ann", kind="databricks"))[0] == 200


async def test_the_gateway_may_not_mark_tokens_revoked_at_the_issuer(
    tessera_env: dict[str, str],
) -> None:
    """Only the revocation service, having committed a revocation, says so to the issuer."""
    async with running_services(tessera_env) as s:
        tenant = await s.tenant()
        _, made = await create(s, tenant, "bo")
        body = {"revocations": [{"tenant": tenant, "token_id": made["token"]["id"]}]}
        async with client_session(tls_for(s.env, "gateway")) as gateway:
            url = f"{s.urls['issuer']}/internal/tokens/revoked"
            async with gateway.post(url, json=body) as resp:
                assert resp.status == 403
        status, _ = await s.call(
            "POST", "issuer", "/internal/authenticate", json={"token": made["value"]}
        )
        assert status == 200
