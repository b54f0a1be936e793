"""Errors in each public dialect's own shape, chosen by the request path.

Handlers raise :class:`DialectError` (or let a backend's :class:`TesseraError` through); the
middleware renders it as Tapis, jobmanager, Lagrello, Databricks or Tessera's own shape, with
the statuses each dialect's clients expect (CONTRACTS.md). Bad input is never a 500, and an
unexpected fault is a dialect-shaped 500 with a generic message.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from shared.errors import RateLimited, TesseraError, Unavailable
from shared.http import json_response

log = structlog.get_logger("tessera.gateway")

LAGRELLO_TYPES = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "NotFound",  # Lagrello's clients know BadRequest, Forbidden and NotFound only
    413: "BadRequest",
    429: "TooManyRequests",
}
DATABRICKS_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "ENDPOINT_NOT_FOUND",
    409: "RESOURCE_ALREADY_EXISTS",
    413: "INVALID_PARAMETER_VALUE",
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}
VERSION: web.AppKey[str] = web.AppKey("version", str)
# The dialect of the request being answered, for metrics labelled by dialect.
current_dialect: ContextVar[str] = ContextVar("dialect", default="tessera")


class DialectError(Exception):
    """A failure to answer in the caller's dialect: status, message and an optional code."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.body = body
        self.headers = headers


def dialect_of(path: str) -> str:
    if path.startswith("/v3/"):
        return "tapis"
    if path == "/v1/api_access_token" or path.startswith("/v1/api_access_token/"):
        return "jobmanager"
    if path == "/v1/tokens" or path.startswith("/v1/tokens/"):
        return "lagrello"
    if path.startswith("/api/2.0/") or path == "/.well-known/databricks-config":
        return "databricks"
    return "tessera"


def tapis_envelope(result: Any, message: str, version: str, *, ok: bool = True) -> dict[str, Any]:
    return {
        "result": result,
        "status": "success" if ok else "error",
        "message": message,
        "version": version,
        "metadata": {},
    }


def render(
    request: web.Request,
    status: int,
    message: str,
    code: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    dialect = dialect_of(request.path)
    headers = dict(headers or {})
    if status in (429, 503):
        headers.setdefault("Retry-After", "1")
    if body is not None:
        return json_response(body, status, headers)
    if dialect == "tapis":
        if status < 500 and status not in (405, 429):
            status = 400  # the real Tapis answers every client error with 400
        payload = tapis_envelope(None, message, request.app[VERSION], ok=False)
    elif dialect == "jobmanager":
        payload = {"detail": message}
    elif dialect == "lagrello":
        payload = {"message": message, "errorType": code or LAGRELLO_TYPES.get(status, "Error")}
    elif dialect == "databricks":
        payload = {
            "error_code": code or DATABRICKS_CODES.get(status, "INTERNAL_ERROR"),
            "message": message,
        }
    else:
        payload = {"error": code or "error", "message": message}
    return json_response(payload, status, headers)


def _route_missing(request: web.Request, exc: web.HTTPException) -> web.Response:
    dialect = dialect_of(request.path)
    # RFC 9110: a 405 names the methods the resource does allow (none, for a missing route).
    allowed: set[str] = getattr(exc, "allowed_methods", set())
    allow = {"Allow": ", ".join(sorted(allowed))}
    if dialect == "tapis":
        message = "The endpoint does not exist or the method is not allowed."
        return render(request, 405, message, headers=allow)
    status = exc.status
    if dialect == "tessera" and status == 404:
        return json_response({"detail": "Not Found"}, 404)
    if status == 405:
        return render(request, 405, "Method Not Allowed", headers=allow)
    if dialect == "databricks":
        return render(
            request,
            404,
            f"{request.path} is not served here: Tessera serves only the Databricks Token API "
            "2.0 (/api/2.0/token/create, /api/2.0/token/list, /api/2.0/token/delete)",
            "ENDPOINT_NOT_FOUND",
        )
    return render(request, 404, "Not Found")


@web.middleware
async def dialect_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    current_dialect.set(dialect_of(request.path))
    try:
        return await handler(request)
    except DialectError as exc:
        return render(request, exc.status, exc.message, exc.code, exc.body, exc.headers)
    except Unavailable as exc:
        return render(request, 503, exc.message)
    except RateLimited as exc:
        retry = str(exc.details.get("retry_after", 1))
        return render(request, 429, exc.message, headers={"Retry-After": retry})
    except TesseraError as exc:
        if exc.status == 429:
            # A backend's limit (a keys-service rotation limit): its Retry-After passes on.
            retry = str(exc.details.get("retry_after", 1))
            return render(request, 429, exc.message, headers={"Retry-After": retry})
        # A quota is a client error in every dialect (Databricks maps its own code above).
        status = 400 if exc.code == "quota_exceeded" else exc.status
        return render(request, status, exc.message)
    except web.HTTPException as exc:
        if exc.status in (404, 405):
            return _route_missing(request, exc)
        if exc.status == 413:
            return render(
                request,
                413 if dialect_of(request.path) != "tapis" else 400,
                "request body too large",
            )
        if exc.status < 400:
            raise
        return render(request, exc.status, exc.reason)
    except Exception:
        log.exception("unhandled error")
        return render(request, 500, "internal error")
