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
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class BadRequest(TesseraError):
    code = "bad_request"
    status = 400


class Unauthenticated(TesseraError):
    code = "unauthenticated"
    status = 401


class Forbidden(TesseraError):
    code = "forbidden"
    status = 403


class NotFound(TesseraError):
    code = "not_found"
    status = 404


class Conflict(TesseraError):
    code = "conflict"
    status = 409


class PayloadTooLarge(TesseraError):
    code = "payload_too_large"
    status = 413


class QuotaExceeded(TesseraError):
    code = "quota_exceeded"
    status = 409


class RateLimited(TesseraError):
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
