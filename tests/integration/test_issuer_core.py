"""The issuer against real keys and revocation services, PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable

import asyncpg
import jwt
import pytest

from services.issuer.service import MAX_GRACE_RETRIES
from tests.factories import jwt_body, minter, token_body
from tests.harness import Services, running_stack
from tests.integration.test_keys_security import dump_database
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


async def create(s: Services, tenant: str, subject: str, **fields: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    return await s.call(
        "POST", "issuer", "/internal/tokens", json=token_body(tenant, subject, **fields)
    )  # type: ignore[arg-type]


def issue_pair(s: Services, tenant: str, username: str) -> Awaitable[tuple[int, dict]]:  # type: ignore[type-arg]
    """The call minting a user's Tapis access and refresh pair, as the operator."""
    return s.call("POST", "issuer", "/internal/jwt", json=jwt_body(tenant, username, refresh=True))


async def _pair(s: Services, tenant: str, username: str) -> dict:  # type: ignore[type-arg]
    status, pair = await issue_pair(s, tenant, username)
    assert status == 200, pair
    return pair


async def _refresh(s: Services, token: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    return await s.call("POST", "issuer", "/internal/jwt/refresh", json={"refresh_token": token})


async def _refused(s: Services, *values: str, what: str) -> None:
    """Wait until the issuer refuses every one of ``values`` (expired or revoked)."""

    async def all_refused() -> bool:
        return not any([await s.authenticates(value) for value in values])

    await wait_for(all_refused, what=what)


async def test_no_token_value_is_stored_in_any_form_but_its_keyed_hash(
    tessera_env: dict[str, str],
) -> None:
    async with running_stack(tessera_env) as s:
        tenant = await s.tenant()
        values = []
        for kind in ("opaque", "databricks", "jobmanager"):
            status, body = await create(s, tenant, "ann", kind=kind, name="n")
            assert status == 200
            values.append(body["value"])
        pair = await _pair(s, tenant, "ann")
        refresh = pair["refresh_token"]["refresh_token"]
        values += [pair["access_token"]["access_token"], refresh]
        status, renewed = await _refresh(s, refresh)
        assert status == 200
        values += [
            renewed["access_token"]["access_token"],
            renewed["refresh_token"]["refresh_token"],
        ]
        dump = await dump_database(s.database_url("issuer"))
    assert len(dump) > 1000  # the dump really holds the records
    for value in values:
        fragments = [value] + (value.split(".") if "." in value else [value[4:]])
        for fragment in fragments:
            if len(fragment) >= 16:  # JWT headers repeat across tokens; skip short parts
                assert fragment.encode() not in dump, "a token value is stored in clear"


async def test_concurrent_creates_at_quota_minus_one_make_exactly_one(
    tessera_env: dict[str, str],
) -> None:
    async with running_stack(tessera_env) as s:
        tenant = await s.tenant(quota=5)
        for _ in range(4):
            assert (await create(s, tenant, "bo"))[0] == 200
        results = await asyncio.gather(*(create(s, tenant, "bo") for _ in range(50)))
        statuses = sorted(status for status, _ in results)
        assert statuses.count(200) == 1, statuses
        assert statuses.count(409) == 49
        assert {b["error"] for st, b in results if st == 409} == {"quota_exceeded"}
        _, listing = await s.call(
            "GET", "issuer", f"/internal/tokens?tenant={tenant}&subject=bo&limit=100"
        )
        assert len(listing["tokens"]) == 5


async def test_a_jobmanager_identity_and_the_user_of_that_name_have_separate_quotas(
    tessera_env: dict[str, str],
) -> None:
    async with running_stack(tessera_env) as s:
        tenant = await s.tenant(quota=2)
        for _ in range(2):
            assert (await create(s, tenant, "ann", kind="jobmanager"))[0] == 200
        # The identity "ann" is at its quota; the user "ann" is not touched by it.
        status, body = await create(s, tenant, "ann", kind="jobmanager")
        assert (status, body["error"]) == (409, "quota_exceeded")
        for kind in ("databricks", "opaque"):
            assert (await create(s, tenant, "ann", kind=kind))[0] == 200
        status, body = await create(s, tenant, "ann", kind="databricks")
        assert (status, body["error"]) == (409, "quota_exceeded")


async def test_expired_tokens_give_their_quota_back(tessera_env: dict[str, str]) -> None:
    """The quota check keeps an upper bound of each owner's active tokens; when it is reached
    the tokens are counted, so expired (or revoked) ones make room again."""
    async with running_stack(tessera_env) as s:
        tenant = await s.tenant(quota=3)
        short = []
        for _ in range(3):
            status, body = await create(s, tenant, "eve", ttl_seconds=1)
            assert status == 200
            short.append(body["value"])
        status, body = await create(s, tenant, "eve")
        assert (status, body["error"]) == (409, "quota_exceeded")
        await _refused(s, *short, what="the 1 s tokens expiring")
        results = await asyncio.gather(*(create(s, tenant, "eve") for _ in range(5)))
        assert sorted(status for status, _ in results) == [200, 200, 200, 409, 409]
        conn = await asyncpg.connect(s.database_url("issuer"))
        usage = await conn.fetchval(
            "SELECT issued FROM owner_usage WHERE tenant = $1 AND subject = 'eve'", tenant
        )
        await conn.close()
        assert usage == 3


async def test_concurrent_creates_share_commits_but_each_gets_its_own_answer(
    tessera_env: dict[str, str],
) -> None:
    """Creates are group-committed and signatures coalesced: under load every caller must still
    get its own token, each owner's quota must hold, and each event its own request id."""
    async with running_stack(tessera_env) as s:
        tenant = await s.tenant(quota=3)
        owners = [f"u{n}" for n in range(12)]
        opaque = [
            s.call(
                "POST",
                "issuer",
                "/internal/tokens",
                json=token_body(tenant, owner, name=f"{owner}-{i}"),
                headers={"X-Request-ID": f"req-{owner}-{i}"},
            )
            for owner in owners
            for i in range(5)
        ]
        jwts = [issue_pair(s, tenant, owner) for owner in owners]
        results = await asyncio.gather(*opaque, *jwts)
        made, pairs = results[: len(opaque)], results[len(opaque) :]
        callers = [owner for owner in owners for _ in range(5)]
        for owner in owners:
            mine = [b for st, b in made if st == 200 and b["token"]["subject"] == owner]
            refused = [
                (st, b)
                for (st, b), call_owner in zip(made, callers, strict=True)
                if call_owner == owner and st != 200
            ]
            assert len(mine) == 3 and len(refused) == 2, (owner, refused)
            assert {st for st, _ in refused} == {409}
            assert all(b["token"]["name"].startswith(f"{owner}-") for b in mine)
        for owner, (status, pair) in zip(owners, pairs, strict=True):
            assert status == 200, pair
            for kind in ("access_token", "refresh_token"):
                claims = jwt.decode(
                    pair[kind][kind], options={"verify_signature": False}, algorithms=["RS256"]
                )
                assert claims["sub"] == f"{owner}@{tenant}"
                assert claims["tapis/token_type"] == kind.removesuffix("_token")
        conn = await asyncpg.connect(s.database_url("issuer"))
        audit = await conn.fetch(
            """SELECT request_id, data->>'subject' AS subject FROM audit_log
               WHERE action = 'token.issued' AND data->>'kind' = 'opaque'"""
        )
        await conn.close()
        assert len(audit) == 3 * len(owners)
        assert all(row["request_id"].startswith(f"req-{row['subject']}-") for row in audit)


async def _family_in_feed(s: Services, family: set[str]) -> None:
    """Poll the revocation feed until every token of the family is in it."""

    async def published() -> bool:
        _, feed = await s.call("GET", "revocation", "/internal/revocations?since=0")
        return family <= {r["token_id"] for r in feed["revocations"]}

    await wait_for(published, timeout=15, what="the family in the revocation feed")


async def _family_of(s: Services, username: str) -> list:  # type: ignore[type-arg]
    conn = await asyncpg.connect(s.database_url("issuer"))
    try:
        return await conn.fetch(  # type: ignore[no-any-return]
            "SELECT id, revoked_at FROM tokens WHERE family_id IS NOT NULL AND subject = $1",
            username,
        )
    finally:
        await conn.close()


async def test_refresh_races_get_one_pair_a_bounded_number_of_times_then_kill_the_family(
    tessera_env: dict[str, str],
) -> None:
    async with running_stack(tessera_env, TESSERA_REFRESH_GRACE_SECONDS="60") as s:
        tenant = await s.tenant()
        refresh = (await _pair(s, tenant, "cy"))["refresh_token"]["refresh_token"]
        results = await asyncio.gather(*(_refresh(s, refresh) for _ in range(20)))
        statuses = [status for status, _ in results]
        # The first use and MAX_GRACE_RETRIES retries get the pair; the next is reuse.
        assert statuses.count(200) == 1 + MAX_GRACE_RETRIES, statuses
        assert set(statuses) == {200, 401}
        pairs = {
            (b["access_token"]["access_token"], b["refresh_token"]["refresh_token"])
            for status, b in results
            if status == 200
        }
        assert len(pairs) == 1  # every retry inside the window got the very same pair
        ((_, new_refresh),) = pairs
        assert (await _refresh(s, new_refresh))[0] == 401
        family = await _family_of(s, "cy")
        assert family and all(row["revoked_at"] is not None for row in family)
        # The revocation service published every member for every subscriber.
        await _family_in_feed(s, {str(r["id"]) for r in family})


async def test_reuse_after_the_window_revokes_the_family(tessera_env: dict[str, str]) -> None:
    async with running_stack(tessera_env, TESSERA_REFRESH_GRACE_SECONDS="0") as s:
        tenant = await s.tenant()
        refresh = (await _pair(s, tenant, "cyd"))["refresh_token"]["refresh_token"]
        status, pair = await _refresh(s, refresh)
        assert status == 200
        # Presenting the used token again, outside the window, is theft: the family dies.
        assert (await _refresh(s, refresh))[0] == 401
        assert (await _refresh(s, pair["refresh_token"]["refresh_token"]))[0] == 401
        family = await _family_of(s, "cyd")
        assert len(family) == 4 and all(row["revoked_at"] is not None for row in family)
        await _family_in_feed(s, {str(r["id"]) for r in family})


async def test_a_rotated_pair_is_issued_like_a_new_one_with_the_refresh_call_as_its_cause(
    tessera_env: dict[str, str],
) -> None:
    async with running_stack(tessera_env) as s:
        tenant = await s.tenant()
        refresh = (await _pair(s, tenant, "rot"))["refresh_token"]["refresh_token"]
        status, _ = await s.call(
            "POST",
            "issuer",
            "/internal/jwt/refresh",
            json={"refresh_token": refresh},
            headers={"X-Request-ID": "req-rotate"},
        )
        assert status == 200
        conn = await asyncpg.connect(s.database_url("issuer"))
        try:
            tokens = await conn.fetch(
                """SELECT id, kind, family_id FROM tokens WHERE subject = 'rot'
                   ORDER BY created_at, kind"""
            )
            issued = await conn.fetch(
                """SELECT request_id, data FROM audit_log WHERE action = 'token.issued'
                   AND data->>'subject' = 'rot' ORDER BY position"""
            )
        finally:
            await conn.close()
    # Two pairs of one family, each token with its token.issued event; the rotated pair's
    # events carry the refresh call's request id and the same fields as the first pair's.
    assert [t["kind"] for t in tokens] == ["jwt_access", "jwt_refresh"] * 2
    assert len({t["family_id"] for t in tokens}) == 1
    data = [json.loads(row["data"]) for row in issued]
    assert [d["token_id"] for d in data] == [str(t["id"]) for t in tokens]
    assert [row["request_id"] for row in issued][2:] == ["req-rotate", "req-rotate"]
    assert data[0].keys() == data[2].keys() and data[2]["family_id"] == data[0]["family_id"]


async def test_authentication_refuses_junk_expired_and_revoked(tessera_env: dict[str, str]) -> None:
    async with running_stack(tessera_env) as s:
        tenant = await s.tenant()
        _, made = await create(s, tenant, "dee", permissions=["admin"])
        value = made["value"]
        status, principal = await s.call(
            "POST", "issuer", "/internal/authenticate", json={"token": value}
        )
        assert (
            status == 200
            and principal["subject"] == "dee"
            and principal["permissions"] == ["admin"]
        )
        flipped = value[:10] + ("A" if value[10] != "A" else "B") + value[11:]
        for junk in (flipped, "tsr_short", "dapi" + "0" * 32, "hello"):
            status, body = await s.call(
                "POST", "issuer", "/internal/authenticate", json={"token": junk}
            )
            assert (status, body["error"]) == (401, "unauthenticated")
        _, short = await create(s, tenant, "dee", ttl_seconds=1)
        await _refused(s, short["value"], what="the 1 s token expiring")
        status, _ = await s.call(
            "POST",
            "revocation",
            "/internal/revocations",
            json={"tenant": tenant, "token_id": made["token"]["id"]},
        )
        assert status == 200
        await _refused(s, value, what="the token.revoked event reaching the issuer")


async def test_marked_revoked_counts_at_once_within_its_own_tenant_only(
    tessera_env: dict[str, str],
) -> None:
    async with running_stack(tessera_env) as s:
        tenant, other = await s.tenant(quota=1), await s.tenant()
        _, mine = await create(s, tenant, "eve")
        _, theirs = await create(s, other, "eve")

        async def mark(*revocations: dict[str, object]) -> tuple[int, dict]:  # type: ignore[type-arg]
            return await s.call(
                "POST", "issuer", "/internal/tokens/revoked", json={"revocations": revocations}
            )

        conn = await asyncpg.connect(s.database_url("issuer"))
        try:
            revoked = "SELECT id::text, revoked_at FROM tokens WHERE revoked_at IS NOT NULL"
            for bad in ({"revocations": "x"}, {"revocations": [{"token_id": "a"}]}):
                status, body = await s.call("POST", "issuer", "/internal/tokens/revoked", json=bad)
                assert (status, body["error"]) == (400, "bad_request")
            assert await conn.fetch(revoked) == []
            at = "2026-01-02T03:04:05+00:00"
            status, body = await mark(
                {"tenant": tenant, "token_id": mine["token"]["id"], "revoked_at": at},
                {"tenant": tenant, "token_id": theirs["token"]["id"], "revoked_at": at},
                {"tenant": tenant, "token_id": "a-jti-we-never-issued"},
            )
            assert (status, body) == (200, {"marked": 1})
            # No event needed: the token is refused, and its quota place is free, at once.
            status, _ = await s.call(
                "POST", "issuer", "/internal/authenticate", json={"token": mine["value"]}
            )
            assert status == 401
            status, _ = await create(s, tenant, "eve")
            assert status == 200
            status, _ = await s.call(
                "POST", "issuer", "/internal/authenticate", json={"token": theirs["value"]}
            )
            assert status == 200
            # Marking again, or with a time PostgreSQL cannot hold, moves nothing.
            for again in (at.replace("2026", "2027"), "0001-01-01T00:00:00+01:00", "junk"):
                status, body = await mark(
                    {"tenant": tenant, "token_id": mine["token"]["id"], "revoked_at": again}
                )
                assert (status, body) == (200, {"marked": 0})
            rows = await conn.fetch(revoked)
            assert [(r["id"], r["revoked_at"].isoformat()) for r in rows] == [
                (mine["token"]["id"], at)
            ]
        finally:
            await conn.close()


async def test_last_used_is_written_at_most_once_a_minute(tessera_env: dict[str, str]) -> None:
    async with running_stack(tessera_env) as s:
        tenant = await s.tenant()
        _, made = await create(s, tenant, "eve")
        conn = await asyncpg.connect(s.database_url("issuer"))
        stamps = []
        for _ in range(3):
            await s.call("POST", "issuer", "/internal/authenticate", json={"token": made["value"]})
            stamps.append(
                await conn.fetchval(
                    "SELECT last_used_at FROM tokens WHERE id = $1::uuid", made["token"]["id"]
                )
            )
        await conn.close()
        assert stamps[0] is not None and stamps[0] == stamps[1] == stamps[2]


async def test_listing_is_newest_first_and_stable_while_tokens_are_created(
    tessera_env: dict[str, str],
) -> None:
    async with running_stack(tessera_env) as s:
        tenant = await s.tenant(quota=1000)
        existing = [
            (await create(s, tenant, "fay", name=str(n)))[1]["token"]["id"] for n in range(25)
        ]
        seen: list[str] = []
        cursor = None
        while True:
            query = f"/internal/tokens?tenant={tenant}&subject=fay&limit=7" + (
                f"&cursor={cursor}" if cursor else ""
            )
            status, page = await s.call("GET", "issuer", query)
            assert status == 200
            seen += [t["id"] for t in page["tokens"]]
            await create(s, tenant, "fay", name="new")  # arrives while we page
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == list(reversed(existing))  # newest first, none skipped, none twice
        _, offset_page = await s.call(
            "GET", "issuer", f"/internal/tokens?tenant={tenant}&subject=fay&limit=5&offset=5"
        )
        assert len(offset_page["tokens"]) == 5


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"subject": "g", "ttl_seconds": 0}, 400, "bad_request"),
        ({"subject": "g", "ttl_seconds": -1}, 400, "bad_request"),
        ({"subject": "g", "ttl_seconds": True}, 400, "bad_request"),
        ({"subject": "g", "ttl_seconds": "10"}, 400, "bad_request"),
        ({"subject": "g", "name": "x" * 256}, 400, "bad_request"),
        ({"subject": "g", "permissions": ["p"] * 17}, 400, "bad_request"),
        ({"subject": "g", "permissions": ["no spaces"]}, 400, "bad_request"),
        ({"subject": "g", "kind": "jwt_access"}, 400, "bad_request"),
        ({}, 400, "bad_request"),
        ({"subject": "g", "tenant": "nowhere"}, 404, "unknown_tenant"),
    ],
)
async def test_bad_input_is_a_clear_4xx_and_writes_nothing(
    tessera_env: dict[str, str],
    body: dict,
    status: int,
    code: str,  # type: ignore[type-arg]
) -> None:
    async with running_stack(tessera_env) as s:
        tenant = await s.tenant()
        conn = await asyncpg.connect(s.database_url("issuer"))
        before = await conn.fetchval(
            "SELECT (SELECT count(*) FROM tokens) + (SELECT count(*) FROM audit_log)"
        )
        got, answer = await s.call(
            "POST",
            "issuer",
            "/internal/tokens",
            json={"tenant": tenant, "minter": minter(), **body},
        )
        assert (got, answer["error"]) == (status, code)
        for raw in (b"{nope", b"[1]", b'"x"'):
            got, answer = await s.call("POST", "issuer", "/internal/tokens", data=raw)
            assert got == 400 and answer["error"] == "bad_request"
        got, answer = await s.call(
            "POST",
            "issuer",
            "/internal/jwt",
            json=jwt_body(tenant, "g", claims={"tapis/sub": "x"}),
        )
        assert got == 400
        after = await conn.fetchval(
            "SELECT (SELECT count(*) FROM tokens) + (SELECT count(*) FROM audit_log)"
        )
        await conn.close()
        assert after == before


async def test_owner_lists_answer_each_query_with_its_own_owners_active_tokens(
    tessera_env: dict[str, str],
) -> None:
    async with running_stack(tessera_env) as s:
        tenant, other = await s.tenant(), await s.tenant()
        made: dict[tuple[str, str], list[str]] = {}
        for t, subject, count in ((tenant, "ann", 3), (tenant, "bob", 1), (other, "ann", 2)):
            for i in range(count):
                _, body = await create(s, t, subject, kind="databricks", name=f"{subject}{i}")
                made.setdefault((t, subject), []).insert(0, body["token"]["id"])
        await create(s, tenant, "ann", kind="opaque")  # another kind: not listed
        expired = await create(s, tenant, "bob", kind="databricks", ttl_seconds=1)
        await _refused(s, expired[1]["value"], what="the 1 s token expiring")  # nor an expired one
        queries = [
            {"tenant": tenant, "subject": "ann", "kinds": ["databricks"], "limit": 10},
            {"tenant": other, "subject": "ann", "kinds": ["databricks"], "limit": 10},
            {"tenant": tenant, "subject": "nobody", "kinds": ["databricks"]},
            {"tenant": tenant, "subject": "bob", "kinds": ["databricks"], "limit": 10},
            {"tenant": tenant, "subject": "ann", "kinds": ["databricks"], "limit": 2},
        ]
        status, body = await s.call(
            "POST", "issuer", "/internal/tokens/lists", json={"lists": queries}
        )
        assert status == 200, body
        ids = [[t["id"] for t in result["tokens"]] for result in body["results"]]
        assert ids == [
            made[(tenant, "ann")],
            made[(other, "ann")],
            [],
            made[(tenant, "bob")],
            made[(tenant, "ann")][:2],
        ]
        assert expired[1]["token"]["id"] not in ids[3]
        status, slim = await s.call(
            "POST",
            "issuer",
            "/internal/tokens/lists",
            json={"lists": queries[:1], "fields": ["id", "name", "expires_at"]},
        )
        assert status == 200, slim
        full = body["results"][0]["tokens"]
        assert slim["results"][0]["tokens"] == [
            {"id": t["id"], "name": t["name"], "expires_at": t["expires_at"]} for t in full
        ]
        for bad in (
            {"lists": []},
            {"lists": [{"tenant": tenant, "subject": "ann", "kinds": ["nope"]}]},
            {"lists": [{"tenant": tenant, "kinds": ["databricks"]}]},
            {"lists": [{"tenant": tenant, "subject": "a", "kinds": ["databricks"], "limit": 0}]},
            {"lists": [{"tenant": tenant, "subject": "a", "kinds": ["databricks"]}] * 101},
            {"lists": queries[:1], "fields": ["secret_hash"]},
            {"lists": queries[:1], "fields": []},
        ):
            status, error = await s.call("POST", "issuer", "/internal/tokens/lists", json=bad)
            assert (status, error["error"]) == (400, "bad_request"), bad
