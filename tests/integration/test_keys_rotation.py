"""Rotation never breaks a client; a revoked key kills every token it signed."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
from jwt.utils import base64url_decode

from tests.conftest import private_env
from tests.integration.keys_support import call, running_keys

pytestmark = pytest.mark.integration


def verify(token: str, jwks: dict) -> dict:  # type: ignore[type-arg]
    """Verify as a resource server would: the key by kid, the algorithm from the JWK only."""
    kid = jwt.get_unverified_header(token)["kid"]
    matching = [k for k in jwks["keys"] if k["kid"] == kid]
    if not matching:
        raise jwt.InvalidKeyError(f"kid {kid} is not published")
    key = jwt.PyJWK(matching[0])
    return jwt.decode(token, key, algorithms=[matching[0]["alg"]], options={"require": ["exp"]})


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_token_signed_before_rotation_verifies_after_it_until_it_expires(
    tessera_env: dict[str, str], alg: str
) -> None:
    async with running_keys(private_env(tessera_env)) as (url, session):
        tenant = f"t-{uuid.uuid4().hex[:8]}"
        assert (
            await call(session, "POST", f"{url}/internal/tenants", json={"id": tenant, "alg": alg})
        )[0] == 200
        claims = {"sub": "alice@t", "exp": int(time.time()) + 600, "z": 1, "a": 2}
        status, signed = await call(
            session, "POST", f"{url}/internal/tenants/{tenant}/sign", json={"claims": [claims]}
        )
        assert status == 200
        old_token = signed["tokens"][0]
        header = jwt.get_unverified_header(old_token)
        assert header == {"alg": alg, "kid": signed["kid"], "typ": "JWT"}
        # Claim order is preserved exactly as sent (the Tapis contract fixes it).
        payload = json.loads(base64url_decode(old_token.split(".")[1]))
        assert list(payload) == ["sub", "exp", "z", "a"]

        status, rotated = await call(
            session,
            "POST",
            f"{url}/internal/tenants/{tenant}/keys/rotate",
            json={"immediate": True},
        )
        assert status == 200 and rotated["kid"] != signed["kid"]
        status, new_signed = await call(
            session, "POST", f"{url}/internal/tenants/{tenant}/sign", json={"claims": [claims]}
        )
        assert new_signed["kid"] == rotated["kid"]

        status, jwks = await call(session, "GET", f"{url}/internal/tenants/{tenant}/jwks")
        assert {k["kid"] for k in jwks["keys"]} == {signed["kid"], rotated["kid"]}
        assert verify(old_token, jwks)["sub"] == "alice@t"
        assert verify(new_signed["tokens"][0], jwks)["sub"] == "alice@t"

        status, keys = await call(session, "GET", f"{url}/internal/tenants/{tenant}/keys")
        old = next(k for k in keys["keys"] if k["kid"] == signed["kid"])
        assert old["state"] == "retired"
        # Published until the last token it signed expires, not a moment less.
        assert old["publish_until"] >= time.strftime("%Y-%m-%dT%H:%M", time.gmtime(claims["exp"]))


async def test_retired_key_that_signed_nothing_unexpired_leaves_the_jwks(
    tessera_env: dict[str, str],
) -> None:
    async with running_keys(private_env(tessera_env)) as (url, session):
        tenant = f"t-{uuid.uuid4().hex[:8]}"
        await call(session, "POST", f"{url}/internal/tenants", json={"id": tenant})
        expired_soon = {"sub": "x", "exp": int(time.time()) - 5}
        _, signed = await call(
            session,
            "POST",
            f"{url}/internal/tenants/{tenant}/sign",
            json={"claims": [expired_soon]},
        )
        await call(
            session,
            "POST",
            f"{url}/internal/tenants/{tenant}/keys/rotate",
            json={"immediate": True},
        )
        _, jwks = await call(session, "GET", f"{url}/internal/tenants/{tenant}/jwks")
        # The watermark keeps an hour of slack, so the key is still there now...
        assert signed["kid"] in {k["kid"] for k in jwks["keys"]}
        _, keys = await call(session, "GET", f"{url}/internal/tenants/{tenant}/keys")
        old = next(k for k in keys["keys"] if k["kid"] == signed["kid"])
        # ...and leaves once that passes, within the hour after the last expiry.
        assert old["publish_until"] < time.strftime(
            "%Y-%m-%dT%H:%M", time.gmtime(time.time() + 3600 + 60)
        )


async def test_delayed_rotation_publishes_before_it_signs(tessera_env: dict[str, str]) -> None:
    env = private_env(
        tessera_env, TESSERA_KEY_ACTIVATION_DELAY="1", TESSERA_KEY_MAINTENANCE_MS="100"
    )
    async with running_keys(env) as (url, session):
        tenant = f"t-{uuid.uuid4().hex[:8]}"
        await call(session, "POST", f"{url}/internal/tenants", json={"id": tenant})
        claims = {"sub": "a", "exp": int(time.time()) + 60}
        _, before = await call(
            session, "POST", f"{url}/internal/tenants/{tenant}/sign", json={"claims": [claims]}
        )
        _, rotated = await call(
            session, "POST", f"{url}/internal/tenants/{tenant}/keys/rotate", json={}
        )
        _, jwks = await call(session, "GET", f"{url}/internal/tenants/{tenant}/jwks")
        assert rotated["kid"] in {k["kid"] for k in jwks["keys"]}  # published at once
        _, during = await call(
            session, "POST", f"{url}/internal/tenants/{tenant}/sign", json={"claims": [claims]}
        )
        assert during["kid"] == before["kid"]  # but not signing yet
        status, again = await call(
            session, "POST", f"{url}/internal/tenants/{tenant}/keys/rotate", json={}
        )
        assert status == 409 and again["error"] == "rotation_pending"
        deadline = time.monotonic() + 10
        while True:
            _, after = await call(
                session, "POST", f"{url}/internal/tenants/{tenant}/sign", json={"claims": [claims]}
            )
            if after["kid"] == rotated["kid"]:
                break
            assert time.monotonic() < deadline, "the pending key never became active"
        _, jwks = await call(session, "GET", f"{url}/internal/tenants/{tenant}/jwks")
        assert verify(before["tokens"][0], jwks)["sub"] == "a"


async def test_revoked_key_leaves_the_jwks_and_its_tokens_are_refused(
    tessera_env: dict[str, str],
) -> None:
    async with running_keys(private_env(tessera_env)) as (url, session):
        tenant = f"t-{uuid.uuid4().hex[:8]}"
        await call(session, "POST", f"{url}/internal/tenants", json={"id": tenant})
        claims = {"sub": "a", "exp": int(time.time()) + 600}
        _, signed = await call(
            session, "POST", f"{url}/internal/tenants/{tenant}/sign", json={"claims": [claims]}
        )
        status, revoked = await call(
            session, "POST", f"{url}/internal/tenants/{tenant}/keys/{signed['kid']}/revoke"
        )
        assert status == 200 and revoked["kid"] == signed["kid"]
        _, jwks = await call(session, "GET", f"{url}/internal/tenants/{tenant}/jwks")
        assert signed["kid"] not in {k["kid"] for k in jwks["keys"]}
        with pytest.raises(jwt.InvalidKeyError):
            verify(signed["tokens"][0], jwks)
        # The tenant keeps signing, with a new key.
        _, fresh = await call(
            session, "POST", f"{url}/internal/tenants/{tenant}/sign", json={"claims": [claims]}
        )
        assert fresh["kid"] != signed["kid"]
        assert verify(fresh["tokens"][0], jwks)["sub"] == "a"
        status, body = await call(
            session, "POST", f"{url}/internal/tenants/{tenant}/keys/{signed['kid']}/revoke"
        )
        assert status == 404 and body["error"] == "unknown_kid"
