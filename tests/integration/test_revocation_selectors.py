"""Selectors resolved through the real issuer, and the key.revoked consumer.

Everything is real: keys, issuer and revocation in this process on their own ports and
databases (a fresh stack per test, so the revocation feed starts at seq 0), with PostgreSQL and
RabbitMQ. Tokens are made by the issuer, revoked through the revocation service, and signing
keys revoked through the keys service.

test_revocation_issuer.py checks that each selector's revocation reaches the issuer; here each
selector must resolve to exactly the right tokens, each revoked once.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aio_pika
import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.bus.amqp import declare_topology
from shared.bus.envelope import Envelope
from shared.settings import AmqpNames
from shared.tokens import new_databricks_token
from tests.harness import Services, running_stack
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

ON_KEY_REVOKED = "revocation.on_key_revoked"


@pytest.fixture
async def s(tessera_env: dict[str, str]) -> AsyncIterator[Services]:
    async with running_stack(tessera_env) as services:
        yield services


async def create(s: Services, tenant: str, subject: str, kind: str = "opaque") -> dict[str, Any]:
    """``{"token": TokenRecord, "value": secret}`` of a token the issuer made."""
    made = await s.token(tenant, subject, kind)
    assert made["token"]["subject"] == subject and made["token"]["kind"] == kind
    return made


async def family_of(s: Services, tenant: str, jti: str) -> str:
    """The refresh family the issuer recorded for a JWT."""
    query = {"tenant": tenant, "id": jti}
    record = await s.ok("GET", "issuer", "/internal/tokens/lookup", params=query)
    assert record["id"] == jti and record["family_id"], record
    return str(record["family_id"])


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def revoke(s: Services, body: dict[str, Any]) -> tuple[int, Any]:
    return await s.call("POST", "revocation", "/internal/revocations", json=body)


async def feed(s: Services) -> dict[str, Any]:
    """The whole revocation feed (every tenant): the stack is this test's alone."""
    return await s.ok("GET", "revocation", "/internal/revocations?since=0")


async def active(s: Services, tenant: str, selector: str, value: str) -> set[str]:
    """Ids of the tokens the issuer still holds active for a subject, family or kid."""
    query = {"tenant": tenant, selector: value}
    body = await s.ok("GET", "issuer", "/internal/tokens/active", params=query)
    return {t["id"] for t in body["tokens"]}


async def _is_empty(ids: Awaitable[set[str]]) -> bool:
    return not await ids


async def _consumed(s: Services, consumer: str, outcome: str) -> float:
    """Events ``consumer`` handled with ``outcome``, from the revocation service's /metrics.

    The counter belongs to the process (every in-process service shares it): compare values
    taken before and after, never absolute ones.
    """
    async with s.session.get(s.ops["revocation"] + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tessera_events_consumed_total" and sample.labels == {
                "consumer": consumer,
                "outcome": outcome,
            }:
                return float(sample.value)
    return 0.0


async def test_token_id_display_id_and_value_resolve_to_the_token(s: Services) -> None:
    tenant = await s.tenant()
    opaque = (await create(s, tenant, "alice"))["token"]
    databricks = (await create(s, tenant, "alice", kind="databricks"))["token"]
    by_value = await create(s, tenant, "bob")
    await create(s, tenant, "bob")  # bob's other token: the value names only one

    status, reply = await revoke(s, {"tenant": tenant, "token_id": opaque["id"]})
    assert status == 200 and reply["created"] == 1, reply
    (revocation,) = reply["revocations"]
    assert revocation["token_id"] == opaque["id"] and revocation["jti"] is None
    assert (revocation["subject"], revocation["kind"]) == ("alice", "opaque")

    status, reply = await revoke(s, {"tenant": tenant, "display_id": databricks["display_id"]})
    assert status == 200 and reply["created"] == 1, reply
    (revocation,) = reply["revocations"]
    assert revocation["token_id"] == databricks["id"]
    assert revocation["display_id"] == databricks["display_id"]
    assert revocation["kind"] == "databricks"

    status, reply = await revoke(s, {"tenant": tenant, "token": by_value["value"]})
    assert status == 200 and reply["created"] == 1, reply
    (revocation,) = reply["revocations"]
    assert revocation["token_id"] == by_value["token"]["id"] and revocation["subject"] == "bob"

    revocations = (await feed(s))["revocations"]
    assert [(r["seq"], r["tenant"], r["token_id"]) for r in revocations] == [
        (1, tenant, opaque["id"]),
        (2, tenant, databricks["id"]),
        (3, tenant, by_value["token"]["id"]),
    ]


# An unknown token id, and another tenant's token by id or value, are checked the same way by
# test_revocation_issuer.py::test_unknown_and_foreign_tokens_are_404_and_nothing_is_revoked.
@pytest.mark.parametrize(
    "selector",
    [
        {"display_id": "c" * 64},
        {"token": new_databricks_token()},
        {"family_id": str(uuid.uuid4())},
    ],
)
async def test_unknown_token_is_404_and_revokes_nothing(
    s: Services, selector: dict[str, str]
) -> None:
    tenant = await s.tenant()
    # The tenant has tokens of every kind and a refresh family; none is the one asked for.
    await create(s, tenant, "alice")
    await create(s, tenant, "alice", kind="databricks")
    await s.jwt(tenant, "alice", refresh=True)
    status, reply = await revoke(s, {"tenant": tenant, **selector})
    assert status == 404 and reply["error"] == "unknown_token", reply
    assert await feed(s) == {
        "revocations": [],
        "next_since": 0,
        "current_seq": 0,
        "pruned_through": 0,
    }


async def test_owner_limits_what_a_caller_may_revoke(s: Services) -> None:
    tenant = await s.tenant()
    bobs = await create(s, tenant, "bob", kind="databricks")
    for selector in (
        {"token_id": bobs["token"]["id"]},
        {"display_id": bobs["token"]["display_id"]},
        {"token": bobs["value"]},
    ):
        status, reply = await revoke(s, {"tenant": tenant, **selector, "owner": "alice"})
        assert status == 404 and reply["error"] == "unknown_token", (selector, reply)
    assert (await feed(s))["current_seq"] == 0
    status, reply = await revoke(
        s, {"tenant": tenant, "token_id": bobs["token"]["id"], "owner": "bob"}
    )
    assert status == 200 and reply["created"] == 1, reply
    (revocation,) = reply["revocations"]
    assert (revocation["token_id"], revocation["subject"]) == (bobs["token"]["id"], "bob")
    assert [r["token_id"] for r in (await feed(s))["revocations"]] == [bobs["token"]["id"]]


async def test_subject_and_family_revoke_every_matching_token_once(s: Services) -> None:
    tenant, other_tenant = await s.tenant(), await s.tenant()
    pair = await s.jwt(tenant, "alice", refresh=True)
    renewed = await s.ok(
        "POST",
        "issuer",
        "/internal/jwt/refresh",
        json={"refresh_token": pair["refresh_token"]["refresh_token"]},
    )
    # The family: both pairs (the used refresh token has not expired and is not revoked).
    family_ids = {
        p[kind]["jti"] for p in (pair, renewed) for kind in ("access_token", "refresh_token")
    }
    family = await family_of(s, tenant, pair["refresh_token"]["jti"])
    alices_other = (await create(s, tenant, "alice"))["token"]["id"]
    carols = (await create(s, tenant, "carol"))["token"]["id"]
    elsewhere = (await create(s, other_tenant, "alice"))["token"]["id"]

    status, reply = await revoke(s, {"tenant": tenant, "family_id": family})
    assert status == 200 and reply["created"] == 4, reply
    first = {r["token_id"]: r for r in reply["revocations"]}
    assert set(first) == family_ids
    assert all(r["jti"] == r["token_id"] and r["family_id"] == family for r in first.values())
    assert {r["kind"] for r in first.values()} == {"jwt_access", "jwt_refresh"}

    alices_late = (await create(s, tenant, "alice", kind="databricks"))["token"]["id"]
    status, reply = await revoke(s, {"tenant": tenant, "subject": "alice", "owner": "carol"})
    assert status == 200 and reply == {"revocations": [], "created": 0}
    status, reply = await revoke(s, {"tenant": tenant, "subject": "alice"})
    assert status == 200 and reply["created"] == 2, reply
    by_token = {r["token_id"]: r for r in reply["revocations"]}
    assert set(by_token) - family_ids == {alices_other, alices_late}
    # Family members the issuer still lists (if it has not applied their revocation yet) come
    # back with their first revocation, never a second one.
    assert all(by_token[t] == first[t] for t in set(by_token) & family_ids)

    status, reply = await revoke(s, {"tenant": tenant, "subject": "nobody"})
    assert status == 200 and reply == {"revocations": [], "created": 0}

    revocations = (await feed(s))["revocations"]
    revoked = [r["token_id"] for r in revocations]
    assert len(revoked) == len(set(revoked)) == 6
    assert set(revoked) == family_ids | {alices_other, alices_late}
    assert [r["seq"] for r in revocations] == [1, 2, 3, 4, 5, 6]
    assert carols not in revoked and elsewhere not in revoked
    # The issuer applies them: nothing of alice's is active; carol's and the other tenant's are.
    await wait_for(
        lambda: _is_empty(active(s, tenant, "subject", "alice")), what="alice's tokens inactive"
    )
    assert await active(s, tenant, "subject", "carol") == {carols}
    assert await active(s, other_tenant, "subject", "alice") == {elsewhere}


async def test_revoked_key_revokes_every_token_it_signed(s: Services) -> None:
    tenant, other_tenant = await s.tenant(), await s.tenant()
    signed: set[str] = set()
    kids: set[str] = set()
    for n in range(3):
        pair = await s.jwt(tenant, f"user{n}", refresh=n == 0)
        for kind in ("access_token", "refresh_token"):
            if kind in pair:
                signed.add(pair[kind]["jti"])
                kids.add(kid_of(pair[kind][kind]))
    assert len(signed) == 4 and len(kids) == 1
    (bad_kid,) = kids
    opaque = (await create(s, tenant, "user1"))["token"]["id"]
    rotate = f"/internal/tenants/{tenant}/keys/rotate"
    rotated = await s.ok("POST", "keys", rotate, json={"immediate": True})
    assert rotated["kid"] != bad_kid, rotated
    good = (await s.jwt(tenant, "user9", refresh=False))["access_token"]
    assert kid_of(good["access_token"]) == rotated["kid"]
    elsewhere = (await s.jwt(other_tenant, "user0", refresh=False))["access_token"]
    assert await active(s, tenant, "kid", bad_kid) == signed

    names = AmqpNames.from_env(s.env)
    connection = await aio_pika.connect(s.env["TESSERA_AMQP_URL"])
    try:
        channel = await connection.channel()
        exchange = await declare_topology(channel, names)
        # A queue of our own sees the keys service's key.revoked, to deliver it a second time.
        watch = await channel.declare_queue(exclusive=True)
        await watch.bind(exchange, "key.revoked.v1")
        duplicates = await _consumed(s, ON_KEY_REVOKED, "duplicate")

        body = await s.ok("POST", "keys", f"/internal/tenants/{tenant}/keys/{bad_kid}/revoke")
        assert body["kid"] == bad_kid and body["revoked_at"], body
        message = await wait_for(
            lambda: watch.get(no_ack=True, fail=False), what="key.revoked on our queue"
        )
        event = Envelope.from_json(message.body)
        assert (event.type, event.tenant, event.data) == ("key.revoked", tenant, {"kid": bad_kid})
        # Delivered twice, as the broker may: the consumer applies it once.
        await exchange.publish(
            aio_pika.Message(message.body, message_id=message.message_id),
            routing_key=event.routing_key,
        )

        async def duplicate_seen() -> bool:
            return await _consumed(s, ON_KEY_REVOKED, "duplicate") == duplicates + 1

        await wait_for(duplicate_seen, what="the second delivery of key.revoked was handled")
    finally:
        await connection.close()

    async def all_revoked() -> bool:
        return bool((await feed(s))["current_seq"] >= len(signed))

    await wait_for(all_revoked, what="every token of the revoked key is revoked")
    revocations = (await feed(s))["revocations"]
    assert len(revocations) == len(signed)
    assert {r["token_id"] for r in revocations} == signed
    assert all(
        r["tenant"] == tenant and r["jti"] == r["token_id"] and r["reason"] == "key_revoked"
        for r in revocations
    )
    # The issuer applies them; the new key's token, the opaque one and the other tenant's live.
    await wait_for(
        lambda: _is_empty(active(s, tenant, "kid", bad_kid)),
        what="the issuer applied the revocations",
    )
    assert await active(s, tenant, "kid", rotated["kid"]) == {good["jti"]}
    assert opaque in await active(s, tenant, "subject", "user1")
    assert await active(s, other_tenant, "subject", "user0") == {elsewhere["jti"]}


async def test_revoking_a_family_again_returns_its_revocations(s: Services) -> None:
    tenant = await s.tenant()
    pair = await s.jwt(tenant, "alice", refresh=True)
    members = {pair["access_token"]["jti"], pair["refresh_token"]["jti"]}
    family = await family_of(s, tenant, pair["refresh_token"]["jti"])
    assert await active(s, tenant, "family_id", family) == members
    status, reply = await revoke(s, {"tenant": tenant, "family_id": family, "owner": "bob"})
    assert status == 404 and reply["error"] == "unknown_token", reply
    assert (await feed(s))["current_seq"] == 0

    status, first = await revoke(s, {"tenant": tenant, "family_id": family})
    assert status == 200 and first["created"] == 2, first
    assert {r["token_id"] for r in first["revocations"]} == members
    # The issuer applies the revocations: nothing of the family is active any more, so the
    # second request finds the family's revocations in the revocation service alone.
    await wait_for(
        lambda: _is_empty(active(s, tenant, "family_id", family)), what="the family is inactive"
    )
    status, again = await revoke(s, {"tenant": tenant, "family_id": family})
    assert status == 200 and again == {"revocations": first["revocations"], "created": 0}
    status, again = await revoke(s, {"tenant": tenant, "family_id": family, "owner": "alice"})
    assert status == 200 and again == {"revocations": first["revocations"], "created": 0}
    status, reply = await revoke(s, {"tenant": tenant, "family_id": family, "owner": "bob"})
    assert status == 404 and reply["error"] == "unknown_token", reply
    assert (await feed(s))["current_seq"] == 2
