"""The issuer's pure domain: request parsing, the Tapis claim sets, records and cursors, and the
lifetime and minting rules — no database, no network, time passed in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.issuer.domain import (
    MAX_TTL,
    RECORD_ORDER,
    CreateJwt,
    CreateOpaque,
    access_claims,
    decode_cursor,
    encode_cursor,
    is_active,
    principal_json,
    record_fields,
    record_json,
    refresh_claims,
    reserved_claims,
    rotated_pair,
    token_response,
)
from services.issuer.service import check_lifetime, check_mint
from shared.authz import DEFAULT_MAX_LIFETIME, Kind, Mint
from shared.clients.keys import Tenant
from shared.errors import BadRequest, Forbidden
from tests.factories import jwt_body, minter, principal, token_body

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
ISSUER = "https://tessera.example/v3/tokens"


def bad_request(parse: Any, body: dict[str, Any]) -> str:
    """The message of the BadRequest ``parse(body)`` raises."""
    with pytest.raises(BadRequest) as refused:
        parse(body)
    return str(refused.value)


# --- reserved claims ---------------------------------------------------------------------------


def test_reserved_claims_are_found_whatever_their_case_and_spacing() -> None:
    claims = {
        "Sub": 1,
        " e x p ": 1,
        "TAPIS/anything": 1,
        "tessera/Permissions": 1,
        "username": 1,
        "tenant": 1,
        "team": "blue",
        "tapis_like": 1,
    }
    assert reserved_claims(claims) == sorted(
        [" e x p ", "Sub", "TAPIS/anything", "tenant", "tessera/Permissions", "username"]
    )
    assert reserved_claims({"team": "blue", "project": 7}) == []


# --- CreateOpaque ------------------------------------------------------------------------------


def test_an_opaque_create_takes_its_defaults_and_keeps_permissions_once_in_order() -> None:
    request = CreateOpaque.parse(
        token_body("acme", "ann", permissions=["WRITE", "READ", "WRITE"], name="ci")
    )
    assert (request.tenant, request.subject, request.kind, request.name) == (
        "acme",
        "ann",
        "opaque",
        "ci",
    )
    assert request.permissions == ["WRITE", "READ"]
    assert request.ttl_seconds is None and request.expires_at is None
    assert request.minter.kind is Kind.OPERATOR


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"kind": "jwt_access"}, "kind must be one of opaque, databricks, jobmanager"),
        ({"tenant": "t" * 64}, "tenant must be a string of 1 to 63"),
        ({"subject": ""}, "subject must be a string of 1 to 255"),
        ({"subject": 7}, "subject must be a string"),
        ({"name": "x" * 256}, "name must be a string of 1 to 255"),
        ({"ttl_seconds": 0}, "ttl_seconds must be a positive integer"),
        ({"ttl_seconds": -1}, "ttl_seconds must be a positive integer"),
        ({"ttl_seconds": True}, "ttl_seconds must be a positive integer"),
        ({"ttl_seconds": "10"}, "ttl_seconds must be a positive integer"),
        ({"ttl_seconds": 1.5}, "ttl_seconds must be a positive integer"),
        ({"ttl_seconds": MAX_TTL + 1}, f"at most {MAX_TTL}"),
        ({"permissions": ["p"] * 17}, "at most 16"),
        ({"permissions": "admin"}, "permissions must be a list"),
        ({"permissions": ["no spaces"]}, "each permission must be"),
        ({"permissions": ["x" * 65]}, "each permission must be"),
        ({"expires_at": "2026-01-01T00:00:00"}, "expires_at must be an RFC 3339 time with an"),
        ({"expires_at": "tomorrow"}, "expires_at must be an RFC 3339"),
        ({"expires_at": 1767225600}, "expires_at must be an RFC 3339"),
        ({"minter": None}, "minter: minter must be an object"),
        ({"minter": {"kind": "user", "subject": "a"}}, "minter: minter.tenant is required"),
    ],
)
def test_an_opaque_create_refuses_each_bad_field_by_name(fields: dict[str, Any], says: str) -> None:
    assert says in bad_request(CreateOpaque.parse, {**token_body("acme"), **fields})


def test_an_opaque_create_keeps_the_limits_and_an_exact_expiry() -> None:
    request = CreateOpaque.parse(
        token_body(
            "t" * 63,
            "s" * 255,
            kind="jobmanager",
            ttl_seconds=MAX_TTL,
            permissions=[f"p{n}" for n in range(16)],
            expires_at="2027-01-02T03:04:05+01:00",
        )
    )
    assert request.ttl_seconds == MAX_TTL and len(request.permissions) == 16
    assert request.expires_at == datetime(2027, 1, 2, 2, 4, 5, tzinfo=UTC)


def test_a_minter_from_a_request_is_the_principal_it_names() -> None:
    body = token_body("acme", minter=minter("user", "acme", "bob", ("admin",), account_type="user"))
    who = CreateOpaque.parse(body).minter
    assert (who.kind, who.tenant, who.subject) == (Kind.USER, "acme", "bob")
    assert who.permissions == frozenset({"admin"}) and not who.internal_network


# --- CreateJwt ---------------------------------------------------------------------------------


def test_a_jwt_create_for_a_user_takes_tenant_defaults_for_what_is_not_given() -> None:
    request = CreateJwt.parse(jwt_body("acme", "ann", refresh=True))
    assert (request.tenant, request.username, request.account_type) == ("acme", "ann", "user")
    assert request.refresh and not request.delegation
    assert request.access_ttl is request.refresh_ttl is request.delegation_sub is None
    assert request.claims == {} and request.permissions == []


def test_a_delegated_service_jwt_names_its_site_and_delegate() -> None:
    request = CreateJwt.parse(
        jwt_body(
            "acme",
            "svc",
            account_type="service",
            target_site="tacc",
            delegation=True,
            delegation_sub_tenant_id="other",
            delegation_sub_username="bob",
        )
    )
    assert request.target_site == "tacc" and request.delegation_sub == "bob@other"


@pytest.mark.parametrize("ttl", [0, -5])
def test_a_tapis_ttl_of_zero_or_less_means_the_tenant_default(ttl: int) -> None:
    request = CreateJwt.parse(jwt_body("acme", access_ttl=ttl, refresh_ttl=ttl))
    assert request.access_ttl is None and request.refresh_ttl is None


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"account_type": "robot"}, "account_type must be 'user' or 'service'"),
        ({"account_type": "service"}, "target_site must be a string"),
        ({"delegation": True}, "delegation_sub_tenant_id must be a string"),
        ({"delegation": "yes"}, "delegation must be true or false"),
        ({"generate_refresh_token": 1}, "generate_refresh_token must be true or false"),
        ({"claims": ["team"]}, "claims must be an object"),
        ({"claims": {"tapis/sub": "x", "Exp": 1}}, "reserved claims: Exp, tapis/sub"),
        # Errors name the field as the client sent it, not the internal name.
        ({"access_ttl": "60"}, "access_token_ttl must be an integer"),
        ({"refresh_ttl": True}, "refresh_token_ttl must be an integer"),
        ({"access_ttl": MAX_TTL + 1}, "access_token_ttl must be a positive integer"),
        ({"username": ""}, "username must be a string"),
    ],
)
def test_a_jwt_create_refuses_each_bad_field_by_name(fields: dict[str, Any], says: str) -> None:
    assert says in bad_request(CreateJwt.parse, {**jwt_body("acme"), **fields})


def test_an_absent_flag_is_false() -> None:
    assert not CreateJwt.parse(jwt_body("acme", generate_refresh_token=None)).refresh


# --- the Tapis claim sets ----------------------------------------------------------------------


def _request(**fields: Any) -> CreateJwt:
    return CreateJwt.parse(jwt_body("acme", "ann", **fields))


def test_access_claims_come_in_the_contracts_order_with_exp_from_now() -> None:
    claims = access_claims(
        _request(
            account_type="service",
            target_site="tacc",
            claims={"team": "blue"},
            permissions=["admin"],
        ),
        ISSUER,
        600,
        NOW,
    )
    assert list(claims) == [
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
        "tapis/target_site",
        "team",
        "tessera/permissions",
    ]
    assert claims["sub"] == "ann@acme" and claims["iss"] == ISSUER
    assert claims["tapis/token_type"] == "access" and claims["tapis/delegation"] is False
    assert claims["exp"] == int((NOW + timedelta(seconds=600)).timestamp())
    assert claims["tessera/permissions"] == ["admin"]
    assert uuid.UUID(claims["jti"]).version == 4


def test_a_user_token_without_extras_has_no_site_claim_and_no_permissions() -> None:
    claims = access_claims(_request(), ISSUER, 60, NOW)
    assert "tapis/target_site" not in claims and "tessera/permissions" not in claims
    assert access_claims(_request(), ISSUER, 60, NOW)["jti"] != claims["jti"]


def test_refresh_claims_carry_the_access_claims_without_exp_plus_the_access_ttl() -> None:
    access = access_claims(_request(claims={"team": "blue"}), ISSUER, 600, NOW)
    refresh = refresh_claims(access, 600, 86400, NOW)
    assert list(refresh) == [
        "jti",
        "iss",
        "sub",
        "tapis/initial_ttl",
        "tapis/tenant_id",
        "tapis/token_type",
        "exp",
        "tapis/access_token",
    ]
    assert refresh["jti"] != access["jti"]
    assert refresh["tapis/token_type"] == "refresh" and refresh["tapis/initial_ttl"] == 86400
    assert refresh["exp"] == int((NOW + timedelta(days=1)).timestamp())
    inner = refresh["tapis/access_token"]
    assert "exp" not in inner and inner["ttl"] == 600
    assert {k: v for k, v in inner.items() if k != "ttl"} == {
        k: v for k, v in access.items() if k != "exp"
    }


def test_a_rotated_pair_gets_new_jtis_and_expiries_and_carries_everything_else() -> None:
    access = access_claims(_request(claims={"team": "blue"}), ISSUER, 600, NOW)
    refresh = refresh_claims(access, 600, 86400, NOW)
    later = NOW + timedelta(hours=2)
    new_access, new_refresh = rotated_pair(refresh, later)
    assert list(new_access) == list(access)  # exp back in its place, after the account type
    assert new_access["jti"] not in (access["jti"], refresh["jti"])
    assert new_access["exp"] == int((later + timedelta(seconds=600)).timestamp())
    assert {k: v for k, v in new_access.items() if k not in ("jti", "exp")} == {
        k: v for k, v in access.items() if k not in ("jti", "exp")
    }
    assert new_refresh["tapis/initial_ttl"] == 86400  # kept, not restarted
    assert new_refresh["exp"] == int((later + timedelta(days=1)).timestamp())
    assert new_refresh["jti"] != refresh["jti"]
    assert new_refresh["tapis/access_token"]["jti"] == new_access["jti"]
    again, _ = rotated_pair(new_refresh, later)
    assert list(again) == list(access)


def test_a_token_response_states_the_granted_ttl_and_the_instant_of_exp() -> None:
    claims = {"jti": "j-1", "exp": int(NOW.timestamp())}
    assert token_response("tok", claims, 600, "access_token") == {
        "access_token": "tok",
        "jti": "j-1",
        "expires_in": 600,
        "expires_at": NOW.isoformat(),
    }


# --- cursors, records, activity ----------------------------------------------------------------


def test_a_cursor_round_trips_and_a_forged_one_is_a_bad_request() -> None:
    token_id = uuid.uuid4()
    assert decode_cursor(encode_cursor(NOW, token_id)) == (NOW, token_id)
    for junk in ("", "not base64!", encode_cursor(NOW, token_id)[:-8], "aGVsbG8="):
        with pytest.raises(BadRequest, match="cursor is not one this service gave out"):
            decode_cursor(junk)


def _row(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "display_id": None,
        "tenant": "acme",
        "subject": "ann",
        "kind": "opaque",
        "name": None,
        "permissions": ("READ",),
        "created_at": NOW,
        "expires_at": NOW + timedelta(hours=1),
        "last_used_at": None,
        "revoked_at": None,
        "created_by": None,
        "family_id": None,
        "kid": None,
        "secret_hash": b"never shown",
    }
    row.update(fields)
    return row


def test_a_record_is_every_field_in_order_as_json_and_never_the_secret() -> None:
    row = _row(family_id=uuid.uuid4())
    record = record_json(row)
    assert tuple(record) == RECORD_ORDER and "secret_hash" not in record
    assert record["id"] == str(row["id"]) and record["family_id"] == str(row["family_id"])
    assert record["created_at"] == NOW.isoformat() and record["last_used_at"] is None
    assert record["permissions"] == ["READ"]
    assert record_fields(row, ["expires_at", "id"]) == {
        "expires_at": (NOW + timedelta(hours=1)).isoformat(),
        "id": str(row["id"]),
    }


def test_a_principal_is_what_the_gateway_needs_of_the_token() -> None:
    row = _row(kind="databricks", display_id="d" * 64, expires_at=None)
    assert principal_json(row) == {
        "tenant": "acme",
        "subject": "ann",
        "token_id": str(row["id"]),
        "kind": "databricks",
        "permissions": ["READ"],
        "expires_at": None,
        "display_id": "d" * 64,
    }


def test_a_token_is_active_until_its_expiry_or_revocation() -> None:
    assert is_active(_row(), NOW)
    assert is_active(_row(expires_at=None), NOW)
    assert not is_active(_row(expires_at=NOW), NOW)  # expiry is exclusive
    assert not is_active(_row(revoked_at=NOW), NOW - timedelta(days=1))


# --- lifetime and minting rules ----------------------------------------------------------------


def test_the_maximum_lifetime_is_the_tenants_or_the_default() -> None:
    def tenant(max_lifetime: int | None) -> Tenant:
        return Tenant.from_json(
            {
                "id": "acme",
                "issuer": "https://tessera.test/v3/tokens",
                "alg": "RS256",
                "access_ttl": 300,
                "refresh_ttl": 3600,
                "token_quota": 10,
                "max_lifetime": max_lifetime,
                "created_at": "2026-01-01T00:00:00+00:00",
            }
        )

    assert tenant(3600).lifetime_limit == 3600
    assert tenant(None).lifetime_limit == DEFAULT_MAX_LIFETIME


def test_a_lifetime_may_reach_the_maximum_and_not_pass_it() -> None:
    check_lifetime(3600, 3600, "ttl_seconds")
    with pytest.raises(BadRequest, match=r"ttl_seconds must be at most .* 3600 seconds"):
        check_lifetime(3601, 3600, "ttl_seconds")


def test_a_credential_never_mints_more_than_it_holds() -> None:
    user = principal(Kind.USER, "acme", "ann", ("WRITE",))
    check_mint(user, Mint("acme", "ann", "opaque", frozenset({"WRITE"}), 60), 3600)
    with pytest.raises(Forbidden, match="cannot grant what it does not hold"):
        check_mint(user, Mint("acme", "ann", "opaque", frozenset({"admin"}), 60), 3600)
    with pytest.raises(Forbidden, match="jobmanager tokens come only from the jobmanager API"):
        check_mint(user, Mint("acme", "ann", "jobmanager", frozenset(), 60), 3600)
    with pytest.raises(Forbidden, match="lifetime must be at most 3600"):
        check_mint(
            principal(Kind.OPERATOR, "", "operator"),
            Mint("acme", "a", "opaque", frozenset(), 3601),
            3600,
        )
