"""Forged and misused credentials: each refused in every dialect, in that dialect's shape."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.request
from collections.abc import Callable

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.conftest import Stack
from tests.e2e.gateway_support import ensure_tenant, http_json, mint, unique
from tests.tls import https_context
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parts(token: str) -> tuple[dict, dict]:  # type: ignore[type-arg]
    header, payload, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(header))), json.loads(
        base64.urlsafe_b64decode(pad(payload))
    )


def unsigned(header: dict, payload: dict) -> str:  # type: ignore[type-arg]
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"


def sign_internally(stack: Stack, tenant: str, claims: dict) -> str:  # type: ignore[type-arg]
    """A token signed by a tenant's real key through the keys service's internal API: what
    only a compromised internal caller could do."""
    request = urllib.request.Request(
        f"{stack.urls['keys']}/internal/tenants/{tenant}/sign",
        data=json.dumps({"claims": [claims]}).encode(),
        method="POST",
    )
    context = https_context("POST", request.full_url)
    with urllib.request.urlopen(request, timeout=10, context=context) as resp:
        return str(json.loads(resp.read())["tokens"][0])


def refused_in_every_dialect(stack: Stack, token: str) -> None:
    g = stack.gateway
    status, body = http_json(
        "GET", f"{g}/api/2.0/token/list", headers={"Authorization": f"Bearer {token}"}
    )
    assert (status, body["error_code"]) == (401, "UNAUTHENTICATED")
    status, body = http_json("GET", f"{g}/v1/tokens", headers={"Authorization": f"Bearer {token}"})
    assert (status, body["errorType"]) == (403, "Forbidden")
    tapis_request = {"account_type": "user", "token_tenant_id": "dev", "token_username": "x"}
    status, body = http_json(
        "POST",
        f"{g}/v3/tokens",
        body=tapis_request,
        headers={"X-Tapis-Token": token, "Content-Type": "application/json"},
    )
    assert (status, body["status"], body["result"]) == (400, "error", None)
    for path, field in (("/v3/tokens/revoke", "token"),):
        status, body = http_json(
            "POST", f"{g}{path}", body={field: token}, headers={"Content-Type": "application/json"}
        )
        assert (status, body["status"]) == (400, "error")
    status, body = http_json(
        "PUT",
        f"{g}/v3/tokens",
        body={"refresh_token": token},
        headers={"Content-Type": "application/json"},
    )
    assert (status, body["status"]) == (400, "error")
    status, body = http_json(
        "POST",
        f"{g}/oauth2/introspect",
        raw=f"token={token}".encode(),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert status == 401


@pytest.fixture(scope="module")
def real(stack: Stack) -> tuple[str, dict, dict]:  # type: ignore[type-arg]
    token = mint(stack, unique("victim"), dialect="tapis", permissions=("admin",))
    header, payload = parts(token)
    return token, header, payload


def forge_none(stack: Stack, real: tuple) -> str:  # type: ignore[type-arg]
    _, header, payload = real
    return unsigned({**header, "alg": "none"}, payload) + "."


def forge_hs256_with_public_key(stack: Stack, real: tuple) -> str:  # type: ignore[type-arg]
    _, header, payload = real
    _, jwks = http_json("GET", f"{stack.gateway}/v3/tenants/dev/.well-known/jwks.json")
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    # The classic key-confusion attack: the public key's PEM used as an HMAC secret.
    pem = jwt.PyJWK(jwk).key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    body = unsigned({**header, "alg": "HS256"}, payload)
    return body + "." + b64(hmac.new(pem, body.encode(), hashlib.sha256).digest())


def attacker_signed(kid: str) -> Callable[[Stack, tuple], str]:  # type: ignore[type-arg]
    def forge(stack: Stack, real: tuple) -> str:  # type: ignore[type-arg]
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return jwt.encode(real[2], key, algorithm="RS256", headers={"kid": kid})

    return forge


def forge_tampered(stack: Stack, real: tuple) -> str:  # type: ignore[type-arg]
    token, header, payload = real
    signature = token.split(".")[2]
    return unsigned(header, {**payload, "tapis/username": "root"}) + "." + signature


def forge_expired(stack: Stack, real: tuple) -> str:  # type: ignore[type-arg]
    token = mint(stack, unique("short"), dialect="tapis", ttl=1)
    wait_until(lambda: parts(token)[1]["exp"] < time.time(), what="the 1 s token's exp passed")
    return token


def forge_not_yet_valid(stack: Stack, real: tuple) -> str:  # type: ignore[type-arg]
    return sign_internally(
        stack, "dev", {**real[2], "jti": unique("j"), "nbf": int(time.time()) + 3600}
    )


def forge_wrong_issuer(stack: Stack, real: tuple) -> str:  # type: ignore[type-arg]
    return sign_internally(
        stack, "dev", {**real[2], "jti": unique("j"), "iss": "https://evil.example/v3/tokens"}
    )


def forge_wrong_tenant(stack: Stack, real: tuple) -> str:  # type: ignore[type-arg]
    ensure_tenant(stack, "other")
    # Signed by tenant "other"'s real key, claiming to be a "dev" token.
    return sign_internally(stack, "other", {**real[2], "jti": unique("j")})


def forge_revoked(stack: Stack, real: tuple) -> str:  # type: ignore[type-arg]
    token = mint(stack, unique("gone"), dialect="tapis")
    status, _ = http_json(
        "POST",
        f"{stack.gateway}/v3/tokens/revoke",
        body={"token": token},
        headers={"Content-Type": "application/json"},
    )
    assert status == 200
    return token


def forge_key_revoked(stack: Stack, real: tuple) -> str:  # type: ignore[type-arg]
    tenant = unique("kr").replace("-", "")
    ensure_tenant(stack, tenant)
    token = mint(stack, "u", tenant=tenant, dialect="tapis")
    kid = parts(token)[0]["kid"]
    request = urllib.request.Request(
        f"{stack.urls['keys']}/internal/tenants/{tenant}/keys/{kid}/revoke", data=b"", method="POST"
    )
    context = https_context("POST", request.full_url)
    with urllib.request.urlopen(request, timeout=10, context=context) as resp:
        assert resp.status == 200
    return token


def forge_bad_checksum(stack: Stack, real: tuple) -> str:  # type: ignore[type-arg]
    token = mint(stack, unique("cs"), dialect="opaque")
    return token[:-1] + ("A" if token[-1] != "A" else "B")


CASES = {
    "alg none": forge_none,
    "HS256 signed with the RSA public key": forge_hs256_with_public_key,
    "unknown kid": attacker_signed("no-such-kid"),
    "kid with a path": attacker_signed("../../etc/passwd"),
    "kid with a URL": attacker_signed("http://evil.example/jwks.json"),
    "tampered payload": forge_tampered,
    "expired": forge_expired,
    "not yet valid": forge_not_yet_valid,
    "wrong issuer": forge_wrong_issuer,
    "wrong tenant": forge_wrong_tenant,
    "revoked": forge_revoked,
    "signing key revoked": forge_key_revoked,
    "opaque token with a bad checksum": forge_bad_checksum,
}


@pytest.mark.parametrize("case", list(CASES))
def test_forged_or_misused_credential_is_refused_everywhere(
    stack: Stack, real: tuple, case: str
) -> None:  # type: ignore[type-arg]
    refused_in_every_dialect(stack, CASES[case](stack, real))


def test_the_genuine_token_is_accepted(stack: Stack, real: tuple) -> None:  # type: ignore[type-arg]
    # The table means something only if the untouched original gets in.
    status, _ = http_json(
        "GET", f"{stack.gateway}/api/2.0/token/list", headers={"Authorization": f"Bearer {real[0]}"}
    )
    assert status == 200


@pytest.mark.parametrize("param", ["access_token", "token", "api_key"])
def test_a_token_in_the_query_string_never_authenticates(stack: Stack, param: str) -> None:
    token = mint(stack, unique("qs"))
    status, body = http_json("GET", f"{stack.gateway}/api/2.0/token/list?{param}={token}")
    assert (status, body["error_code"]) == (401, "UNAUTHENTICATED")
    status, body = http_json("GET", f"{stack.gateway}/v1/tokens?{param}={token}")
    assert (status, body["errorType"]) == (403, "Forbidden")
