"""Local JWT verification by the subscriber: JWKS caching, refetch limits, revoked tokens and keys.

Everything the subscriber talks to is real: the keys, issuer and revocation services run
in-process, each on a database of its own (tests/harness.py), with PostgreSQL and RabbitMQ. Every
JWKS comes from the keys service and every token meant to verify is signed by it, through its
sign endpoint (the private keys never leave it); only an attacker's forged tokens are signed
with a key the test makes. JWKS fetches are counted by the keys service itself (its per-route
request counter on /metrics) and the paths it was asked for are read from its request log. The
JWKS max-age is the service's own: its default, or its TESSERA_JWKS_MAX_AGE setting on a second
keys service.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from services.keys import service
from services.keys.crypto import Keyring
from services.keys.settings import Settings as KeysSettings
from shared.db import create_pool
from shared.settings import AmqpNames
from shared.subscriber import InvalidToken, Subscriber, SubscriberConfig, VerifierUnavailable
from tests.conftest import private_env
from tests.factories import access_claims, revoke_jwt_body
from tests.harness import Services, running_stack
from tests.integration.keys_support import call, refusal, refused_as, running_keys
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

JWKS_ROUTE = "/internal/tenants/{tenant}/jwks"


@pytest.fixture(scope="module")
async def stack(tessera_env: dict[str, str]) -> AsyncIterator[Services]:
    # Key maintenance, which reloads the service's signing cache and so its JWKS, never runs on
    # its own here: a key revoked behind the service's back stays listed, as it does on a
    # replica that has not caught up yet.
    async with running_stack(
        tessera_env, TESSERA_KEY_ACTIVATION_DELAY="0", TESSERA_KEY_MAINTENANCE_MS="3600000"
    ) as services:
        yield services


@pytest.fixture(scope="module")
def attacker() -> rsa.RSAPrivateKey:
    """A key the keys service never saw: it signs forged tokens."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


async def start_subscriber(
    stack: Services, keys_url: str | None = None, *, events: bool = True, **config: Any
) -> Subscriber:
    """A started subscriber reading the JWKS of ``keys_url`` (the stack's keys service by
    default). With ``events=False`` it follows an exchange of its own, so the services' events
    (key.rotated, key.revoked, token.revoked) never reach it."""
    names = AmqpNames.from_env(stack.env)
    if not events:
        names = AmqpNames(
            exchange=f"{names.exchange}.deaf",
            dead_letter_exchange=f"{names.dead_letter_exchange}.deaf",
            queue_prefix=f"{names.queue_prefix}deaf.",
        )
    sub = Subscriber(
        SubscriberConfig(
            revocations_url=f"{stack.urls['revocation']}/internal/revocations",
            jwks_url_template=f"{keys_url or stack.urls['keys']}/internal/tenants/{{tenant}}/jwks",
            amqp_url=stack.env["TESSERA_AMQP_URL"],
            amqp_names=names,
            name="verify",
            **config,
        ),
        stack.session,
    )
    await sub.start()
    return sub


@asynccontextmanager
async def subscribed(
    stack: Services, keys_url: str | None = None, *, events: bool = True, **config: Any
) -> AsyncIterator[Subscriber]:
    sub = await start_subscriber(stack, keys_url, events=events, **config)
    try:
        yield sub
    finally:
        await sub.close()


async def new_tenant(session: aiohttp.ClientSession, keys_url: str) -> str:
    tenant = f"t{secrets.token_hex(4)}"
    status, reply = await call(session, "POST", f"{keys_url}/internal/tenants", json={"id": tenant})
    assert status == 200, reply
    return tenant


async def sign(
    session: aiohttp.ClientSession, keys_url: str, tenant: str, count: int = 1, **claims: Any
) -> tuple[list[str], str]:
    """``count`` access tokens signed by the keys service with the tenant's active key, and
    that key's kid."""
    status, row = await call(session, "GET", f"{keys_url}/internal/tenants/{tenant}")
    assert status == 200, row
    bodies = [access_claims(tenant, issuer=row["issuer"], ttl=600, **claims) for _ in range(count)]
    status, reply = await call(
        session, "POST", f"{keys_url}/internal/tenants/{tenant}/sign", json={"claims": bodies}
    )
    assert status == 200, reply
    return reply["tokens"], reply["kid"]


def forge(key: rsa.RSAPrivateKey, kid: str, tenant: str) -> str:
    """A token an attacker signed with their own key, naming any kid and tenant they like."""
    body = {
        "jti": str(uuid.uuid4()),
        "sub": f"alice@{tenant}",
        "tapis/tenant_id": tenant,
        "exp": int(time.time()) + 600,
    }
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})


async def keys_requests(session: aiohttp.ClientSession, keys_url: str) -> Counter[tuple[str, str]]:
    """``(route, status) -> count`` of the requests keys services answered, from the metrics
    their ops listeners serve (scrapes left out). The counter is the process's: every keys
    service running in it."""
    text = generate_latest().decode()
    counts: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "tessera_http_requests_total"
                and labels["service"] == "keys"
                and labels["route"] != "/metrics"
            ):
                counts[labels["route"], labels["status"]] = int(sample.value)
    return counts


async def jwks_max_age(session: aiohttp.ClientSession, keys_url: str, tenant: str) -> int:
    """The max-age the keys service sends with the tenant's JWKS."""
    async with session.get(f"{keys_url}/internal/tenants/{tenant}/jwks") as resp:
        assert resp.status == 200
        found = re.search(r"max-age=(\d+)", resp.headers.get("Cache-Control", ""))
    assert found, resp.headers
    return int(found.group(1))


async def test_valid_token_verifies_and_is_refused_once_revoked(stack: Services) -> None:
    tenant = await stack.tenant()
    (token,), _ = await sign(stack.session, stack.urls["keys"], tenant)
    # Deaf to the services' events, the subscriber learns this revocation from apply(), as the
    # gateway applies its own revoke replies (or from its next feed poll, seconds away).
    async with subscribed(stack, events=False) as sub:
        claims = await sub.verify_jwt(token)
        assert claims["sub"] == f"alice@{tenant}" and claims["tapis/tenant_id"] == tenant

        status, reply = await stack.call(
            "POST",
            "revocation",
            "/internal/revocations",
            json=revoke_jwt_body(tenant, jti=claims["jti"]),
        )
        assert status == 200, reply
        sub.apply(reply["revocations"][0])
        with pytest.raises(InvalidToken) as refused:
            await sub.verify_jwt(token)
        assert refused.value.reason == "revoked"


async def test_jwks_is_fetched_once_per_max_age(stack: Services) -> None:
    keys_url = stack.urls["keys"]
    tenant = await stack.tenant()
    tokens, _ = await sign(stack.session, keys_url, tenant, count=20)
    max_age = await jwks_max_age(stack.session, keys_url, tenant)
    assert max_age >= 60, "the service's default max-age must outlast this test"
    # No lifetime of its own: only the service's max-age keeps the JWKS cached.
    async with subscribed(stack, jwks_default_max_age=0) as sub:
        before = await keys_requests(stack.session, keys_url)
        for token in tokens:
            assert (await sub.verify_jwt(token))["tapis/tenant_id"] == tenant
        fetched = await keys_requests(stack.session, keys_url) - before
    assert fetched == Counter({(JWKS_ROUTE, "200"): 1})


async def test_jwks_is_fetched_again_once_its_max_age_passes(
    stack: Services, tessera_env: dict[str, str]
) -> None:
    async with running_keys(private_env(tessera_env, TESSERA_JWKS_MAX_AGE="1")) as (url, session):
        tenant = await new_tenant(session, url)
        assert await jwks_max_age(session, url, tenant) == 1
        # The subscriber's own default (300 s) would keep the JWKS far longer than 1 s.
        async with subscribed(stack, url) as sub:
            before = await keys_requests(session, url)
            started = time.monotonic()

            async def fetches() -> int:
                """JWKS fetches once a newly signed token was verified; 1 until the refetch."""
                (token,), _ = await sign(session, url, tenant)
                await sub.verify_jwt(token)
                count: int = (await keys_requests(session, url) - before)[JWKS_ROUTE, "200"]
                assert count >= 1
                return count - 1

            fetched = 1 + await wait_for(fetches, timeout=5, what="the JWKS fetched again")
    assert fetched == 2
    assert time.monotonic() - started >= 1, "JWKS fetched again before its max-age passed"


async def test_unknown_kids_refetch_at_most_once_per_interval(
    stack: Services, attacker: rsa.RSAPrivateKey
) -> None:
    keys_url = stack.urls["keys"]
    tenant = await stack.tenant()
    (token,), kid = await sign(stack.session, keys_url, tenant)
    forged = [forge(attacker, f"forged-{n}", tenant) for n in range(30)]
    # Deaf to key.rotated: the key added below can be learnt only through an unknown-kid refetch.
    async with subscribed(stack, events=False, jwks_refetch_interval=0.5) as sub:
        before = await keys_requests(stack.session, keys_url)
        await sub.verify_jwt(token)
        for attempt in forged:
            assert await refusal(sub, attempt) == "unknown_kid"
        fetched = (await keys_requests(stack.session, keys_url) - before)[JWKS_ROUTE, "200"]
        assert 1 <= fetched <= 2

        # A key published after the cache was filled is picked up on the next allowed refetch.
        status, rotated = await stack.call(
            "POST", "keys", f"/internal/tenants/{tenant}/keys/rotate", json={"immediate": True}
        )
        assert status == 200, rotated
        (new,), new_kid = await sign(stack.session, keys_url, tenant)
        assert new_kid == rotated["kid"] != kid

        async def new_key_learnt() -> bool:
            reason = await refusal(sub, new)
            assert reason in (None, "unknown_kid")
            return reason is None

        await wait_for(new_key_learnt, timeout=5, what="the new key picked up")


async def _revoke_behind_the_service(stack: Services, tenant: str, kid: str) -> None:
    """Revoke a key as another keys replica would: in the database, with its key.revoked
    event in the outbox, while this replica's JWKS still lists the key."""
    settings = KeysSettings.from_env(stack.env)
    async with create_pool(stack.database_url("keys"), min_size=1, max_size=1) as pool:
        await service.revoke(pool, Keyring(settings.keks), tenant, kid)


async def test_revoked_key_refuses_its_tokens_at_once(stack: Services) -> None:
    keys_url = stack.urls["keys"]
    tenant = await stack.tenant()
    (doomed, unseen), doomed_kid = await sign(stack.session, keys_url, tenant, count=2)
    status, rotated = await stack.call(
        "POST", "keys", f"/internal/tenants/{tenant}/keys/rotate", json={"immediate": True}
    )
    assert status == 200, rotated
    (fine,), fine_kid = await sign(stack.session, keys_url, tenant)
    assert fine_kid == rotated["kid"] != doomed_kid

    async with subscribed(stack) as sub:
        await sub.verify_jwt(doomed)  # the JWKS, with both keys, is cached for its max-age
        await sub.verify_jwt(fine)
        await _revoke_behind_the_service(stack, tenant, doomed_kid)

        # From the key.revoked event, not the max-age (300 s).
        await wait_for(
            lambda: refused_as(sub, doomed, "key_revoked"), timeout=5, what="the key revoked"
        )
        # Other keys keep working; a new token makes the subscriber read the JWKS again.
        assert await refusal(sub, fine) is None
        (fresh,), kid = await sign(stack.session, keys_url, tenant)
        assert kid == fine_kid and await refusal(sub, fresh) is None
        # The keys service still lists the revoked key, but it is never trusted again: a token
        # it signed that this subscriber never saw is refused too.
        status, jwks = await stack.call("GET", "keys", f"/internal/tenants/{tenant}/jwks")
        assert status == 200 and doomed_kid in {k["kid"] for k in jwks["keys"]}
        assert await refusal(sub, unseen) == "key_revoked"  # not "unknown": it is revoked


async def test_tenant_and_kid_never_reach_the_url(
    stack: Services, attacker: rsa.RSAPrivateKey
) -> None:
    keys_url = stack.urls["keys"]
    tenant, other = await stack.tenant(), await stack.tenant()
    hostile_tenants = (f"../{tenant}", f"x/../{other}", tenant.upper(), "a" * 100)
    hostile_kids = ("../../jwks?x=", f"../../{other}/jwks")
    (token,), _ = await sign(stack.session, keys_url, tenant)
    # Once the JWKS is cached, every unknown kid makes the subscriber fetch it again: each kid
    # has its chance at a URL.
    async with subscribed(stack, jwks_refetch_interval=0) as sub:
        before = await keys_requests(stack.session, keys_url)
        with capture_logs() as logs:
            for hostile in hostile_tenants:
                assert await refusal(sub, forge(attacker, "k1", hostile)) == "unknown_tenant"
            assert await refusal(sub, token) is None
            for kid in hostile_kids:
                assert await refusal(sub, forge(attacker, kid, tenant)) == "unknown_kid"
        requests = await keys_requests(stack.session, keys_url) - before
    # What the keys service answered: only the tenant's own JWKS, never another route, a 404
    # or a path it could not match.
    assert set(requests) == {(JWKS_ROUTE, "200")}, requests
    paths = {
        entry["path"]
        for entry in logs
        if entry["event"] == "request" and not entry["path"].startswith("/internal/revocations")
    }
    assert paths == {f"/internal/tenants/{tenant}/jwks"}


async def test_unknown_tenant_is_refused(stack: Services) -> None:
    keys_url = stack.urls["keys"]
    nobody = f"nobody-{secrets.token_hex(4)}"
    # Signed by a real key of a real tenant, but claiming a tenant the keys service never had.
    claims: dict[str, Any] = {"tapis/tenant_id": nobody}
    (token,), _ = await sign(stack.session, keys_url, await stack.tenant(), **claims)
    async with subscribed(stack) as sub:
        before = await keys_requests(stack.session, keys_url)
        assert await refusal(sub, token) == "unknown_tenant"
        requests = await keys_requests(stack.session, keys_url) - before
    # The keys service said so itself.
    assert requests == Counter({(JWKS_ROUTE, "404"): 1})


async def test_unreachable_jwks_without_a_cache_is_unavailable_not_invalid(
    stack: Services, tessera_env: dict[str, str]
) -> None:
    async with running_keys(private_env(tessera_env)) as (url, session):
        tenant = await new_tenant(session, url)
        (token,), _ = await sign(session, url, tenant)
    # That keys service has stopped: nothing answers at its address any more.
    async with subscribed(stack, url) as sub:
        with pytest.raises(VerifierUnavailable):
            await sub.verify_jwt(token)


async def test_unreachable_jwks_with_a_cache_keeps_verifying_with_the_cached_keys(
    stack: Services, tessera_env: dict[str, str], attacker: rsa.RSAPrivateKey
) -> None:
    sub: Subscriber | None = None
    try:
        async with running_keys(private_env(tessera_env)) as (url, session):
            tenant = await new_tenant(session, url)
            (first, second), _ = await sign(session, url, tenant, count=2)
            # Every unknown kid or expired entry tries the keys service again at once.
            sub = await start_subscriber(stack, url, jwks_refetch_interval=0)
            await sub.verify_jwt(first)
        # The keys service has stopped: the refetch an unknown kid triggers fails, yet that
        # token is invalid, not the verifier unavailable, and the cached keys still verify.
        assert await refusal(sub, forge(attacker, "forged", tenant)) == "unknown_kid"
        assert (await sub.verify_jwt(second))["tapis/tenant_id"] == tenant
    finally:
        if sub is not None:
            await sub.close()
