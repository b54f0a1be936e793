"""Authorization, tried as an attacker would: every action of every dialect for each kind of
principal against ``tessera dev`` over real HTTP, and each escalation that once worked.

The expected outcomes are written out here, not derived from ``shared.authz``: the table in
this file is the contract the module must keep (docs/authorization.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Stack
from tests.e2e.gateway_support import ensure_tenant, http, http_json, mint, unique
from tests.factories import (
    JSON,
    basic,
    bearer,
    databricks_body,
    jobmanager_body,
    lagrello_body,
    tapis_body,
    tapis_headers,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e


@dataclass
class Caller:
    name: str
    token: str | None  # None: no credential at all
    tenant: str
    subject: str
    account_type: str = "user"


@dataclass
class World:
    stack: Stack
    callers: dict[str, Caller]
    victim: Caller  # a user of dev with Lagrello ADMIN, whose things others go after
    victim_dapi: str


def tapis_create(
    stack: Stack,
    token: str | None,
    body: dict[str, Any],
    *,
    credentials: tuple[str, str] | None = None,
) -> tuple[int, Any]:
    headers = {**tapis_headers(token), **(basic(*credentials) if credentials else {})}
    return http_json("POST", f"{stack.gateway}/v3/tokens", body=body, headers=headers)


def tapis_pair(stack: Stack, token: str, tenant: str, user: str) -> dict[str, Any]:
    status, body = tapis_create(stack, token, tapis_body(tenant, user, refresh=True))
    assert status == 200, body
    return body["result"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(stack: Stack) -> World:
    g = stack.gateway
    other = unique("other")
    ensure_tenant(stack, other)
    names = {
        "user": (),
        "admin": ("admin",),
        "create_any": ("tokens:create-any",),
        "rotate": ("keys:rotate",),
        "lagrello_admin": ("ADMIN",),
    }
    callers = {
        # Lagrello's ADMIN belongs on the credential Lagrello uses (the generic opaque one).
        name: Caller(
            name, mint(stack, subject, permissions=perms, dialect="opaque"), "dev", subject
        )
        for name, perms in names.items()
        for subject in [unique(name.replace("_", "-"))]
    }
    callers["none"] = Caller("none", None, "dev", "")
    other_admin = unique("oadmin")
    callers["other_admin"] = Caller(
        "other_admin",
        mint(stack, other_admin, tenant=other, permissions=("admin",)),
        other,
        other_admin,
    )
    service = unique("svc")
    status, body = tapis_create(
        stack,
        callers["admin"].token,
        tapis_body("dev", service, account_type="service", target_site_id="tacc"),
    )
    assert status == 200, body
    callers["service"] = Caller(
        "service", body["result"]["access_token"]["access_token"], "dev", service, "service"
    )
    # A jobmanager identity named like the admin user: it must never act as that user.
    status, made = http_json(
        "POST",
        f"{g}/v1/api_access_token",
        body=jobmanager_body(callers["admin"].subject),
        headers=JSON,
    )
    assert status == 200, made
    callers["jobmanager"] = Caller("jobmanager", made["token"], "dev", callers["admin"].subject)
    refresh_owner = callers["user"]
    assert refresh_owner.token is not None
    pair = tapis_pair(stack, refresh_owner.token, "dev", refresh_owner.subject)
    callers["refresh"] = Caller(
        "refresh", pair["refresh_token"]["refresh_token"], "dev", refresh_owner.subject
    )
    victim = unique("victim")
    victim_caller = Caller(
        "victim", mint(stack, victim, permissions=("ADMIN",), dialect="opaque"), "dev", victim
    )
    victim_dapi = mint(stack, victim)
    return World(stack, callers, victim_caller, victim_dapi)


def lagrello_token(world: World, owner: Caller) -> dict[str, Any]:
    status, made = http_json(
        "POST",
        f"{world.stack.gateway}/v1/tokens",
        body=lagrello_body(),
        headers={**JSON, **bearer(owner.token)},
    )
    assert status == 200, made
    return made  # type: ignore[no-any-return]


def works(world: World, token: str) -> bool:
    status, _ = http_json("GET", f"{world.stack.gateway}/v1/tokens", headers=bearer(token))
    return status == 200


def snapshot(world: World) -> dict[str, Any]:
    """What a refused call must leave as it was: the victim's and the admin's Databricks
    tokens, the newest Lagrello tokens of dev, and dev's published keys."""
    g = world.stack.gateway
    lists = {}
    for name, token in (("victim", world.victim_dapi), ("admin", world.callers["admin"].token)):
        status, body = http_json("GET", f"{g}/api/2.0/token/list", headers=bearer(token))
        assert status == 200, body
        lists[name] = sorted(t["token_id"] for t in body["token_infos"])
    status, page = http_json("GET", f"{g}/v1/tokens?size=20", headers=bearer(world.victim.token))
    assert status == 200, page
    status, jwks = http_json("GET", f"{g}/v3/tenants/dev/.well-known/jwks.json")
    assert status == 200
    return {
        "lists": lists,
        "lagrello": [t["tokenKey"] for t in page["data"]],
        "kids": sorted(k["kid"] for k in jwks["keys"]),
    }


# --- the operations, each returning whether it was allowed -----------------------------------


def op_databricks_create(world: World, c: Caller) -> bool:
    status, body = http_json(
        "POST",
        f"{world.stack.gateway}/api/2.0/token/create",
        body=databricks_body("authz", lifetime_seconds=600),
        headers={**JSON, **bearer(c.token)},
    )
    if status == 200:
        return True
    assert (status, body["error_code"]) in ((401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED"))
    return False


def op_databricks_list(world: World, c: Caller) -> bool:
    status, body = http_json(
        "GET", f"{world.stack.gateway}/api/2.0/token/list", headers=bearer(c.token)
    )
    if status == 200:
        return True
    assert (status, body["error_code"]) in ((401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED"))
    return False


def op_databricks_delete_victims(world: World, c: Caller) -> bool:
    g = world.stack.gateway
    _, listed = http_json("GET", f"{g}/api/2.0/token/list", headers=bearer(world.victim_dapi))
    token_id = listed["token_infos"][0]["token_id"]
    status, body = http_json(
        "POST",
        f"{g}/api/2.0/token/delete",
        body={"token_id": token_id},
        headers={**JSON, **bearer(c.token)},
    )
    if status == 200:
        return True
    assert status in (401, 403, 404) and "error_code" in body
    return False


def op_lagrello_create(world: World, c: Caller) -> bool:
    status, body = http_json(
        "POST",
        f"{world.stack.gateway}/v1/tokens",
        body=lagrello_body("authz", permissions=["READ"]),
        headers={**JSON, **bearer(c.token)},
    )
    if status == 200:
        return True
    assert (status, body["errorType"]) == (403, "Forbidden")
    return False


def op_lagrello_list(world: World, c: Caller) -> bool:
    status, body = http_json("GET", f"{world.stack.gateway}/v1/tokens", headers=bearer(c.token))
    if status == 200:
        return True
    assert (status, body["errorType"]) == (403, "Forbidden")
    return False


def victims_token(world: World) -> str:
    return str(lagrello_token(world, world.victim)["tokenKey"])


def op_lagrello_delete_victims(world: World, c: Caller, key: str) -> bool:
    status, _ = http_json(
        "DELETE", f"{world.stack.gateway}/v1/tokens/{key}", headers=bearer(c.token)
    )
    if status == 204:
        assert not works(world, key)
        return True
    assert status in (403, 404)
    assert works(world, key)
    return False


def op_tapis_create_self(world: World, c: Caller) -> bool:
    body = tapis_body(
        c.tenant, c.subject or "nobody", account_type=c.account_type, target_site_id="tacc"
    )
    status, reply = tapis_create(world.stack, c.token, body)
    if status == 200:
        return True
    assert (status, reply["status"], reply["result"]) == (400, "error", None)
    return False


def op_tapis_create_for_victim(world: World, c: Caller) -> bool:
    body = tapis_body("dev", world.victim.subject)
    status, reply = tapis_create(world.stack, c.token, body)
    if status == 200:
        return True
    assert (status, reply["status"]) == (400, "error")
    return False


def op_tapis_update_keys(world: World, c: Caller) -> bool:
    status, reply = http_json(
        "PUT",
        f"{world.stack.gateway}/v3/tokens/keys",
        body={"tenant_id": "dev"},
        headers=tapis_headers(c.token),
    )
    if status == 200:
        return True
    assert (status, reply["status"]) == (400, "error")
    return False


def _form(world: World, path: str, c: Caller, token: str) -> tuple[int, Any]:
    return http_json(
        "POST",
        f"{world.stack.gateway}{path}",
        raw=f"token={token}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", **bearer(c.token)},
    )


def op_introspect(world: World, c: Caller) -> bool:
    status, body = _form(world, "/oauth2/introspect", c, world.victim_dapi)
    if status == 200:
        return True
    assert status in (401, 403) and "error" in body
    return False


def op_oauth_revoke_victims(world: World, c: Caller, key: str) -> bool:
    status, _ = _form(world, "/oauth2/revoke", c, key)
    if status == 200 and not works(world, key):
        return True
    assert status in (200, 401, 403)
    assert works(world, key)
    return False


def op_revocation_feed(world: World, c: Caller) -> bool:
    status, body = http_json(
        "GET", f"{world.stack.gateway}/v1/revocations?since=0&limit=1", headers=bearer(c.token)
    )
    if status == 200:
        return True
    assert status in (401, 403) and "error" in body
    return False


PEOPLE = {"user", "admin", "create_any", "rotate", "lagrello_admin", "service", "other_admin"}
GENERATORS = {"admin", "create_any", "lagrello_admin"}
ALL = PEOPLE | {"none", "jobmanager", "refresh"}
# operation: who may perform it. Everyone else is refused, in the dialect's shape.
Operation = Callable[..., bool]
TABLE: dict[str, tuple[Operation, set[str]]] = {
    "databricks.create": (op_databricks_create, PEOPLE),
    "databricks.list": (op_databricks_list, PEOPLE),
    "databricks.delete another's": (op_databricks_delete_victims, set()),
    "lagrello.create": (op_lagrello_create, GENERATORS | {"other_admin"}),
    "lagrello.list": (op_lagrello_list, PEOPLE),
    "lagrello.delete another's": (op_lagrello_delete_victims, GENERATORS),
    "tapis.create for oneself": (op_tapis_create_self, PEOPLE),
    "tapis.create for another": (op_tapis_create_for_victim, GENERATORS),
    "tapis.update_keys": (op_tapis_update_keys, {"admin", "rotate"}),
    "oauth.introspect": (op_introspect, PEOPLE | {"jobmanager"}),
    "oauth.revoke another's": (op_oauth_revoke_victims, GENERATORS),
    "revocations.feed": (op_revocation_feed, PEOPLE | {"jobmanager"}),
}
MUTATING = {"databricks.create", "lagrello.create", "tapis.update_keys"}
# Operations on a token of the victim's made for the case, before the snapshot.
PREPARE = {"lagrello.delete another's": victims_token, "oauth.revoke another's": victims_token}


def cases() -> Iterator[Any]:
    for operation in TABLE:
        for caller in sorted(ALL):
            yield pytest.param(operation, caller, id=f"{operation}-{caller}")


@pytest.mark.parametrize(("operation", "caller"), list(cases()))
def test_authorization_table(world: World, operation: str, caller: str) -> None:
    run, allowed = TABLE[operation]
    args = [PREPARE[operation](world)] if operation in PREPARE else []
    before = snapshot(world) if caller not in allowed else None
    outcome = run(world, world.callers[caller], *args)
    assert outcome == (caller in allowed), f"{caller} {'was' if outcome else 'was not'} allowed"
    if before is not None:
        assert snapshot(world) == before, "a refused call changed something"
    elif operation in MUTATING:
        assert outcome


# --- the escalations that once worked ---------------------------------------------------------


@pytest.mark.parametrize(
    "claims",
    [
        {"tessera/permissions": ["admin"]},
        {"tessera/permissions": ["keys:rotate"]},
        {"Tessera/Permissions": ["admin"]},
        {"tessera/anything": 1},
        {"tapis/account_type": "service"},
        {"tapis/tenant_id": "other"},
        {"tapis/delegation": True},
        {"tapis/anything": "x"},
        {"aud": "x"},
        {"nbf": 0},
        {"iat": 0},
        {"sub": "admin@dev"},
        {"username": "admin"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_extra_claims_never_set_a_right(world: World, claims: dict[str, Any]) -> None:
    for name in ("user", "service"):
        c = world.callers[name]
        body = tapis_body(
            "dev", c.subject, account_type=c.account_type, target_site_id="tacc", claims=claims
        )
        status, reply = tapis_create(world.stack, c.token, body)
        assert (status, reply["status"]) == (400, "error"), reply
        assert next(iter(claims)) in reply["message"]


def test_a_self_granted_admin_claim_gives_no_admin(world: World) -> None:
    """The reproduction of the issue: the claim was accepted and made an admin."""
    c = world.callers["user"]
    body = tapis_body("dev", c.subject, claims={"tessera/permissions": ["admin"], "team": "blue"})
    status, _ = tapis_create(world.stack, c.token, body)
    assert status == 400
    del body["claims"]["tessera/permissions"]  # type: ignore[attr-defined]
    status, reply = tapis_create(world.stack, c.token, body)
    assert status == 200, reply
    token = reply["result"]["access_token"]["access_token"]
    assert not op_tapis_update_keys(world, Caller("x", token, "dev", c.subject))
    assert not op_lagrello_create(world, Caller("x", token, "dev", c.subject))


def test_a_jobmanager_identity_is_never_the_user_of_that_name(world: World) -> None:
    g = world.stack.gateway
    jm, admin = world.callers["jobmanager"], world.callers["admin"]
    assert jm.subject == admin.subject
    # It cannot see, delete or mint the user's tokens, nor revoke the user's credential.
    status, _ = http_json("GET", f"{g}/api/2.0/token/list", headers=bearer(jm.token))
    assert status == 403
    _, mine = http_json("GET", f"{g}/api/2.0/token/list", headers=bearer(admin.token))
    for info in mine["token_infos"]:
        status, _ = http_json(
            "POST",
            f"{g}/api/2.0/token/delete",
            body={"token_id": info["token_id"]},
            headers={**JSON, **bearer(jm.token)},
        )
        assert status == 403
    assert admin.token is not None
    status, _ = _form(world, "/oauth2/revoke", jm, admin.token)
    assert status == 200 and works(world, admin.token)
    status, reply = tapis_create(
        world.stack,
        jm.token,
        tapis_body("dev", admin.subject),
    )
    assert status == 400 and reply["result"] is None
    # It does authenticate as itself.
    status, body = _form(world, "/oauth2/introspect", jm, str(jm.token))
    assert status == 200 and body["active"] and body["principal_kind"] == "jobmanager"


def test_a_refresh_token_is_never_a_credential(world: World) -> None:
    g = world.stack.gateway
    refresh = world.callers["refresh"]
    assert refresh.token is not None
    status, body = http_json("GET", f"{g}/api/2.0/token/list", headers=bearer(refresh.token))
    assert (status, body["error_code"]) == (401, "UNAUTHENTICATED")
    assert "refresh token" in body["message"]
    status, body = http_json("GET", f"{g}/v1/tokens", headers=bearer(refresh.token))
    assert (status, body["errorType"]) == (403, "Forbidden")
    status, body = tapis_create(
        world.stack,
        None,
        tapis_body("dev", refresh.subject),
        credentials=(refresh.subject, refresh.token),
    )
    assert (status, body["status"]) == (400, "error")
    # Introspection says what it is without making it usable.
    status, body = _form(world, "/oauth2/introspect", world.callers["user"], refresh.token)
    assert status == 200 and body == {"active": False, "token_type": "refresh_token"}


def test_an_access_token_minted_by_refresh_dies_with_its_family(world: World) -> None:
    g = world.stack.gateway
    user = world.callers["user"]
    assert user.token is not None
    pair = tapis_pair(world.stack, user.token, "dev", user.subject)
    refresh = pair["refresh_token"]["refresh_token"]

    def exchange(token: str) -> tuple[int, Any]:
        return http_json("PUT", f"{g}/v3/tokens", body={"refresh_token": token}, headers=JSON)

    status, fresh = exchange(refresh)
    assert status == 200
    access = fresh["result"]["access_token"]["access_token"]
    assert op_databricks_list(world, Caller("x", access, "dev", user.subject))
    # Replays past the grace retries are reuse: the family, this access token included, dies.
    statuses = [exchange(refresh)[0] for _ in range(6)]
    assert statuses[-1] == 400
    wait_until(
        lambda: not op_databricks_list(world, Caller("x", access, "dev", user.subject)),
        timeout=15,
        what="the family's access token refused",
    )


def audit_actors(world: World, request_id: str) -> set[str]:
    trail = world.stack.cli("audit", "--tenant", "dev").stdout.splitlines()
    entries = [json.loads(line) for line in trail if request_id in line]
    assert entries, "the request left no audit entry"
    return {e["actor"] for e in entries}


def test_a_public_client_cannot_name_the_audit_actor(world: World) -> None:
    g = world.stack.gateway
    forged = {**JSON, "X-Tessera-Actor": "operator"}
    # An unauthenticated call: the jobmanager API, from this (internal) address.
    request_id = unique("forged")
    status, _ = http_json(
        "POST",
        f"{g}/v1/api_access_token",
        body=jobmanager_body(unique("ci")),
        headers={**forged, "X-Request-ID": request_id},
    )
    assert status == 200
    assert audit_actors(world, request_id) == {"anonymous@127.0.0.1"}
    # A call whose right is possession of a token: its holder is the actor.
    user = world.callers["user"]
    assert user.token is not None
    access = tapis_pair(world.stack, user.token, "dev", user.subject)["access_token"]
    request_id = unique("forged")
    status, _ = http_json(
        "POST",
        f"{g}/v3/tokens/revoke",
        body={"token": access["access_token"]},
        headers={**forged, "X-Request-ID": request_id},
    )
    assert status == 200
    assert audit_actors(world, request_id) == {f"{user.subject}@dev"}
    # An authenticated call: the principal.
    request_id = unique("forged")
    status, _ = http_json(
        "POST",
        f"{g}/api/2.0/token/create",
        body=databricks_body("forged actor"),
        headers={**forged, **bearer(user.token), "X-Request-ID": request_id},
    )
    assert status == 200
    assert audit_actors(world, request_id) == {f"{user.subject}@dev"}


def test_introspection_takes_client_basic_auth_and_challenges_without_it(world: World) -> None:
    g, user = world.stack.gateway, world.callers["user"]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, _ = http("POST", f"{g}/oauth2/introspect", raw=b"token=x", headers=form)
    assert status == 401 and "Bearer" in headers["WWW-Authenticate"]
    assert user.token is not None
    status, body = http_json(
        "POST",
        f"{g}/oauth2/introspect",
        raw=f"token={world.victim_dapi}".encode(),
        headers={**form, **basic(user.subject, user.token)},
    )
    assert status == 200 and body["active"] and body["sub"] == world.victim.subject
    status, headers, _ = http(
        "POST",
        f"{g}/oauth2/introspect",
        raw=b"token=x",
        headers={**form, **basic("someone-else", user.token)},
    )
    assert status == 401 and "WWW-Authenticate" in headers
