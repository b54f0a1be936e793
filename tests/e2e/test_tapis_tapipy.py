"""Tapis v3 Tokens through the real tapipy client (CONTRACTS.md §1)."""

from __future__ import annotations

import json

import jwt
import pytest
from jwt.utils import base64url_decode
from tapipy.errors import BadRequestError
from tapipy.tapis import Tapis

from tests.conftest import Stack
from tests.e2e.gateway_support import http, http_json, mint, unique

pytestmark = pytest.mark.e2e
ACCESS_ORDER = [
    "jti",
    "iss",
    "sub",
    "tapis/tenant_id",
    "tapis/token_type",
    "tapis/delegation",
    "tapis/delegation_sub",
    "tapis/username",
    "tapis/account_type",
    "exp",
]


def basic_client(stack: Stack, user: str, password: str) -> Tapis:
    client = Tapis(base_url=stack.gateway, tenant_id="dev", username=user)
    client.service_password = password  # what tapipy sends as the Basic password
    return client


def claims_of(token: str) -> dict:  # type: ignore[type-arg]
    return json.loads(base64url_decode(token.split(".")[1]))


def test_create_with_basic_refresh_and_revoke(stack: Stack) -> None:
    user = unique("tina")
    client = basic_client(stack, user, mint(stack, user))
    pair = client.tokens.create_token(
        token_username=user, token_tenant_id="dev", account_type="user", generate_refresh_token=True
    )
    access = pair.access_token
    assert access.expires_in == 300 and pair.refresh_token.expires_in == 600
    header = jwt.get_unverified_header(access.access_token)
    assert header["alg"] == "RS256" and header["typ"] == "JWT"
    claims = claims_of(access.access_token)
    assert list(claims) == ACCESS_ORDER
    assert claims["sub"] == f"{user}@dev" and claims["jti"] == access.jti
    refresh_claims = claims_of(pair.refresh_token.refresh_token)
    assert list(refresh_claims) == [
        "jti",
        "iss",
        "sub",
        "tapis/initial_ttl",
        "tapis/tenant_id",
        "tapis/token_type",
        "exp",
        "tapis/access_token",
    ]
    assert refresh_claims["tapis/access_token"]["ttl"] == 300

    renewed = client.tokens.refresh_token(refresh_token=pair.refresh_token.refresh_token)
    assert renewed.access_token.jti != access.jti
    assert renewed.refresh_token.refresh_token != pair.refresh_token.refresh_token

    envelope = client.tokens.revoke_token(token=renewed.access_token.access_token)
    # tapipy hands back the whole envelope when result is "".
    assert envelope["status"] == "success" and envelope["result"] == ""
    assert renewed.access_token.jti in envelope["message"]
    # Refused on the very next request, everywhere.
    with pytest.raises(BadRequestError):
        Tapis(
            base_url=stack.gateway, tenant_id="dev", jwt=renewed.access_token.access_token
        ).tokens.create_token(token_username=user, token_tenant_id="dev", account_type="user")
    status, _ = http_json(
        "GET",
        f"{stack.gateway}/api/2.0/token/list",
        headers={"Authorization": f"Bearer {renewed.access_token.access_token}"},
    )
    assert status == 401


def test_create_with_a_jwt_and_without_refresh_token(stack: Stack) -> None:
    user = unique("tom")
    token = mint(stack, user, dialect="tapis")
    client = Tapis(base_url=stack.gateway, tenant_id="dev", jwt=token)
    made = client.tokens.create_token(
        token_username=user,
        token_tenant_id="dev",
        account_type="user",
        access_token_ttl=120,
        claims={"x-extra": "kept"},
    )
    assert made.access_token.expires_in == 120
    assert not hasattr(made, "refresh_token")
    assert claims_of(made.access_token.access_token)["x-extra"] == "kept"
    # Someone else's name needs the token-generator right.
    with pytest.raises(BadRequestError):
        client.tokens.create_token(
            token_username="mallory", token_tenant_id="dev", account_type="user"
        )


def test_update_keys_rotates_without_breaking_earlier_tokens(stack: Stack) -> None:
    admin = mint(stack, unique("ops"), dialect="tapis", permissions=("keys:rotate",))
    client = Tapis(base_url=stack.gateway, tenant_id="dev", jwt=admin)
    result = client.tokens.update_keys(tenant_id="dev")
    assert result.public_key.startswith("-----BEGIN RSA PUBLIC KEY-----")
    # The token signed by the old key still works after the rotation.
    again = client.tokens.create_token(
        token_username=claims_of(admin)["tapis/username"],
        token_tenant_id="dev",
        account_type="user",
    )
    assert again.access_token.access_token
    _, _, body = http("GET", f"{stack.gateway}/v3/tenants/dev/.well-known/jwks.json")
    kids = {k["kid"] for k in json.loads(body)["keys"]}
    assert jwt.get_unverified_header(admin)["kid"] in kids
    assert jwt.get_unverified_header(again.access_token.access_token)["kid"] in kids


def test_update_keys_refuses_basic_and_callers_without_the_right(stack: Stack) -> None:
    user = unique("nobody")
    plain = Tapis(base_url=stack.gateway, tenant_id="dev", jwt=mint(stack, user, dialect="tapis"))
    with pytest.raises(BadRequestError):
        plain.tokens.update_keys(tenant_id="dev")
    status, body = http_json(
        "PUT",
        f"{stack.gateway}/v3/tokens/keys",
        body={"tenant_id": "dev"},
        headers={"Authorization": "Basic dXNlcjpwdw==", "Content-Type": "application/json"},
    )
    assert status == 400 and body["status"] == "error" and body["result"] is None


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"account_type": "robot", "token_tenant_id": "dev", "token_username": "u"},
        {"account_type": "user", "token_tenant_id": "nowhere", "token_username": "u"},
        {"account_type": "service", "token_tenant_id": "dev", "token_username": "u"},
        {
            "account_type": "user",
            "token_tenant_id": "dev",
            "token_username": "u",
            "access_token_ttl": True,
        },
        {
            "account_type": "user",
            "token_tenant_id": "dev",
            "token_username": "u",
            "claims": {"sub": "x"},
        },
        {
            "account_type": "user",
            "token_tenant_id": "dev",
            "token_username": "u",
            "delegation_token": True,
        },
    ],
)
def test_bad_create_requests_are_400_envelopes(stack: Stack, payload: dict) -> None:  # type: ignore[type-arg]
    status, body = http_json(
        "POST",
        f"{stack.gateway}/v3/tokens",
        body=payload,
        headers={"Authorization": "Basic dTp4", "Content-Type": "application/json"},
    )
    assert status == 400
    assert body == {**body, "status": "error", "result": None}
    assert set(body) == {"result", "status", "message", "version", "metadata"}


def test_unknown_route_or_method_is_a_405_envelope(stack: Stack) -> None:
    for method, path in [("GET", "/v3/nothing"), ("DELETE", "/v3/tokens")]:
        status, body = http_json(method, f"{stack.gateway}{path}")
        assert status == 405 and body["status"] == "error"


def test_health_routes_of_the_real_tokens_api_answer(stack: Stack) -> None:
    for route, result in (("hello", "hello"), ("ready", "ready")):
        status, body = http_json("GET", f"{stack.gateway}/v3/tokens/{route}")
        assert status == 200, body
        assert (body["status"], body["result"]) == ("success", result)


@pytest.mark.parametrize("refresh", [False, True])
def test_service_and_delegation_tokens_through_tapipy(stack: Stack, refresh: bool) -> None:
    service = unique("jobs")
    client = basic_client(stack, service, mint(stack, service))
    pair = client.tokens.create_token(
        account_type="service",
        token_tenant_id="dev",
        token_username=service,
        target_site_id="tacc",
        generate_refresh_token=refresh,
    )
    claims = claims_of(pair.access_token.access_token)
    assert claims["tapis/account_type"] == "service"
    assert claims["tapis/target_site"] == "tacc"
    assert claims["tapis/delegation"] is False and claims["tapis/delegation_sub"] is None
    assert hasattr(pair, "refresh_token") == refresh
    delegated = client.tokens.create_token(
        account_type="service",
        token_tenant_id="dev",
        token_username=service,
        target_site_id="tacc",
        delegation_token=True,
        delegation_sub_tenant_id="dev",
        delegation_sub_username="bob",
        generate_refresh_token=refresh,
    )
    claims = claims_of(delegated.access_token.access_token)
    assert claims["tapis/delegation"] is True
    assert claims["tapis/delegation_sub"] == "bob@dev"
    assert claims["sub"] == f"{service}@dev" and claims["tapis/target_site"] == "tacc"
    if refresh:
        refreshed = client.tokens.refresh_token(refresh_token=delegated.refresh_token.refresh_token)
        again = claims_of(refreshed.access_token.access_token)
        assert again["tapis/delegation_sub"] == "bob@dev" and again["jti"] != claims["jti"]


def test_a_ttl_error_names_the_field_the_client_sent(stack: Stack) -> None:
    user = unique("ttl")
    client = basic_client(stack, user, mint(stack, user))
    with pytest.raises(BadRequestError) as raised:
        client.tokens.create_token(
            token_username=user,
            token_tenant_id="dev",
            account_type="user",
            access_token_ttl=10**12,
        )
    message = str(raised.value)
    assert "access_token_ttl" in message and "access_ttl " not in message
