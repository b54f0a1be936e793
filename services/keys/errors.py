"""Errors of the keys service."""

from shared.errors import BadRequest, Conflict, NotFound, RateLimited


class UnknownTenant(NotFound):
    code = "unknown_tenant"


class UnknownKid(NotFound):
    code = "unknown_kid"


class TenantExists(Conflict):
    code = "conflict"


class InvalidClaims(BadRequest):
    code = "invalid_claims"


class RotationPending(Conflict):
    code = "rotation_pending"


class RotationLimited(RateLimited):
    """More rotations of one tenant in an hour than TESSERA_KEY_ROTATIONS_PER_HOUR."""

    code = "rotation_limited"


class TooManyKeys(Conflict):
    """A rotation would publish more keys than TESSERA_MAX_PUBLISHED_KEYS."""

    code = "too_many_keys"
