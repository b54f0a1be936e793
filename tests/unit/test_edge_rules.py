"""The edge's pure rules: JSON depth, identifier grammar, forwarded hops, bounded maps, and the
per-tenant rotation limits (issue 14)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from services.gateway.edge import AddressGuard, client_address, forwarded_hops
from services.keys.domain import RotationLimits, check_rotation
from services.keys.errors import RotationLimited, TooManyKeys
from shared.cache import TtlCache
from shared.errors import RateLimited
from shared.ids import InvalidIdentifier, is_tenant_id, tenant_url
from shared.jsonbody import MAX_JSON_DEPTH, MalformedJson, json_depth, parse_json
from shared.settings import get_networks

TRUSTED = get_networks({"P": "127.0.0.0/8"}, "P", "")


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_json_at_the_depth_limit_parses_and_one_deeper_is_refused() -> None:
    assert parse_json(nested(MAX_JSON_DEPTH)) is not None
    with pytest.raises(MalformedJson):
        parse_json(nested(MAX_JSON_DEPTH + 1))


def test_thirty_thousand_brackets_are_refused_without_recursion() -> None:
    with pytest.raises(MalformedJson):
        parse_json(b"[" * 30_000)
    with pytest.raises(MalformedJson):
        parse_json(b'{"claims":' * 900 + b"1" + b"}" * 900)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    body = json.dumps({"comment": "[" * 500 + '\\"{' * 100}).encode()
    assert json_depth(body) == 1
    assert parse_json(body)["comment"].startswith("[[[")


def test_tenant_grammar_refuses_paths_queries_and_a_trailing_newline() -> None:
    assert is_tenant_id("dev") and is_tenant_id("a-1")
    for bad in ("../../internal/tenants?", "dev/keys?", "dev\n", "Dev", "", "-x", "a" * 64, 5):
        assert not is_tenant_id(bad), bad
        with pytest.raises(InvalidIdentifier):
            tenant_url("http://keys", bad)  # type: ignore[arg-type]
    assert tenant_url("http://keys", "dev", "jwks") == "http://keys/internal/tenants/dev/jwks"
    with pytest.raises(InvalidIdentifier):
        tenant_url("http://keys", "dev", "..")


def request_with(peer: str, headers: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    return make_mocked_request("GET", "/", headers=CIMultiDict(headers), transport=_Transport(peer))


class _Transport:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self.peer, 1234) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


def test_a_second_forwarded_for_line_is_read_and_its_hop_counts() -> None:
    # The client's own header says 10.x; the proxy (HAProxy) adds a line with the real peer.
    request = request_with(
        "127.0.0.1", [("X-Forwarded-For", "10.0.0.5"), ("X-Forwarded-For", "198.51.100.7")]
    )
    assert forwarded_hops(request) == ["10.0.0.5", "198.51.100.7"]
    assert str(client_address(request, TRUSTED)) == "198.51.100.7"


def test_forwarded_header_lines_are_read_like_x_forwarded_for() -> None:
    request = request_with(
        "127.0.0.1",
        [("Forwarded", 'for="[2001:db8::1]:4711";proto=https'), ("Forwarded", "for=203.0.113.9")],
    )
    assert forwarded_hops(request) == ["2001:db8::1", "203.0.113.9"]
    assert str(client_address(request, TRUSTED)) == "203.0.113.9"


def test_contradicting_forwarding_headers_give_no_address() -> None:
    request = request_with(
        "127.0.0.1", [("Forwarded", "for=10.0.0.5"), ("X-Forwarded-For", "198.51.100.7")]
    )
    assert client_address(request, TRUSTED) is None


def test_an_untrusted_peers_forwarding_headers_are_ignored() -> None:
    request = request_with("198.51.100.7", [("X-Forwarded-For", "10.0.0.5")])
    assert str(client_address(request, TRUSTED)) == "198.51.100.7"


def test_the_address_guard_refuses_after_the_burst_of_failures_only_that_address() -> None:
    guard = AddressGuard(rate=0.001, burst=3)
    for _ in range(3):
        guard.admit("198.51.100.7")
        guard.charge("198.51.100.7")
    with pytest.raises(RateLimited) as refused:
        guard.admit("198.51.100.7")
    assert refused.value.details["retry_after"] >= 1
    guard.admit("198.51.100.8")


async def test_an_unknown_key_is_remembered_negatively_and_the_cache_stays_bounded() -> None:
    calls: list[str] = []

    async def unknown() -> None:
        calls.append("x")
        await asyncio.sleep(0)
        return None

    cache: TtlCache[str, str] = TtlCache(ttl=60, max_entries=3, negative_ttl=60)
    assert await cache.get("nope", unknown) is None
    assert await cache.get("nope", unknown) is None
    assert calls == ["x"]
    for n in range(10):
        await cache.get(f"t{n}", unknown)
    assert len(cache._entries) <= 3


def key(state: str, created: datetime, retired: datetime | None = None, max_exp=None):  # type: ignore[no-untyped-def]
    return {"state": state, "created_at": created, "retired_at": retired, "max_exp": max_exp}


def test_rotations_past_the_hourly_limit_are_refused_with_a_retry_time() -> None:
    now = datetime.now(UTC)
    keys = [key("active", now - timedelta(minutes=m)) for m in (50, 40, 30)]
    check_rotation(keys, now, RotationLimits(per_hour=4, max_published=0))
    with pytest.raises(RotationLimited) as refused:
        check_rotation(keys, now, RotationLimits(per_hour=3, max_published=0))
    assert 600 <= refused.value.details["retry_after"] <= 660  # the 50-minute-old key ages out


def test_a_rotation_that_would_publish_too_many_keys_is_refused() -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=2)
    live = now + timedelta(days=1)
    keys = [
        key("active", old),
        key("retired", old, old, live),  # still verifying tokens it signed
        key("retired", old, old, None),  # never signed: no longer published
        key("revoked", old),
    ]
    check_rotation(keys, now, RotationLimits(per_hour=0, max_published=3))
    with pytest.raises(TooManyKeys):
        check_rotation(keys, now, RotationLimits(per_hour=0, max_published=2))
