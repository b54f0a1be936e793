"""The keys service's own JWS signing and claim-set parsing, without a database."""

from __future__ import annotations

import json

import jwt
import pytest

from services.keys.crypto import JwsSigner, generate_private_key, public_jwk
from services.keys.domain import (
    MAX_CLAIM_SETS,
    MAX_CLAIMS_BYTES,
    MAX_EXP,
    WATERMARK_SLACK,
    next_watermark,
    parse_claim_sets,
)
from services.keys.errors import InvalidClaims

CLAIMS = {"jti": "j-1", "iss": "https://t.example", "sub": "alice", "exp": 4102444800, "z": [1]}


@pytest.mark.parametrize("alg", ["RS256", "EdDSA"])
def test_deterministic_signatures_match_pyjwt_byte_for_byte(alg: str) -> None:
    key = generate_private_key(alg)
    ours = JwsSigner(key, alg, "kid-1").token(json.dumps(CLAIMS, separators=(",", ":")).encode())
    theirs = jwt.encode(CLAIMS, key, algorithm=alg, headers={"kid": "kid-1", "typ": "JWT"})
    assert ours == theirs


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_tokens_verify_with_pyjwt_against_the_public_jwk(alg: str) -> None:
    key = generate_private_key(alg)
    token = JwsSigner(key, alg, "kid-2").token(json.dumps(CLAIMS).encode())
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": "kid-2", "typ": "JWT"}
    public = jwt.PyJWK(public_jwk(key, "kid-2", alg)).key
    assert jwt.decode(token, public, algorithms=[alg], options={"verify_aud": False}) == CLAIMS


def test_a_key_of_another_algorithm_is_refused() -> None:
    with pytest.raises(ValueError):
        JwsSigner(generate_private_key("ES256"), "RS256", "kid-3")


def test_claim_sets_keep_their_order_and_report_the_latest_expiry() -> None:
    parsed = parse_claim_sets({"claims": [{"b": 1, "a": 2, "exp": 10}, {"exp": 20.5}]})
    assert parsed.payloads == [b'{"b":1,"a":2,"exp":10}', b'{"exp":20.5}']
    assert parsed.latest_exp == 20.5


def test_a_claim_set_without_exp_never_expires() -> None:
    assert parse_claim_sets({"claims": [{"exp": 10}, {"sub": "x"}]}).latest_exp is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"claims": []},
        {"claims": {"exp": 1}},
        {"claims": [{"exp": 1}] * (MAX_CLAIM_SETS + 1)},
        {"claims": ["not an object"]},
        {"claims": [{"exp": "tomorrow"}]},
        {"claims": [{"exp": True}]},
        {"claims": [{"exp": 0}]},
        {"claims": [{"exp": MAX_EXP}]},
        {"claims": [{"exp": float("nan")}]},
        {"claims": [{"x": float("inf")}]},
        {"claims": [{"x": "y" * MAX_CLAIMS_BYTES}]},
        {"claims": [{"exp": 1}], "alg": "none"},
    ],
)
def test_malformed_claim_sets_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(InvalidClaims):
        parse_claim_sets(body)


def test_the_watermark_moves_only_when_a_token_would_outlive_it() -> None:
    assert next_watermark(100.0, None) == 100.0 + WATERMARK_SLACK
    assert next_watermark(100.0, 200.0) is None
    assert next_watermark(300.0, 200.0) == 300.0 + WATERMARK_SLACK
    assert next_watermark(None, 200.0) == MAX_EXP
    assert next_watermark(None, MAX_EXP) is None
