"""The exception every service raises for an expected failure, and the internal JSON error shape.

Internal services answer errors as ``{"error": code, "message": text}``. The gateway renders
the same exceptions in each public dialect's own shape (see ``services/gateway``).
"""

from __future__ import annotations

from typing import Any


class TesseraError(Exception):
    """An expected failure with a stable machine-readable ``code`` and an HTTP ``status``."""

    code = "internal"
    status = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        """The internal error shape, ``{"error": code, "message": text}``, plus any ``details``."""
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class BadRequest(TesseraError):
    """The request is malformed or asks for something invalid (400)."""

    code = "bad_request"
    status = 400


class Unauthenticated(TesseraError):
    """No credential, or one that does not authenticate (401)."""

    code = "unauthenticated"
    status = 401


class Forbidden(TesseraError):
    """The caller may not do this (403)."""

    code = "forbidden"
    status = 403


class NotFound(TesseraError):
    """What was named does not exist: no such tenant, token, key or route (404)."""

    code = "not_found"
    status = 404


class Conflict(TesseraError):
    """The request clashes with the current state, e.g. it exists already (409)."""

    code = "conflict"
    status = 409


class PayloadTooLarge(TesseraError):
    """The request body is over the service's limit (413)."""

    code = "payload_too_large"
    status = 413


class QuotaExceeded(TesseraError):
    """The owner holds as many tokens as the tenant's quota allows (409, per the internal API)."""

    code = "quota_exceeded"
    status = 409


class RateLimited(TesseraError):
    """Too many requests for now (a caller's rate, a tenant's rotations); retry later (429)."""

    code = "rate_limited"
    status = 429


class Unavailable(TesseraError):
    """A dependency (database, broker, another service) cannot be reached right now."""

    code = "unavailable"
    status = 503

    def __init__(self, message: str, *, retry_after: int = 1, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ConfigError(Exception):
    """A configuration variable is missing or malformed; the message names it. Start-up stops
    with that message (never the value: it may be a secret)."""
