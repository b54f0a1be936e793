"""Configuration read from the environment into frozen objects.

A missing or malformed variable raises :class:`ConfigError` whose message names the variable,
so start-up can stop with one clear line. Secrets are kept out of ``repr`` and never logged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from shared.errors import ConfigError as ConfigError

if TYPE_CHECKING:
    from shared.tls import TlsFiles

SERVICES = ("gateway", "issuer", "revocation", "keys")
DEFAULT_PORTS = {"gateway": 8080, "issuer": 8081, "revocation": 8082, "keys": 8083}
# The ops listeners (/healthz, /readyz, /metrics in clear): TESSERA_<SERVICE>_OPS_PORT.
DEFAULT_OPS_PORTS = {"gateway": 9080, "issuer": 9081, "revocation": 9082, "keys": 9083}
# Services whose API listener is on the internal plane (mutual TLS); the gateway's is public.
INTERNAL_SERVICES = ("issuer", "revocation", "keys")
DATABASE_SERVICES = ("keys", "issuer", "revocation")

Env = Mapping[str, str]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def require(env: Env, name: str) -> str:
    """``name``'s value, stripped; :class:`ConfigError` when unset or blank."""
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is required but not set")
    return value


def get_str(env: Env, name: str, default: str) -> str:
    """``name``'s value, stripped, or ``default`` when unset or blank."""
    return env.get(name, "").strip() or default


def get_int(env: Env, name: str, default: int, *, minimum: int | None = None) -> int:
    """``name`` as an integer (``default`` when unset); :class:`ConfigError` when it is not one
    or is below ``minimum``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def get_float(env: Env, name: str, default: float, *, minimum: float = 0.0) -> float:
    """``name`` as a number (``default`` when unset); :class:`ConfigError` when it is not one or
    is below ``minimum``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def get_networks(env: Env, name: str, default: str) -> tuple[IPNetwork, ...]:
    """``name`` (else ``default``) as comma-separated CIDRs; host bits are allowed and masked."""
    raw = env.get(name, "").strip() or default
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in raw.split(",")
            if part.strip()
        )
    except ValueError as exc:
        raise ConfigError(f"{name} must be a comma-separated list of CIDRs: {exc}") from None


def get_secret(env: Env, name: str, *, required: bool = True) -> str:
    """Read a secret from ``NAME`` or from the file named by ``NAME_FILE`` (a mounted secret)."""
    value = env.get(name, "").strip()
    file_name = env.get(f"{name}_FILE", "").strip()
    if value and file_name:
        raise ConfigError(f"set only one of {name} and {name}_FILE")
    if file_name:
        try:
            value = Path(file_name).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE cannot be read: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{name}_FILE names an empty file")
    if required and not value:
        raise ConfigError(f"{name} (or {name}_FILE) is required but not set")
    return value


def _check_url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        # The value itself is not repeated: a URL may hold a password.
        allowed = " or ".join(f"{scheme}://" for scheme in schemes)
        got = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise ConfigError(f"{name} must be an {allowed} URL with a host, got {got}")
    return value


def get_amqp_url(env: Env) -> str:
    """``TESSERA_AMQP_URL``, checked: one ``amqp://`` or ``amqps://`` URL with a host, or several
    separated by commas (the nodes of one cluster). Returned with the URLs joined by commas."""
    raw = require(env, "TESSERA_AMQP_URL")
    nodes = [part.strip() for part in raw.split(",") if part.strip()]
    if not nodes:
        raise ConfigError("TESSERA_AMQP_URL is required but not set")
    for node in nodes:
        _check_url("TESSERA_AMQP_URL", node, ("amqp", "amqps"))
    return ",".join(nodes)


def get_tenant_cache_seconds(env: Env) -> float:
    """``TESSERA_TENANT_CACHE_SECONDS`` (default 10): how long the issuer and the gateway keep a
    tenant's settings read from the keys service."""
    return get_float(env, "TESSERA_TENANT_CACHE_SECONDS", 10.0)


LOG_LEVELS = ("debug", "info", "warning", "error")


def get_log_level(env: Env) -> str:
    """``TESSERA_LOG_LEVEL``: one of :data:`LOG_LEVELS` (default ``info``)."""
    level = get_str(env, "TESSERA_LOG_LEVEL", "info").lower()
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"TESSERA_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}"
        )
    return level


def service_database_url(env: Env, service: str) -> str:
    """The database URL of one service: its own override, else the server URL with its db name.

    ``TESSERA_DATABASE_URL`` names the server; each service uses the database
    ``<TESSERA_DATABASE_PREFIX>_<service>`` on it (``tessera_keys`` by default), unless
    ``TESSERA_<SERVICE>_DATABASE_URL`` (or ``…_FILE``) names another one, usually as the
    service's own role (``tessera migrate --admin-url`` provisions it).
    """
    own = f"TESSERA_{service.upper()}_DATABASE_URL"
    # Its own URL names its own role and may carry that role's password: a mounted file too.
    own_url = get_secret(env, own, required=False)
    if own_url:
        return _check_url(own, own_url, ("postgresql", "postgres"))
    base = _check_url(
        "TESSERA_DATABASE_URL", require(env, "TESSERA_DATABASE_URL"), ("postgresql", "postgres")
    )
    prefix = get_str(env, "TESSERA_DATABASE_PREFIX", "tessera")
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{prefix}_{service}"))


def service_url(env: Env, service: str) -> str:
    """Where another service's API is: ``TESSERA_<SERVICE>_URL``, an ``https://`` URL for the
    internal services (they speak only mutual TLS)."""
    name = f"TESSERA_{service.upper()}_URL"
    scheme = "https" if service in INTERNAL_SERVICES else "http"
    default = f"{scheme}://127.0.0.1:{DEFAULT_PORTS[service]}"
    schemes = ("https",) if service in INTERNAL_SERVICES else ("http", "https")
    return _check_url(name, get_str(env, name, default), schemes).rstrip("/")


@dataclass(frozen=True)
class AmqpNames:
    """Names on the broker; tests give each session its own so runs never see each other."""

    exchange: str = "tessera.events"
    dead_letter_exchange: str = "tessera.dlx"
    queue_prefix: str = ""
    # Test and benchmark runs only: durable queues delete themselves once unused this long, so
    # a run that dies before its clean-up leaves nothing behind on a developer's broker (each
    # quorum queue holds file handles; a few hundred leaked ones stop RabbitMQ accepting
    # connections). Never in production: a queue that expires loses the events it held.
    queue_expires_seconds: int | None = None

    @property
    def dead_letter_queue(self) -> str:
        """The durable queue the dead-letter exchange delivers to."""
        return self.durable_queue("tessera.dead-letter")

    def durable_queue(self, consumer: str) -> str:
        """A durable (quorum) queue's name. The ``.quorum`` suffix is new with quorum queues
        (issue 18): RabbitMQ refuses to redeclare an existing classic queue as a quorum queue,
        so upgraded services declare new queues beside the old classic ones and adopt those
        (docs/clusters.md, "Upgrading from classic queues")."""
        return f"{self.queue_prefix}{consumer}.quorum"

    def durable_arguments(self) -> dict[str, Any]:
        """Arguments of every durable queue: a quorum queue (replicated over the cluster's
        nodes), expiring only when ``queue_expires_seconds`` is set."""
        arguments: dict[str, Any] = {"x-queue-type": "quorum"}
        if self.queue_expires_seconds:
            arguments["x-expires"] = self.queue_expires_seconds * 1000
        return arguments

    def queue(self, consumer: str) -> str:
        """A transient queue's name (a subscriber's own), and the name of a consumer's classic
        queue before quorum queues."""
        return f"{self.queue_prefix}{consumer}"

    @classmethod
    def from_env(cls, env: Env) -> AmqpNames:
        """``TESSERA_AMQP_EXCHANGE`` / ``_DLX`` / ``_QUEUE_PREFIX`` / ``_QUEUE_EXPIRES_SECONDS``
        (0 or unset: queues never expire), with the class defaults."""
        return cls(
            exchange=get_str(env, "TESSERA_AMQP_EXCHANGE", cls.exchange),
            dead_letter_exchange=get_str(env, "TESSERA_AMQP_DLX", cls.dead_letter_exchange),
            queue_prefix=env.get("TESSERA_AMQP_QUEUE_PREFIX", "").strip(),
            queue_expires_seconds=get_int(env, "TESSERA_AMQP_QUEUE_EXPIRES_SECONDS", 0) or None,
        )


@dataclass(frozen=True)
class ServerLimits:
    """What one service process accepts from its clients (issue 14: the edge refuses early)."""

    # Largest request body read; larger → 413 in the caller's shape.
    max_body_bytes: int = 1024 * 1024
    # A connection must deliver a whole request head this soon after it opens (or after its
    # first byte, on a kept-alive connection); else it is closed. 0: no deadline.
    head_timeout: float = 10.0
    # An idle kept-alive connection is closed after this long.
    keepalive_timeout: float = 75.0
    # Open connections per process; one more is answered 503 and closed. Lowered at start-up
    # to what the file-descriptor limit allows. 0: no cap (besides that limit).
    max_connections: int = 10_000

    @classmethod
    def from_env(cls, env: Env) -> ServerLimits:
        """``TESSERA_MAX_BODY_BYTES`` (at least 1024), ``_HEAD_TIMEOUT``, ``_KEEPALIVE_TIMEOUT`` and
        ``_MAX_CONNECTIONS``, with the class defaults."""
        return cls(
            max_body_bytes=get_int(env, "TESSERA_MAX_BODY_BYTES", cls.max_body_bytes, minimum=1024),
            head_timeout=get_float(env, "TESSERA_HEAD_TIMEOUT", cls.head_timeout),
            keepalive_timeout=get_float(env, "TESSERA_KEEPALIVE_TIMEOUT", cls.keepalive_timeout),
            max_connections=get_int(env, "TESSERA_MAX_CONNECTIONS", cls.max_connections, minimum=0),
        )


@dataclass(frozen=True)
class CommonSettings:
    """What every service needs: where it listens and how it reaches PostgreSQL and RabbitMQ."""

    service: str
    host: str
    port: int
    amqp_url: str = field(repr=False)
    # The service's certificate, key and trusted CAs on the internal plane (shared.tls).
    tls: TlsFiles
    amqp: AmqpNames
    database_url: str | None = field(repr=False)
    log_level: str = "info"
    version: str = "dev"
    limits: ServerLimits = field(default_factory=ServerLimits)
    ops_port: int = 0

    @classmethod
    def from_env(cls, env: Env, service: str) -> CommonSettings:
        """``service``'s settings; :class:`ConfigError` naming the first variable missing or
        malformed."""
        from shared.tls import TlsFiles

        port_name = f"TESSERA_{service.upper()}_PORT"
        ops_name = f"TESSERA_{service.upper()}_OPS_PORT"
        return cls(
            service=service,
            # Loopback unless told otherwise: containers set 0.0.0.0 explicitly.
            host=get_str(env, "TESSERA_HOST", "127.0.0.1"),
            port=get_int(env, port_name, DEFAULT_PORTS[service], minimum=0),
            ops_port=get_int(env, ops_name, DEFAULT_OPS_PORTS[service], minimum=0),
            tls=TlsFiles.from_env(env, service),
            amqp_url=get_amqp_url(env),
            amqp=AmqpNames.from_env(env),
            database_url=(
                service_database_url(env, service) if service in DATABASE_SERVICES else None
            ),
            log_level=get_log_level(env),
            version=get_str(env, "TESSERA_VERSION", "dev"),
            limits=ServerLimits.from_env(env),
        )
