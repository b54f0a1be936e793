"""aiohttp pieces every service shares: request context, JSON errors, probes, metrics, and the
mutual-TLS session the typed clients (``shared.clients``) are built on."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import ClientRequest, ClientResponse, ClientSession, ClientTimeout, web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from shared.callers import CALLERS, Callers, internal_callers
from shared.db import DATABASE_UNAVAILABLE
from shared.errors import BadRequest, TesseraError, Unavailable
from shared.jsonbody import DEFAULT_MAX_BODY_BYTES, MAX_BODY, parse_json, read_body
from shared.logging import (
    ACTOR_HEADER,
    REQUEST_ID_HEADER,
    ROUTINE_HEADER,
    accept_request_id,
    actor_var,
    bind_actor,
    bind_request_id,
    clear_actor,
    request_id_var,
)
from shared.tls import ReloadingTls, TesseraConnector

log = structlog.get_logger("tessera.http")

JSON = "application/json"

REQUESTS = Counter(
    "tessera_http_requests_total", "HTTP requests answered", ["service", "route", "status"]
)
LATENCY = Histogram(
    "tessera_http_request_seconds",
    "HTTP request latency",
    ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

ReadinessCheck = Callable[[], Awaitable[None]]
READINESS_CHECKS: web.AppKey[list[tuple[str, ReadinessCheck]]] = web.AppKey("readiness_checks")
SERVICE_NAME: web.AppKey[str] = web.AppKey("service_name", str)
# Whether X-Tessera-Actor is believed on every request of this app. Never on a public
# listener, where anyone could name any actor for the audit trail; on the internal plane the
# callers middleware (shared.callers) believes it from Tessera's own authenticated services.
ACTOR_FROM_HEADER: web.AppKey[bool] = web.AppKey("actor_from_header", bool)


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response whose Content-Type is exactly ``application/json`` (no charset)."""
    resp = web.Response(body=json.dumps(body, separators=(",", ":")).encode(), status=status)
    resp.headers["Content-Type"] = JSON
    if headers:
        resp.headers.update(headers)
    return resp


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


# An error body is read for the log line only up to this size; its message is cut to this.
_ERROR_BODY_MAX = 8192
_REASON_MAX = 300


def error_fields(response: web.StreamResponse) -> dict[str, str]:
    """Why a request failed, from the error body it was answered with (any dialect's shape):
    ``error`` (the code) and ``reason`` (the message). Bodies never hold a secret, and the log
    redaction masks anything credential-shaped all the same."""
    body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, bytes) or len(body) > _ERROR_BODY_MAX:
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    fields = {}
    # Internal {error, message}, Databricks {error_code, message}, Lagrello {message,
    # errorType}, jobmanager {detail}, Tapis {status: "error", message}.
    code = parsed.get("error") or parsed.get("error_code") or parsed.get("errorType")
    if isinstance(code, str):
        fields["error"] = code[:_REASON_MAX]
    reason = parsed.get("message") or parsed.get("detail")
    if isinstance(reason, str) and reason:
        fields["reason"] = reason[:_REASON_MAX]
    return fields


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id (the client's ``X-Request-ID`` or a new one), log and time the request.

    The request line says why a request failed (``error``, ``reason``) and who made it
    (``actor``, once known). Requests a client makes on a timer (``X-Tessera-Routine``), such
    as a subscriber's feed poll, are logged at debug when they succeed, so an idle stack is
    quiet.
    """
    sent_id = request.headers.get(REQUEST_ID_HEADER)
    request_id = accept_request_id(sent_id)
    bind_request_id(request_id)
    # A keep-alive connection serves many requests in one task: never inherit the last actor.
    clear_actor()
    trusted = request.app.get(ACTOR_FROM_HEADER, False)
    bind_actor(request.headers.get(ACTOR_HEADER) if trusted else None)
    service = request.app.get(SERVICE_NAME, "tessera")
    started = time.perf_counter()
    status = 500
    why: dict[str, str] = {}
    try:
        response = await handler(request)
        status = response.status
        if status >= 400:
            why = error_fields(response)
    except web.HTTPException as exc:
        status = exc.status
        if status >= 400:
            why = {"reason": exc.reason}
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = _route_name(request)
        REQUESTS.labels(service, route, str(status)).inc()
        LATENCY.labels(service, route).observe(elapsed)
        # Probes and scrapes are not logged (they would drown the log) unless the caller asked
        # to trace them by sending a request id, as another Tessera service does.
        if sent_id or route not in ("/healthz", "/readyz", "/metrics"):
            routine = status < 400 and ROUTINE_HEADER in request.headers
            # The path only: query strings may carry credentials (jobmanager revoke does).
            (log.debug if routine else log.info)(
                "request",
                method=request.method,
                path=request.path,
                status=status,
                ms=round(elapsed * 1000, 2),
                **why,
            )
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Internal services' error shape: ``{"error": code, "message": text}``, never a traceback."""
    try:
        return await handler(request)
    except TesseraError as exc:
        headers = None
        if isinstance(exc, Unavailable):
            headers = {"Retry-After": str(exc.retry_after)}
        elif exc.status == 429:
            headers = {"Retry-After": str(exc.details.get("retry_after", 1))}
        return json_response(exc.to_json(), exc.status, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response({"error": "http_error", "message": exc.reason}, exc.status)
    except DATABASE_UNAVAILABLE as exc:  # no primary answers (issue 18): 503, Retry-After
        log.warning("dependency unavailable", error=type(exc).__name__)
        return json_response(
            {"error": "unavailable", "message": "a dependency is unavailable"},
            503,
            {"Retry-After": "1"},
        )
    except Exception:
        log.exception("unhandled error")
        return json_response({"error": "internal", "message": "internal error"}, 500)


def storable_text(value: Any) -> bool:
    """True when every string in a parsed JSON value can be stored in PostgreSQL text: valid
    UTF-8 (no lone surrogates, which JSON escapes allow) and no NUL character."""
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(storable_text(k) and storable_text(v) for k, v in value.items())
    if isinstance(value, list):
        return all(storable_text(v) for v in value)
    return True


async def read_json_object(request: web.Request, *, max_bytes: int | None = None) -> dict[str, Any]:
    """The whole request body as a JSON object (the service's size limit by default, depth
    bounded), or :class:`BadRequest` / :class:`PayloadTooLarge`."""
    body = parse_json(await read_body(request, max_bytes))
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    if not storable_text(body):
        raise BadRequest("strings must be valid Unicode without NUL characters")
    return body


# --- probes and metrics -------------------------------------------------------------------


async def healthz(_request: web.Request) -> web.Response:
    """200 while the process serves requests (liveness: no dependency is checked)."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when every dependency answers; 503 naming the ones that do not."""
    failing: dict[str, str] = {}
    for name, check in request.app.get(READINESS_CHECKS, []):
        try:
            await check()
        except Exception as exc:
            failing[name] = type(exc).__name__
    if failing:
        return json_response({"status": "unavailable", "failing": failing}, 503)
    return json_response({"status": "ok"})


async def metrics(_request: web.Request) -> web.Response:
    """The process's Prometheus metrics, in the text exposition format."""
    resp = web.Response(body=generate_latest())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def ops_app(app: web.Application) -> web.Application:
    """The ops listener's application for ``app``: ``/healthz``, ``/readyz`` (``app``'s
    readiness checks, as its start-up adds them) and ``/metrics``, and nothing else. It is
    served in clear on its own port, so probes and scrapes need no certificate and never reach
    the API."""
    ops = web.Application(middlewares=[request_context, json_errors], client_max_size=1024)
    ops[SERVICE_NAME] = app[SERVICE_NAME]
    ops[READINESS_CHECKS] = app[READINESS_CHECKS]  # the same list: filled as app starts
    ops.router.add_get("/healthz", healthz)
    ops.router.add_get("/readyz", readyz)
    ops.router.add_get("/metrics", metrics)
    return ops


def base_app(
    service: str,
    *,
    middlewares: list[Any] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    callers: Callers | None = None,
) -> web.Application:
    """An API application with the request-context middleware and the given middlewares (the
    internal JSON error one by default); bodies (forms too) are refused past
    ``max_body_bytes``. Probes and metrics are on its ops listener (:func:`ops_app`).

    With ``callers`` (an internal service's table, see ``shared.callers``) it is an app of
    the internal plane: served over mutual TLS only, each route to the callers named."""
    chain = [request_context, *(middlewares or [json_errors])]
    if callers is not None:
        chain.append(internal_callers)
    app = web.Application(middlewares=chain, client_max_size=max_body_bytes)
    if callers is not None:
        app[CALLERS] = callers
    app[MAX_BODY] = max_body_bytes
    app[SERVICE_NAME] = service
    app[READINESS_CHECKS] = []
    return app


# --- internal HTTP clients ----------------------------------------------------------------


async def _propagate_request_id(
    request: ClientRequest, handler: Callable[[ClientRequest], Awaitable[ClientResponse]]
) -> ClientResponse:
    request_id = request_id_var.get()
    if request_id and REQUEST_ID_HEADER not in request.headers:
        request.headers[REQUEST_ID_HEADER] = request_id
    actor = actor_var.get()
    if actor and ACTOR_HEADER not in request.headers:
        request.headers[ACTOR_HEADER] = actor
    return await handler(request)


def internal_session(
    tls: ReloadingTls, *, timeout: float = 10.0, **connector: Any
) -> ClientSession:
    """A keep-alive mutual-TLS client for calls to other Tessera services, presenting the
    holder's certificate (the newest one, for each new connection); it passes the request id
    (and the actor) on."""
    return ClientSession(
        connector=TesseraConnector(tls, **connector),
        timeout=ClientTimeout(total=timeout),
        middlewares=(_propagate_request_id,),
        raise_for_status=False,
    )
