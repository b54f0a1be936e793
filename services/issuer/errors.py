"""Errors of the issuer service."""

from shared.errors import NotFound, QuotaExceeded, Unauthenticated


class UnknownTenant(NotFound):
    code = "unknown_tenant"


class UnknownToken(NotFound):
    code = "unknown_token"


class QuotaReached(QuotaExceeded):
    code = "quota_exceeded"


class InvalidCredential(Unauthenticated):
    """Malformed, unknown, expired or revoked: deliberately one answer for all of them."""

    code = "unauthenticated"
