"""Test clients and servers of the internal plane (mutual TLS), with the session's PKI.

Tests about behaviour call internal endpoints through :func:`allowed_session`, which presents,
for each request, the certificate of a caller the endpoint's table allows (the operator when it
may, else the first of the table). Tests about who may call use :func:`caller_session` with one
identity, or no certificate at all.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.issuer.handlers import CALLERS as ISSUER_CALLERS
from services.keys.handlers import CALLERS as KEYS_CALLERS
from services.revocation.handlers import CALLERS as REVOCATION_CALLERS
from shared.callers import CALLERS
from shared.http import ops_app
from shared.pki import IDENTITIES, OPERATOR
from shared.service import TLS
from shared.tls import ReloadingTls, TesseraConnector, TlsFiles

TABLES = (ISSUER_CALLERS, KEYS_CALLERS, REVOCATION_CALLERS)
# Preferred caller when a table allows several: the operator, then the services.
PREFERENCE = (OPERATOR, "gateway", "issuer", "revocation", "keys")


def _pattern(route: str) -> tuple[str, re.Pattern[str]]:
    method, path = route.split(" ", 1)
    return method, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")


ROUTES = [
    (*_pattern(route), sorted(callers, key=PREFERENCE.index))
    for table in TABLES
    for route, callers in table.items()
]


def allowed_caller(method: str, path: str) -> str:
    """A caller the tables allow for ``method path`` (the operator for unknown paths)."""
    for route_method, pattern, callers in ROUTES:
        if route_method == method.upper() and pattern.match(path):
            return callers[0]
    return OPERATOR


def tls_for(env: Mapping[str, str], identity: str) -> ReloadingTls:
    return ReloadingTls(TlsFiles.from_env(env, identity), check_every=0)


def caller_session(env: Mapping[str, str], identity: str, **kwargs: Any) -> aiohttp.ClientSession:
    """A session presenting ``identity``'s certificate of the PKI in ``env``."""
    return aiohttp.ClientSession(connector=TesseraConnector(tls_for(env, identity)), **kwargs)


class AllowedCallerSession:
    """A :class:`aiohttp.ClientSession` that presents, for each request, the certificate of a
    caller the endpoint serves (a wrapper: aiohttp discourages subclassing its session)."""

    def __init__(self, env: Mapping[str, str], **kwargs: Any) -> None:
        self._session = aiohttp.ClientSession(**kwargs)
        self._contexts = {i: tls_for(env, i) for i in IDENTITIES}

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        if urlsplit(str(url)).scheme == "https" and "ssl" not in kwargs:
            identity = allowed_caller(method, urlsplit(str(url)).path)
            kwargs["ssl"] = self._contexts[identity].client()
        return self._session.request(method, url, **kwargs)

    def get(self, url: Any, **kwargs: Any) -> Any:
        return self.request("GET", url, **kwargs)

    def post(self, url: Any, **kwargs: Any) -> Any:
        return self.request("POST", url, **kwargs)

    def put(self, url: Any, **kwargs: Any) -> Any:
        return self.request("PUT", url, **kwargs)

    def delete(self, url: Any, **kwargs: Any) -> Any:
        return self.request("DELETE", url, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    async def __aenter__(self) -> aiohttp.ClientSession:
        return cast(aiohttp.ClientSession, self)

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()


def allowed_session(env: Mapping[str, str], **kwargs: Any) -> AllowedCallerSession:
    return AllowedCallerSession(env, **kwargs)


async def serve(app: web.Application, *, port: int | None = None) -> TestServer:
    """Start ``app`` on 127.0.0.1 as ``tessera serve`` would: mutual TLS for an internal
    service (one holding a TLS key), clear for others."""
    server = TestServer(app, port=port)
    await server.start_server(ssl=app[TLS].listener() if CALLERS in app else None)
    return server


async def serve_ops(app: web.Application) -> TestServer:
    """``app``'s ops listener (/healthz, /readyz, /metrics), in clear."""
    server = TestServer(ops_app(app))
    await server.start_server()
    return server


# The session's PKI (the ``pki_dir`` fixture registers it), for helpers that get only a URL.
_SESSION_PKI: list[Path] = []


def register_pki(directory: Path) -> None:
    _SESSION_PKI[:] = [directory]


def identity_context(identity: str) -> ssl.SSLContext:
    """The client context of ``identity`` in the session's PKI."""
    assert _SESSION_PKI, "no session PKI registered (the pki_dir fixture)"
    return ReloadingTls(TlsFiles.from_dir(_SESSION_PKI[0], identity)).client()


def https_context(method: str, url: str) -> ssl.SSLContext | None:
    """For an ``https://`` URL of the session's stacks: the client context of a caller the
    endpoint serves; None for a plain URL."""
    if urlsplit(url).scheme != "https":
        return None
    assert _SESSION_PKI, "no session PKI registered (the pki_dir fixture)"
    identity = allowed_caller(method, urlsplit(url).path)
    return ReloadingTls(TlsFiles.from_dir(_SESSION_PKI[0], identity)).client()
