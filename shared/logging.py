"""Structured JSON logging with a request id, and redaction of anything secret.

Configured once per process by :func:`configure_logging`. Every line carries the service name
and, inside a request or an event handler, the request id bound by the middleware.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

REQUEST_ID_HEADER = "X-Request-ID"
ACTOR_HEADER = "X-Tessera-Actor"
# Sent by a client on requests it makes on a timer (a subscriber's feed poll): their request
# lines are logged at debug, so a stack doing nothing logs nothing.
ROUTINE_HEADER = "X-Tessera-Routine"
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
# Who asked for the current operation (``subject@tenant``), for the audit trail; the gateway
# binds it after authenticating, internal calls carry it in ACTOR_HEADER.
actor_var: ContextVar[str | None] = ContextVar("actor", default=None)

# Keys whose values are never written, whatever they hold.
_SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|authorization|private|kek|pepper|credential|cookie)",
    re.IGNORECASE,
)
# Values that look like credentials are masked even under an innocent key: a JWT, a Databricks
# token, a Tessera opaque token, a PEM block.
_SECRET_VALUE = re.compile(
    r"(eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
    r"|dapi[0-9a-f]{32}"
    r"|tsr_[A-Za-z0-9]{40,}"
    r"|-----BEGIN [A-Z ]+-----[^-]*-----END [A-Z ]+-----)"
)
# Keys that look secret but carry only identifiers; listed so they stay readable.
_SAFE_KEYS = frozenset({"token_id", "token_kind", "token_type", "tokens", "event"})
REDACTED = "[redacted]"


def mask_secrets(value: Any) -> Any:
    """``value`` with credential-shaped strings masked and secret-named keys emptied, at any
    depth: for text that leaves the process other than through a log line (an error message
    passed on from another service)."""
    return _redact_value(value)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    if isinstance(value, dict):
        return {k: _redact_item(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def _redact_item(key: str, value: Any) -> Any:
    if key not in _SAFE_KEYS and _SECRET_KEY.search(key) and value not in (None, "", [], {}):
        return REDACTED
    return _redact_value(value)


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secret keys and credential-shaped values, exceptions included."""
    return {key: _redact_item(key, value) for key, value in event_dict.items()}


def configure_logging(service: str, level: str = "info") -> None:
    """Configure structlog (and stdlib logging through it) to write JSON lines to stdout."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            redact,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )
    # Libraries log through stdlib; route them through the same redaction and JSON rendering.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
    # aiohttp's access log prints query strings, and a jobmanager revoke carries its token
    # there; our own middleware logs each request without the query instead.
    logging.getLogger("aiohttp.access").disabled = True
    # During a broker outage aio-pika and aiormq log every reconnection attempt, several lines
    # each, some with tracebacks. Tessera logs the connection's state itself (one "broker
    # connection lost" warning, one "broker reconnected" line, see shared.bus.amqp), so their
    # lines are kept for debugging only.
    for library in ("aio_pika", "aiormq"):
        logging.getLogger(library).setLevel(
            logging.NOTSET if level.lower() == "debug" else logging.CRITICAL
        )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def new_request_id() -> str:
    """A fresh random request id (32 hex characters)."""
    return uuid.uuid4().hex


_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def accept_request_id(value: str | None) -> str:
    """A client's request id if it is printable and short, else a new one (no log injection)."""
    if value and _REQUEST_ID_OK.match(value):
        return value
    return new_request_id()


def bind_request_id(request_id: str) -> None:
    """Make ``request_id`` the current one: in every log line, and passed on in outgoing calls
    and events."""
    request_id_var.set(request_id)
    structlog.contextvars.bind_contextvars(request_id=request_id)


def bind_actor(actor: str | None) -> None:
    """Record who is acting in this request (never a credential: a ``subject@tenant`` name)."""
    if actor and len(actor) <= 512 and actor.isprintable():
        actor_var.set(actor)
        structlog.contextvars.bind_contextvars(actor=actor)


def clear_actor() -> None:
    """Forget the actor bound by an earlier request handled in the same task."""
    actor_var.set(None)
    structlog.contextvars.unbind_contextvars("actor")


def get_logger(name: str | None = None) -> Any:
    """A structlog logger: its lines carry the bound service, request id and actor."""
    return structlog.get_logger(name)
