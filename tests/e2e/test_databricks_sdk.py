"""The Databricks Token API 2.0 through the real databricks-sdk (CONTRACTS.md §4)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.config import Config
from databricks.sdk.errors import (
    InvalidParameterValue,
    NotFound,
    ResourceDoesNotExist,
    Unauthenticated,
)

from tests.conftest import Stack
from tests.e2e.gateway_support import ensure_tenant, http_json, mint, unique

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _no_databricks_profile(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[None]:  # type: ignore[no-untyped-def]
    # Two auth methods make the SDK raise: no DATABRICKS_* variables, no ~/.databrickscfg.
    for name in list(os.environ):
        if name.startswith("DATABRICKS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    yield


def client(stack: Stack, token: str) -> WorkspaceClient:
    return WorkspaceClient(config=Config(host=stack.gateway, token=token, retry_timeout_seconds=10))


def test_create_list_delete_with_the_sdk(stack: Stack) -> None:
    user = unique("ann")
    w = client(stack, mint(stack, user))
    assert w.config.auth_type == "pat"
    created = w.tokens.create(comment="ci", lifetime_seconds=3600)
    assert created.token_value.startswith("dapi") and len(created.token_value) == 36
    info = created.token_info
    assert info.comment == "ci"
    assert info.expiry_time - info.creation_time == 3_600_000
    listed = {t.token_id: t for t in w.tokens.list()}
    assert info.token_id in listed
    assert listed[info.token_id].comment == "ci"
    w.tokens.delete(token_id=info.token_id)
    # Deleted at once: a second delete finds nothing (the issuer was told before the answer).
    with pytest.raises(ResourceDoesNotExist):
        w.tokens.delete(token_id=info.token_id)
    assert info.token_id not in {t.token_id for t in w.tokens.list()}
    # The deleted token is refused on the very next request.
    with pytest.raises(Unauthenticated):
        list(client(stack, created.token_value).tokens.list())


def test_token_without_lifetime_lasts_two_years_and_no_comment_is_omitted(stack: Stack) -> None:
    token = mint(stack, unique("bo"))
    status, body = http_json(
        "POST",
        f"{stack.gateway}/api/2.0/token/create",
        body={},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert status == 200
    info = body["token_info"]
    assert set(info) == {"token_id", "creation_time", "expiry_time"}
    assert info["expiry_time"] - info["creation_time"] == 2 * 365 * 86400 * 1000
    status, listing = http_json(
        "GET", f"{stack.gateway}/api/2.0/token/list", headers={"Authorization": f"Bearer {token}"}
    )
    # Nothing lives forever: the CLI-minted credential too ends at the tenant's maximum lifetime.
    assert all(i["expiry_time"] != -1 for i in listing["token_infos"])
    assert len(listing["token_infos"]) == 2


@pytest.mark.parametrize("lifetime", [0, -5, "60", 1.5, True])
def test_bad_lifetime_is_invalid_parameter_value(stack: Stack, lifetime: object) -> None:
    w = client(stack, mint(stack, unique("cy")))
    with pytest.raises(InvalidParameterValue):
        w.tokens.create(lifetime_seconds=lifetime)  # type: ignore[arg-type]


def test_unknown_and_foreign_token_ids_do_not_exist(stack: Stack) -> None:
    owner = client(stack, mint(stack, unique("dee")))
    theirs = owner.tokens.create(comment="mine").token_info.token_id
    other = client(stack, mint(stack, unique("eve")))
    with pytest.raises(ResourceDoesNotExist):
        other.tokens.delete(token_id="0" * 64)
    with pytest.raises(ResourceDoesNotExist):
        other.tokens.delete(token_id=theirs)
    assert theirs not in {t.token_id for t in other.tokens.list()}
    # Another tenant's admin cannot see or delete it either.
    ensure_tenant(stack, "other")
    foreign = client(stack, mint(stack, "admin", tenant="other", permissions=("admin",)))
    with pytest.raises(ResourceDoesNotExist):
        foreign.tokens.delete(token_id=theirs)
    assert theirs in {t.token_id for t in owner.tokens.list()}


def test_missing_or_invalid_credential_is_unauthenticated(stack: Stack) -> None:
    with pytest.raises(Unauthenticated):
        list(client(stack, "dapi" + "0" * 32).tokens.list())
    status, body = http_json("GET", f"{stack.gateway}/api/2.0/token/list")
    assert status == 401 and body["error_code"] == "UNAUTHENTICATED" and "detail" not in body


def test_quota_exceeded_is_a_400(stack: Stack) -> None:
    user = unique("fay")
    # A tenant with a quota of 3 (the default of 600 would take 600 creates to reach).
    tenant = unique("quota").replace("-", "")
    result = stack.cli("tenant", "create", tenant, "--token-quota", "3")
    assert result.returncode == 0
    w = client(stack, mint(stack, user, tenant=tenant))
    w.tokens.create(comment="2")
    w.tokens.create(comment="3")
    status, body = http_json(
        "POST",
        f"{stack.gateway}/api/2.0/token/create",
        body={"comment": "4"},
        headers={"Authorization": f"Bearer {w.config.token}"},
    )
    assert status == 400 and body["error_code"] == "QUOTA_EXCEEDED"


def test_a_deleted_token_frees_its_quota_place_at_once(stack: Stack) -> None:
    # A script rotating its tokens at the quota: delete the oldest, create the next, at once.
    tenant = unique("quota").replace("-", "")
    assert stack.cli("tenant", "create", tenant, "--token-quota", "2").returncode == 0
    w = client(stack, mint(stack, unique("gus"), tenant=tenant))
    previous = w.tokens.create(comment="2").token_info.token_id
    for n in range(3, 13):
        w.tokens.delete(token_id=previous)
        previous = w.tokens.create(comment=str(n)).token_info.token_id
    assert len(list(w.tokens.list())) == 2


def test_well_known_probe_answers_fast_without_auth(stack: Stack) -> None:
    status, body = http_json("GET", f"{stack.gateway}/.well-known/databricks-config")
    assert status == 200 and body == {}  # nothing to discover, and no workspace_id


def test_a_client_is_built_without_a_warning(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="databricks"):
        w = client(stack, mint(stack, unique("quiet")))
        assert w.config.auth_type == "pat"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []


def test_apis_tessera_does_not_serve_say_so(stack: Stack) -> None:
    w = client(stack, mint(stack, unique("tm")))
    with pytest.raises(NotFound) as raised:
        list(w.token_management.list())
    assert "Tessera serves only the Databricks Token API" in str(raised.value)
    with pytest.raises(NotFound) as raised:
        w.current_user.me()
    assert "is not served here" in str(raised.value)
