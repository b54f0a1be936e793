"""Mutual TLS on the internal plane: certificate files, SSL contexts that follow them, and the
caller's identity read from its verified certificate.

Every internal call is TLS 1.3 with a certificate on both sides, both of the internal CA
(``shared.pki``). A certificate names its holder by a SAN URI ``spiffe://tessera/<identity>``;
that name, never a header, says who is calling.

The files are re-read when they change, without a restart: new connections get the new
certificate and trust the new CA bundle, open ones carry on. A server switches each new
connection to the newest context from its SNI callback (CPython calls it for every ClientHello,
with ``None`` when the client sent no server name, as for an IP address); a client's connector
asks for the newest context each time it opens a connection. Files are looked at most once a
second, and a half-replaced set (a certificate without its key) keeps the old context until the
set is whole again.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import ClientRequest, TCPConnector

from shared.errors import ConfigError
from shared.pki import CA_FILE, IDENTITIES, SPIFFE_PREFIX, cert_file, key_file

log = structlog.get_logger("tessera.tls")

TLS_DIR = "TESSERA_TLS_DIR"
TLS_VARIABLES = ("TESSERA_TLS_CA_FILE", "TESSERA_TLS_CERT_FILE", "TESSERA_TLS_KEY_FILE")
RELOAD_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class TlsFiles:
    """Where one holder's CA bundle, certificate and key are."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_dir(cls, directory: Path, identity: str) -> TlsFiles:
        """``identity``'s files in a ``tessera pki init`` directory."""
        return cls(
            directory / CA_FILE, cert_file(directory, identity), key_file(directory, identity)
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str], identity: str) -> TlsFiles:
        """``TESSERA_TLS_CA_FILE`` / ``_CERT_FILE`` / ``_KEY_FILE`` when set (each overrides),
        else the files of ``identity`` in ``TESSERA_TLS_DIR`` (the ``tessera pki init``
        layout). One of the two is required: the internal plane never runs in clear."""
        directory = env.get(TLS_DIR, "").strip()
        explicit = {name: env.get(name, "").strip() for name in TLS_VARIABLES}
        if not directory and not all(explicit.values()):
            missing = [name for name, value in explicit.items() if not value]
            raise ConfigError(
                f"{TLS_DIR} (or {', '.join(missing)}) is required but not set:"
                " make the internal certificates with `tessera pki init DIR`"
            )
        base = cls.from_dir(Path(directory), identity) if directory else None
        ca, cert, key = (Path(v) if v else None for v in explicit.values())
        files = cls(
            ca or (base.ca if base else Path()),
            cert or (base.cert if base else Path()),
            key or (base.key if base else Path()),
        )
        for name, path in zip((*TLS_VARIABLES,), (files.ca, files.cert, files.key), strict=True):
            if not path.is_file():
                source = name if explicit[name] else f"{TLS_DIR} ({identity})"
                raise ConfigError(f"{source}: {path} is not a readable file")
        return files

    def stamp(self) -> tuple[int, ...]:
        """Changes whenever one of the files is replaced or rewritten."""
        stamps: list[int] = []
        for path in (self.ca, self.cert, self.key):
            st = path.stat()
            stamps += [st.st_ino, st.st_mtime_ns, st.st_size]
        return tuple(stamps)


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """TLS 1.3 only; a client certificate of the CA is required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(files.cert, files.key)
    ctx.load_verify_locations(cafile=str(files.ca))
    return ctx


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """TLS 1.3 only; the server must hold a certificate of the CA. Its host name is not
    checked: internal certificates name services (SAN URIs), not the addresses they run at."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(files.ca))
    ctx.load_cert_chain(files.cert, files.key)
    return ctx


class ReloadingTls:
    """Server and client contexts for one holder, rebuilt when its files change."""

    def __init__(self, files: TlsFiles, *, check_every: float = RELOAD_CHECK_SECONDS) -> None:
        self.files = files
        self._check_every = check_every
        self._checked = 0.0
        self._stamp: tuple[int, ...] | None = None
        self._server: ssl.SSLContext | None = None
        self._client: ssl.SSLContext | None = None
        self._front: ssl.SSLContext | None = None
        self.reloads = 0

    def load(self) -> None:
        """Build both contexts now; ``ssl.SSLError`` / ``OSError`` when the files are bad."""
        stamp = self.files.stamp()
        server, client = server_context(self.files), client_context(self.files)
        self._server, self._client, self._stamp = server, client, stamp
        self._checked = time.monotonic()

    def _refresh(self) -> None:
        now = time.monotonic()
        if self._server is not None and now - self._checked < self._check_every:
            return
        self._checked = now
        first = self._server is None
        try:
            if not first and self.files.stamp() == self._stamp:
                return
            self.load()
        except (OSError, ssl.SSLError, ValueError) as exc:
            if first:
                raise
            # Mid-replacement (or a bad file): keep serving with what we have, try again later.
            log.warning("tls files not reloaded", error=f"{type(exc).__name__}: {exc}")
            return
        if not first:
            self.reloads += 1
            log.info("tls files reloaded", cert=str(self.files.cert))

    def current_server(self) -> ssl.SSLContext:
        """The newest server context, reloaded first if the files changed (checked at most every
        ``check_every`` seconds)."""
        self._refresh()
        assert self._server is not None
        return self._server

    def client(self) -> ssl.SSLContext:
        """The newest client context (for a new connection)."""
        self._refresh()
        assert self._client is not None
        return self._client

    def listener(self) -> ssl.SSLContext:
        """The context to listen with: each new connection switches to the newest one."""
        if self._front is None:
            self._refresh()
            front = self._server
            assert front is not None

            def switch(sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
                newest = self.current_server()
                if sslobj.context is not newest:
                    sslobj.context = newest

            front.sni_callback = switch
            self._front = front
        return self._front


class TesseraConnector(TCPConnector):
    """aiohttp connector presenting our certificate: each new connection takes the newest
    client context, so replaced files are used without a new session."""

    def __init__(self, tls: ReloadingTls, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._tessera_tls = tls

    def _get_ssl_context(self, req: ClientRequest) -> ssl.SSLContext | None:
        if not req.is_ssl():
            return None
        return self._tessera_tls.client()


def identity_of(peercert: Any) -> str | None:
    """The Tessera identity a verified peer certificate names (its ``spiffe://tessera/…`` SAN
    URI), or None."""
    if not isinstance(peercert, dict):
        return None
    for kind, value in peercert.get("subjectAltName", ()):
        if kind == "URI" and isinstance(value, str) and value.startswith(SPIFFE_PREFIX):
            name = value[len(SPIFFE_PREFIX) :]
            return name if name in IDENTITIES else None
    return None


def peer_identity(transport: Any) -> str | None:
    """The identity of the client on ``transport``: None on a plain connection or without a
    verified certificate (a server context with ``CERT_REQUIRED`` never gets that far)."""
    if transport is None:
        return None
    return identity_of(transport.get_extra_info("peercert"))
