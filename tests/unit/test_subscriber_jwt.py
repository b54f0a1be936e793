"""Local JWT verification rules: pinned algorithms, required claims, tenant from the token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from shared.subscriber import InvalidToken
from shared.subscriber.jwks import parse_jwks, unverified_parts, verify_signature
from tests.factories import access_claims

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _jwk(key: Any, kid: str, alg: str | None) -> dict[str, Any]:
    algorithm = RSAAlgorithm if alg in ("RS256", None) else ECAlgorithm
    jwk: dict[str, Any] = algorithm.to_jwk(key.public_key(), as_dict=True)
    jwk["kid"] = kid
    if alg:
        jwk["alg"] = alg
    return jwk


JWKS = {
    "keys": [
        _jwk(RSA_KEY, "rsa-1", "RS256"),
        _jwk(EC_KEY, "ec-1", "ES256"),
        {"kty": "oct", "kid": "hmac-1", "alg": "HS256", "k": "c2VjcmV0"},
        {"kty": "oct", "kid": "hmac-2", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "broken", "alg": "RS256", "n": "AQAB"},
        "not a key",
    ]
}


def _claims(**overrides: Any) -> dict[str, Any]:
    return access_claims("acme", **overrides)


def _rs256(claims: dict[str, Any], kid: str = "rsa-1") -> str:
    return jwt.encode(claims, RSA_KEY, algorithm="RS256", headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge_hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def _verify(token: str) -> dict[str, Any]:
    tenant, kid = unverified_parts(token)
    key = parse_jwks(JWKS).get(kid)
    if key is None:
        raise InvalidToken("unknown_kid")
    return verify_signature(token, key, tenant, leeway=0)


def test_jwks_keeps_only_asymmetric_signature_keys() -> None:
    assert set(parse_jwks(JWKS)) == {"rsa-1", "ec-1"}
    assert set(parse_jwks(JWKS, {"rsa-1"})) == {"ec-1"}


def test_valid_tokens_of_each_algorithm_verify() -> None:
    claims = _claims()
    assert _verify(_rs256(claims))["jti"] == claims["jti"]
    es = jwt.encode(claims, EC_KEY, algorithm="ES256", headers={"kid": "ec-1"})
    assert _verify(es)["sub"] == "alice@acme"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (
            jwt.encode(_claims(), "", algorithm="none", headers={"kid": "rsa-1"}),
            "algorithm_refused",
        ),
        (_forge_hs256(_claims(), b"secret", "hmac-1"), "algorithm_refused"),
        (
            _forge_hs256(
                _claims(),
                RSA_KEY.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
                ),
                "rsa-1",
            ),
            "algorithm_refused",
        ),
        # Signed by the RSA key but naming the EC key's kid: the EC key's pinned ES256 wins.
        (_rs256(_claims(), kid="ec-1"), "algorithm_refused"),
        (_rs256(_claims(), kid="../../etc/passwd"), "unknown_kid"),
        (jwt.encode(_claims(), RSA_KEY, algorithm="RS256"), "unknown_kid"),
        (_rs256(_claims(exp=int(time.time()) - 5)), "expired"),
        (_rs256(_claims(exp=None)), "missing_claim"),
        (_rs256(_claims(jti=None)), "missing_claim"),
        (_rs256(_claims(**{"tapis/tenant_id": None})), "unknown_tenant"),
        (_rs256(_claims(**{"tapis/tenant_id": "../evil"})), "unknown_tenant"),
        (_rs256(_claims())[:-4] + "AAAA", "bad_signature"),
        ("not.a.jwt", "malformed"),
        ("x" * 20000, "malformed"),
    ],
)
def test_refused_tokens_name_their_reason(token: str, reason: str) -> None:
    with pytest.raises(InvalidToken) as refused:
        _verify(token)
    assert refused.value.reason == reason


def test_tampered_tenant_fails_the_signature() -> None:
    token = _rs256(_claims())
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["tapis/tenant_id"] = "other"
    forged = f"{head}.{_b64(json.dumps(claims).encode())}.{sig}"
    with pytest.raises(InvalidToken) as refused:
        _verify(forged)
    assert refused.value.reason == "bad_signature"
