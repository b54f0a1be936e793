"""The gateway's edge rules that run before anyone is authenticated (issue 14).

- Who the client is: the TCP peer, or behind trusted proxies the right-most forwarded hop
  that is not one of them, read across every ``X-Forwarded-For`` / ``Forwarded`` line.
- What an unauthenticated client may cost: each failed authentication and each unknown tenant
  it names takes a token from its address's bucket; with the bucket empty, its requests that
  need authenticating are refused (429, the dialect's shape) before any backend call.

The address and the guard are bound per request in a context variable (as the request id
is), so the authenticator and the tenant lookups (tenants.py) charge failures without being
handed the request.
"""

from __future__ import annotations

import ipaddress
import math
import re
from contextvars import ContextVar
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from services.gateway.ratelimit import RateLimiter
from shared.errors import RateLimited
from shared.settings import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# RFC 7239 for= value: an address, "[v6]", either with an optional :port, quoted or not.
_FORWARDED_FOR = re.compile(r'(?:^|[;,\s])for\s*=\s*("[^"]*"|[^;,\s]*)', re.IGNORECASE)


def forwarded_hops(request: web.Request) -> list[str] | None:
    """The client addresses proxies recorded, left to right, across every ``X-Forwarded-For``
    line and, separately, every ``Forwarded`` line (RFC 7239 ``for=``). A proxy may add its
    own line instead of appending to the client's (HAProxy does), so all lines count, in
    order. With both headers present they must name the same hops, else None (unknown)."""
    xff = [
        part.strip()
        for line in request.headers.getall("X-Forwarded-For", ())
        for part in line.split(",")
        if part.strip()
    ]
    forwarded = [
        _forwarded_node(match.group(1))
        for line in request.headers.getall("Forwarded", ())
        for match in _FORWARDED_FOR.finditer(line)
    ]
    if xff and forwarded and xff != forwarded:
        return None
    return xff or forwarded


def _forwarded_node(value: str) -> str:
    node = value.strip().strip('"')
    if node.startswith("["):
        return node[1:].partition("]")[0]
    host, sep, port = node.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else node


def client_address(request: web.Request, trusted: tuple[IPNetwork, ...]) -> IPAddress | None:
    """The TCP peer, or, when the peer is a trusted proxy, the right-most forwarded hop that
    is not a trusted proxy (entries further left are client-controlled). None when that hop
    is not an address, or the headers contradict each other."""
    peer = request.remote
    try:
        address = ipaddress.ip_address(peer) if peer else None
    except ValueError:
        return None
    if address is None or not any(address in net for net in trusted):
        return address
    hops = forwarded_hops(request)
    if hops is None:
        return None
    for entry in reversed(hops):
        try:
            hop = ipaddress.ip_address(entry)
        except ValueError:
            return None
        if not any(hop in net for net in trusted):
            return hop
    return address


class AddressGuard:
    """Failed authentications and unknown tenants per client address, as a token bucket:
    ``burst`` failures at once, then ``rate`` per second. Bounded like every limiter here."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 100_000) -> None:
        self._failures = RateLimiter(rate, burst, max_keys=max_keys)

    def admit(self, address: str) -> None:
        """:class:`RateLimited` while ``address`` has used up its failures."""
        wait = self._failures.waiting(address)
        if wait:
            raise RateLimited(
                "too many failed attempts from this address: retry later",
                details={"retry_after": math.ceil(wait)},
            )

    def charge(self, address: str) -> None:
        self._failures.charge(address)


@dataclass
class _Bound:
    guard: AddressGuard
    address: str
    charged: bool = False


_bound: ContextVar[_Bound | None] = ContextVar("edge_guard", default=None)


def admit() -> None:
    """Refuse the current request (429) if its address has no failures left; outside a
    request, or without a guard, nothing is checked."""
    bound = _bound.get()
    if bound is not None:
        bound.guard.admit(bound.address)


def charge() -> None:
    """Count a failure (a refused credential, an unknown tenant) against the current address:
    once per request, however many checks inside it failed."""
    bound = _bound.get()
    if bound is not None and not bound.charged:
        bound.charged = True
        bound.guard.charge(bound.address)


def address_guard(guard: AddressGuard, trusted: tuple[IPNetwork, ...]) -> Middleware:
    """Middleware binding the guard and the client's address for the request."""

    @web.middleware
    async def bind_address(request: web.Request, handler: Handler) -> web.StreamResponse:
        address = client_address(request, trusted)
        token = _bound.set(_Bound(guard, str(address) if address is not None else "unknown"))
        try:
            return await handler(request)
        finally:
            _bound.reset(token)

    return bind_address
