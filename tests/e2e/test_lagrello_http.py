"""Lagrello tokens over plain HTTP: exact camelCase key sets, no nulls, paging, 204, {id}."""

from __future__ import annotations

import re

import pytest

from tests.conftest import Stack
from tests.e2e.gateway_support import ensure_tenant, http, http_json, mint, unique

pytestmark = pytest.mark.e2e
TOKEN_KEYS = {"tokenKey", "tokenName", "createdBy", "createdAt", "permissions"}
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def assert_token_model(model: dict) -> None:  # type: ignore[type-arg]
    assert set(model) == TOKEN_KEYS
    assert all(value is not None for value in model.values())
    assert RFC3339_Z.match(model["createdAt"])
    assert "READ" in model["permissions"]


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> str:
    name = unique("lag").replace("-", "")
    ensure_tenant(stack, name)
    return name


def test_create_list_and_delete(stack: Stack, tenant: str) -> None:
    admin = mint(stack, "root", tenant=tenant, permissions=("admin",), dialect="opaque")
    status, made = http_json(
        "POST",
        f"{stack.gateway}/v1/tokens",
        body={"tokenName": "ci", "permissions": ["WRITE", "WRITE"]},
        headers=auth(admin),
    )
    assert status == 200
    assert_token_model(made)
    assert made["permissions"] == ["READ", "WRITE"] and made["createdBy"] == "root"
    assert made["tokenKey"].startswith("tsr_")  # the credential, shown once
    # It is a working credential: it lists (any valid credential of the tenant may).
    status, listing = http_json(
        "GET", f"{stack.gateway}/v1/tokens?size=20", headers=auth(made["tokenKey"])
    )
    assert status == 200 and set(listing) == {"data", "paging"}
    assert set(listing["paging"]) == {"previous", "next"}
    for model in listing["data"]:
        assert_token_model(model)
        assert not model["tokenKey"].startswith("tsr_")  # a list never shows a secret
    ids = [m["tokenKey"] for m in listing["data"] if m["tokenName"] == "ci"]
    assert len(ids) == 1
    # Delete by id: 204, no body, no Content-Type; then the credential is refused.
    status, headers, body = http(
        "DELETE", f"{stack.gateway}/v1/tokens/{ids[0]}", headers=auth(admin)
    )
    assert status == 204 and body == b"" and "Content-Type" not in headers
    status, error = http_json("DELETE", f"{stack.gateway}/v1/tokens/{ids[0]}", headers=auth(admin))
    assert status == 404 and error["errorType"] == "NotFound"  # at once
    status, error = http_json("GET", f"{stack.gateway}/v1/tokens", headers=auth(made["tokenKey"]))
    assert (
        status == 403
        and set(error) == {"message", "errorType"}
        and error["errorType"] == "Forbidden"
    )
    status, error = http_json("DELETE", f"{stack.gateway}/v1/tokens/{ids[0]}", headers=auth(admin))
    assert status == 404 and error["errorType"] == "NotFound"


def test_delete_by_the_credential_itself(stack: Stack, tenant: str) -> None:
    admin = mint(stack, "root", tenant=tenant, permissions=("admin",), dialect="opaque")
    _, made = http_json(
        "POST", f"{stack.gateway}/v1/tokens", body={"tokenName": "x"}, headers=auth(admin)
    )
    status, _, _ = http(
        "DELETE", f"{stack.gateway}/v1/tokens/{made['tokenKey']}", headers=auth(admin)
    )
    assert status == 204


@pytest.mark.parametrize("placeholder", ["%7Bid%7D", "%7bid%7d", "%7Bid%7d"])
def test_placeholder_delete_deletes_nothing(stack: Stack, tenant: str, placeholder: str) -> None:
    admin = mint(stack, "root", tenant=tenant, permissions=("admin",), dialect="opaque")
    _, before = http_json("GET", f"{stack.gateway}/v1/tokens", headers=auth(admin))
    status, error = http_json(
        "DELETE", f"{stack.gateway}/v1/tokens/{placeholder}", headers=auth(admin)
    )
    assert status == 404 and error["errorType"] == "NotFound"
    assert "placeholder" in error["message"] and "nothing was deleted" in error["message"]
    _, after = http_json("GET", f"{stack.gateway}/v1/tokens", headers=auth(admin))
    assert after["data"] == before["data"]


def test_paging_links_and_the_end(stack: Stack) -> None:
    tenant = unique("page").replace("-", "")
    ensure_tenant(stack, tenant)
    admin = mint(stack, "root", tenant=tenant, permissions=("admin",), dialect="opaque")
    for n in range(4):
        http_json(
            "POST", f"{stack.gateway}/v1/tokens", body={"tokenName": f"t{n}"}, headers=auth(admin)
        )
    # 4 made here plus the minted admin credential: 5 tokens, pages of 2.
    _, first = http_json("GET", f"{stack.gateway}/v1/tokens?size=2", headers=auth(admin))
    assert first["paging"]["previous"] == ""
    # Links start with the public URL (tessera dev: http://localhost:<port>), never the Host.
    public = f"http://localhost:{stack.port}"
    assert first["paging"]["next"] == f"{public}/v1/tokens?page=2&size=2"

    def follow(link: str) -> str:  # the public URL is a proxy's; this test talks to the gateway
        return stack.gateway + link.removeprefix(public)

    _, second = http_json("GET", follow(first["paging"]["next"]), headers=auth(admin))
    assert second["paging"]["previous"] == f"{public}/v1/tokens?page=1&size=2"
    _, third = http_json("GET", follow(second["paging"]["next"]), headers=auth(admin))
    assert len(third["data"]) == 1 and third["paging"]["next"] == ""
    _, beyond = http_json("GET", f"{stack.gateway}/v1/tokens?page=9&size=2", headers=auth(admin))
    assert beyond["data"] == [] and beyond["paging"]["next"] == ""
    names = [m["tokenName"] for m in first["data"] + second["data"] + third["data"]]
    assert len(set(names)) == 5  # newest first, no duplicates across pages


@pytest.mark.parametrize("query", ["size=0", "size=21", "size=x", "page=0", "page=-1"])
def test_bad_paging_is_400(stack: Stack, tenant: str, query: str) -> None:
    admin = mint(stack, "root", tenant=tenant, permissions=("admin",), dialect="opaque")
    status, error = http_json("GET", f"{stack.gateway}/v1/tokens?{query}", headers=auth(admin))
    assert status == 400 and error["errorType"] == "BadRequest"


@pytest.mark.parametrize(
    "body",
    [
        None,
        {},
        {"tokenName": ""},
        {"tokenName": "x" * 129},
        {"tokenName": 5},
        {"tokenName": "a", "permissions": ["ROOT"]},
    ],
)
def test_bad_create_is_400(stack: Stack, tenant: str, body: object) -> None:
    admin = mint(stack, "root", tenant=tenant, permissions=("admin",), dialect="opaque")
    status, error = http_json("POST", f"{stack.gateway}/v1/tokens", body=body, headers=auth(admin))
    assert status == 400 and set(error) == {"message", "errorType"}


def test_create_needs_admin_and_a_bearer(stack: Stack, tenant: str) -> None:
    reader = mint(stack, "reader", tenant=tenant, dialect="opaque")
    status, error = http_json(
        "POST", f"{stack.gateway}/v1/tokens", body={"tokenName": "x"}, headers=auth(reader)
    )
    assert status == 403 and error["errorType"] == "Forbidden"
    status, error = http_json("GET", f"{stack.gateway}/v1/tokens")
    assert status == 403


def test_other_tenants_tokens_are_not_found(stack: Stack, tenant: str) -> None:
    admin = mint(stack, "root", tenant=tenant, permissions=("admin",), dialect="opaque")
    _, made = http_json(
        "POST", f"{stack.gateway}/v1/tokens", body={"tokenName": "mine"}, headers=auth(admin)
    )
    _, listing = http_json("GET", f"{stack.gateway}/v1/tokens", headers=auth(admin))
    token_id = next(m["tokenKey"] for m in listing["data"] if m["tokenName"] == "mine")
    intruder = mint(stack, "root", tenant="dev", permissions=("admin",), dialect="opaque")
    _, theirs = http_json("GET", f"{stack.gateway}/v1/tokens", headers=auth(intruder))
    assert token_id not in {m["tokenKey"] for m in theirs["data"]}
    for key in (token_id, made["tokenKey"]):
        status, error = http_json(
            "DELETE", f"{stack.gateway}/v1/tokens/{key}", headers=auth(intruder)
        )
        assert status == 404 and error["errorType"] == "NotFound"
    _, still = http_json("GET", f"{stack.gateway}/v1/tokens", headers=auth(made["tokenKey"]))
    assert token_id in {m["tokenKey"] for m in still["data"]}


def test_a_wrong_method_is_one_of_lagrellos_error_types(stack: Stack) -> None:
    status, body = http_json("PUT", f"{stack.gateway}/v1/tokens")
    assert status == 405 and body["errorType"] == "NotFound"
